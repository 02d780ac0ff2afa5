"""Releases of N trivial targets, and K releases of different projects at once.

    python -m bench.scale --targets 32 --releases 1
    python -m bench.scale --targets 4 --releases 8
    python -m bench.scale --matrix                  # N = 1, 4, 16, 32 and K = 1, 4, 8
    python -m bench.scale --replicated --matrix     # the same on PostgreSQL + Redis + 2 API replicas
    python -m bench.scale --cases 8x1,32x1 --baseline e1593a5   # against an older dropship, same server
    python -m bench.scale --cases 16x1,32x1 --prefect-floor     # against bare Prefect, same server

Each project is a generated git repository whose N targets each build one
tiny .deb with dpkg-deb (no compiler), on local machines (sshd + a Prefect
worker each), signed and published into a local folder. Each release runs as
`dropship release` in its own process, as a team's orchestrator would.

The server: the one in $PREFECT_API_URL when set (give --server-pid to count
its CPU), else the embedded SQLite one (`dropship server start`), or with
--replicated a PostgreSQL 15 + redis-server + `dropship server start
--database … --redis … --api-replicas 2` started in a temporary folder.

Per case it prints: release wall (slowest release), CPU of the release
processes per target and of the server per target (from /proc), API errors
(5xx/429 answers nginx gave clients, errors the server logged, errors a
release printed) and published/failed. Exit 0 only if every release published.
With --baseline REV each case runs first with the dropship of REV (a git
worktree on the release processes' PYTHONPATH, so their machines' workers
import it too), then with this one, on the same server, and prints the
ratio of wall and of CPU per target. With --prefect-floor each case's targets
also run as bare Prefect deployment runs, a worker each (bench/prefect_floor.py),
and the ratio of dropship's CPU per target to that floor is printed.
Figures on a shared 2-core machine are noisy: compare cases of one run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dropship.demo import GIT_IDENTITY
from dropship.orchestrator import apply_client_retry_env

apply_client_retry_env()  # before anything imports Prefect

TICKS = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent

BUILD_SH = """#!/bin/sh
# One tiny package per target: build.sh PACKAGE
set -eu
version=${DROPSHIP_VERSION:?}
root=build/deb
rm -rf build out
mkdir -p "$root/DEBIAN" "$root/usr/share/doc/$1" out
echo "$1 $version" > "$root/usr/share/doc/$1/README"
cat > "$root/DEBIAN/control" <<CONTROL
Package: $1
Version: $version
Architecture: amd64
Maintainer: bench <bench@example.invalid>
Description: dropship scale benchmark package
CONTROL
dpkg-deb --root-owner-group -Zgzip --build "$root" "out/$1_${version}_amd64.deb" >/dev/null
"""


def write_project(folder: Path, name: str, targets: int, tag: str) -> Path:
    """A git repository tagged `tag` whose manifest has `targets` one-package targets."""
    folder.mkdir(parents=True)
    (folder / "build.sh").write_text(BUILD_SH)
    lines = [
        f'[project]\nname = "{name}"\nsource = "."\n',
        '[defaults]\nsize = "s-1vcpu-1gb"\nimage = "debian-12-x64"\nregion = "nyc1"\n',
    ]
    for i in range(targets):
        package = f"{name}-t{i:02d}"
        lines.append(
            f'[[targets]]\nname = "t{i:02d}"\narch = "amd64"\nformat = "deb"\n'
            f'build = ["sh", "build.sh", "{package}"]\nartifacts = ["out/*.deb"]\n'
        )
    lines.append(
        f'[repository]\norigin = "{name}"\nlabel = "{name}"\ncomponent = "main"\nkey_name = "{name}-release"\n'
    )
    lines.append(f'[blocks]\nsigning_key = "{name}-signing-key"\nrepo_server = "{name}-repo"\n')
    lines.append('[machines]\nprovider = "local"\n')
    (folder / "dropship.toml").write_text("\n".join(lines))
    git = ["git", *GIT_IDENTITY, "-C", str(folder)]
    for argv in (
        ["git", "init", "-q", "-b", "main", str(folder)],
        [*git, "add", "-A"],
        [*git, "commit", "-qm", "bench project"],
        [*git, "tag", "-a", tag, "-m", tag],
    ):
        subprocess.run(argv, check=True, capture_output=True)
    return folder / "dropship.toml"


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime+stime (and waited-for children's) of one process, 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / TICKS


def tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    found = [root]
    for pid in parents:
        walk = pid
        while walk in parents and walk > 1:
            walk = parents[walk]
            if walk == root:
                found.append(pid)
                break
    return found


@dataclass
class Server:
    api_url: str
    pid: int | None
    """Root of the server's process tree, for its CPU (None: not counted)."""
    logs: list[Path]
    access_log: Path | None = None
    stop: list[object] = field(default_factory=list)

    def cpu(self) -> float:
        if self.pid is None:
            return float("nan")
        return sum(cpu_seconds(pid, children=True) for pid in tree(self.pid))

    def log_errors(self) -> int:
        pattern = re.compile(r"database is locked|Traceback|\bERROR\b|Service Unavailable")
        return sum(len(pattern.findall(p.read_text(errors="replace"))) for p in self.logs if p.exists())

    def answered_errors(self) -> int:
        """429/5xx answers nginx sent to clients (replicated stack only)."""
        if self.access_log is None or not self.access_log.exists():
            return -1
        return sum(
            1 for line in self.access_log.read_text(errors="replace").splitlines() if re.search(r'" (429|5\d\d) ', line)
        )


def start_server(work: Path, replicated: bool, server_pid: int | None) -> Server:
    if os.environ.get("PREFECT_API_URL"):
        return Server(os.environ["PREFECT_API_URL"], server_pid, [])
    from tests.stack import start_postgres, start_redis, start_stack

    args: list[str] = []
    backing: list[object] = []
    if replicated:
        pg = start_postgres()
        redis = start_redis(work / "redis")
        backing = [redis, PgRemover(pg)]
        args = ["--database", pg.url, "--redis", redis.url, "--api-replicas", "2"]
    stack = start_stack(work / "server", *args)
    logs = sorted((work / "server" / "logs").glob("*.log")) + [work / "server" / "prefect" / "server.log"]
    access = work / "server" / "logs" / "nginx-access.log" if replicated else None
    return Server(
        stack.api_url, stack.process.pid, [p for p in logs if "access" not in p.name], access, [stack, *backing]
    )


@dataclass
class PgRemover:
    pg: Any

    def stop(self) -> None:
        self.pg.remove()


@dataclass
class Outcome:
    project: str
    code: int
    wall: float
    cpu: float
    errors_printed: int
    message: str


def run_case(
    work: Path,
    server: Server,
    targets: int,
    releases: int,
    case: str,
    profile: Path | None = None,
    code: Path | None = None,
) -> list[Outcome]:
    """K releases of N targets at once; `code`: a checkout whose dropship the release processes
    (and so their machines' workers) import instead of this one (`--baseline`)."""
    from blocks.repo_server import RepoServer
    from blocks.signing_key import SigningKey
    from dropship.signing import generate_key

    key = generate_key("scale bench", "bench@example.invalid", expire_days=60)
    manifests = []
    for k in range(releases):
        name = f"{case}-p{k}"
        manifest = write_project(work / case / name, name, targets, "v1.0.0")
        SigningKey(private_key=key).save(f"{name}-signing-key", overwrite=True)
        RepoServer(path=str(work / case / f"{name}-published")).save(f"{name}-repo", overwrite=True)
        manifests.append((name, manifest))
    env = {**os.environ, "PREFECT_API_URL": server.api_url}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    processes = []
    started = time.monotonic()
    for name, manifest in manifests:
        log = (work / case / f"{name}.log").open("w")
        argv = [
            sys.executable,
            "-m",
            "cli",
            "release",
            "v1.0.0",
            "--manifest",
            str(manifest),
            "--workdir",
            str(work / case / f"{name}-state"),
        ]
        if profile is not None:  # yappi (CPU clock, all threads); the CPU column then counts yappi too
            profile.mkdir(parents=True, exist_ok=True)
            argv = [sys.executable, "-m", "bench.scale", "--profiled-child", str(profile / f"{name}.ystat"), *argv[1:]]
        process = subprocess.Popen(
            argv,
            env=env,
            # `-m cli` imports from the working directory before PYTHONPATH: the baseline's
            # processes (and the local machines' workers they start) run in its checkout
            cwd=code or REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        processes.append((name, process, log))
    cpu = {name: 0.0 for name, _, _ in processes}
    ended: dict[str, float] = {}
    while len(ended) < len(processes):
        for name, process, _ in processes:
            if name in ended:
                continue
            if process.poll() is None:
                cpu[name] = max(cpu[name], cpu_seconds(process.pid))  # the release process itself
            else:
                ended[name] = time.monotonic() - started
        time.sleep(0.25)
    outcomes = []
    for name, process, log in processes:
        log.close()
        text = (work / case / f"{name}.log").read_text(errors="replace")
        printed = len(
            re.findall(
                r"Service Unavailable|Bad Gateway|Gateway Time-?out|Too Many Requests|ApiUnavailable|"
                r"kept failing for",
                text,
            )
        )
        lines = text.splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("dropship:")]
        message = ""
        if starts:  # the one-line error and the per-target causes indented under it
            block = [lines[starts[-1]]]
            block += [line for line in lines[starts[-1] + 1 :] if line.startswith("  ")]
            message = "\n".join(block)
        outcomes.append(Outcome(name, process.returncode, ended[name], cpu[name], printed, message))
    return outcomes


def run_floor(work: Path, server: Server, runs: int, case: str) -> Outcome:
    """Prefect alone for `runs` targets (`bench.prefect_floor`): its parent process, measured as a release's,
    as many at once as dropship's default machines limit."""
    from tasks.resources import DEFAULT_MACHINES

    log_path = work / f"{case}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.prefect_floor", str(runs), case, str(work / case), str(DEFAULT_MACHINES)],
            env={**os.environ, "PREFECT_API_URL": server.api_url},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        started, cpu = time.monotonic(), 0.0
        while process.poll() is None:
            cpu = max(cpu, cpu_seconds(process.pid))
            time.sleep(0.25)
    text = log_path.read_text(errors="replace")
    message = "" if process.returncode == 0 else text.strip().splitlines()[-1] if text.strip() else "no output"
    return Outcome("prefect-floor", process.returncode, time.monotonic() - started, cpu, 0, message)


PROFILED_CHILD = "--profiled-child"


def profiled_child(out: str, argv: list[str]) -> int:
    """Run `python -m <argv>` under yappi's CPU clock, all threads; save its stats to `out`."""
    import runpy

    import yappi

    yappi.set_clock_type("cpu")
    yappi.start(builtins=False, profile_threads=True)
    code = 0
    sys.argv = [argv[1], *argv[2:]]
    try:
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        yappi.stop()
        yappi.get_func_stats().save(out, type="ystat")
    return code


def summarize_profile(folder: Path, top: int = 40) -> str:
    """CPU seconds per function over the release processes' yappi stats: the
    dropship/tasks/flows frames (inclusive), then the heaviest library frames (self)."""
    import yappi

    files = sorted(folder.glob("*.ystat"))
    if not files:
        return f"no profile in {folder}"
    stats = yappi.YFuncStats()
    for path in files:
        stats.add(str(path), type="ystat")
    rows = list(stats)
    total = sum(row.tsub for row in rows)
    ours = [r for r in rows if re.search(r"/(dropship|tasks|flows|deployments)/", r.module)]
    lines = [f"{total:.1f} CPU s in {len(files)} release process(es); ours, inclusive:"]
    for row in sorted(ours, key=lambda r: -r.ttot)[:top]:
        where = re.sub(r".*/(dropship|tasks|flows|deployments)/", r"\1/", row.module)
        lines.append(f"  {row.ttot:7.2f} s {row.ncall:7d}x  {where}:{row.lineno} {row.name}")
    lines.append("library functions, self time:")
    for row in sorted(rows, key=lambda r: -r.tsub)[:top]:
        where = re.sub(r".*site-packages/", "", row.module)
        lines.append(f"  {row.tsub:7.2f} s {row.ncall:7d}x  {where}:{row.lineno} {row.name}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [PROFILED_CHILD]:
        return profiled_child(argv[1], argv[2:])
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="32", help="targets per release (N), or a list: 1,4,16")
    parser.add_argument("--releases", default="1", help="releases of different projects at once (K), or a list: 4,8")
    parser.add_argument("--cases", help="NxK cases, e.g. 32x1,4x4,4x8 (instead of --targets/--releases)")
    parser.add_argument("--matrix", action="store_true", help="N = 1, 4, 16, 32 (K=1), then K = 1, 4, 8 (N=4)")
    parser.add_argument(
        "--replicated",
        action="store_true",
        help="start PostgreSQL + Redis + 2 API replicas (ignored when PREFECT_API_URL is set)",
    )
    parser.add_argument("--server-pid", type=int, help="pid of the server in PREFECT_API_URL, to count its CPU")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="run each case first with the dropship of git revision REV (a worktree), then with this one, "
        "and print the ratio",
    )
    parser.add_argument(
        "--prefect-floor",
        action="store_true",
        help="also run each case's N x K targets as bare Prefect deployment runs, a worker each (bench/prefect_floor.py), "
        "and print dropship's CPU per target against that floor",
    )
    parser.add_argument(
        "--profile", type=Path, help="run each release process under yappi (pip install yappi), stats into this folder"
    )
    args = parser.parse_args(argv)
    cases = (
        ([(n, 1) for n in (1, 4, 16, 32)] + [(4, k) for k in (4, 8)])
        if args.matrix
        else [(int(n), int(k)) for n in args.targets.split(",") for k in args.releases.split(",")]
    )
    if args.cases:
        cases = [(int(n), int(k)) for n, k in (case.split("x") for case in args.cases.split(","))]
    work = Path(tempfile.mkdtemp(prefix="dropship-bench-scale-"))
    os.chmod(work, 0o755)
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect-client"))
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(work / "results"))
    os.environ.setdefault("DROPSHIP_HOME", str(work / "dropship-home"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    shape = (
        "replicated"
        if args.replicated and not os.environ.get("PREFECT_API_URL")
        else ("external" if os.environ.get("PREFECT_API_URL") else "embedded")
    )
    server = start_server(work, args.replicated, args.server_pid)
    os.environ["PREFECT_API_URL"] = server.api_url
    print(f"server: {shape} at {server.api_url}; work folder {work}", flush=True)
    header = (
        f"{'server':15} {'N':>3} {'K':>2} {'wall s':>7} {'rel cpu/t':>9} {'srv cpu/t':>9} {'cpu/t':>6} "
        f"{'5xx/429':>7} {'srv log':>7} {'printed':>7} {'published':>9}"
    )
    rows = []
    all_published = True
    baseline = work / "baseline" if args.baseline else None
    # with a baseline, each case runs on both sides, which goes first alternating from case to case
    runs = [
        (n, k, side)
        for i, (n, k) in enumerate(cases)
        for side in ([baseline, None][:: 1 if i % 2 == 0 else -1] if baseline else [None])
    ]
    floors: dict[tuple[int, int], float] = {}  # CPU per run of Prefect alone, for cases whose floor completed
    floored: set[tuple[int, int]] = set()
    measured: dict[tuple[int, int], dict[str, tuple[float, float]]] = {}
    try:
        if baseline is not None:
            added = subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(baseline), args.baseline],
                check=False,
                capture_output=True,
                text=True,
            )
            if added.returncode != 0:
                print(f"--baseline {args.baseline}: {added.stderr.strip()}", file=sys.stderr)
                return 2
        for targets, releases, code in runs:
            side = "" if baseline is None else ("base" if code is not None else "this")
            case = f"n{targets}k{releases}{side}"
            errors_before, answered_before = server.log_errors(), server.answered_errors()
            cpu_before = server.cpu()
            outcomes = run_case(work, server, targets, releases, case, args.profile, code)
            server_cpu = server.cpu() - cpu_before
            total_targets = targets * releases
            wall = max(o.wall for o in outcomes)
            release_cpu = sum(o.cpu for o in outcomes)
            published = sum(1 for o in outcomes if o.code == 0)
            all_published &= published == len(outcomes)
            answered = server.answered_errors()
            per_target = (release_cpu + server_cpu) / total_targets
            measured.setdefault((targets, releases), {})[side] = (wall, per_target)
            row = (
                f"{(shape + ' ' + side).strip():15} {targets:>3} {releases:>2} {wall:>7.1f} "
                f"{release_cpu / total_targets:>9.2f} "
                f"{server_cpu / total_targets:>9.2f} {(release_cpu + server_cpu) / total_targets:>6.2f} "
                f"{(answered - answered_before) if answered >= 0 else '-':>7} "
                f"{server.log_errors() - errors_before:>7} {sum(o.errors_printed for o in outcomes):>7} "
                f"{published:>4} of {len(outcomes):<2}"
            )
            rows.append(row)
            print(header if len(rows) == 1 else "", row, sep="\n" if len(rows) == 1 else "", flush=True)
            for outcome in outcomes:
                if outcome.code != 0:
                    print(f"  {outcome.project} failed: {outcome.message[:3000]}", flush=True)
            if args.prefect_floor and (targets, releases) not in floored:
                floored.add((targets, releases))
                before = server.cpu()
                floor = run_floor(work, server, targets * releases, f"floor-n{targets}k{releases}")
                floor_server = server.cpu() - before
                floor_per_run = (floor.cpu + floor_server) / (targets * releases)
                if floor.code == 0:  # runs that never completed cost less: no ratio against them
                    floors[(targets, releases)] = floor_per_run
                all_published &= floor.code == 0
                row = (
                    f"{'prefect floor':15} {targets:>3} {releases:>2} {floor.wall:>7.1f} "
                    f"{floor.cpu / (targets * releases):>9.2f} {floor_server / (targets * releases):>9.2f} "
                    f"{floor_per_run:>6.2f} {'':>7} {'':>7} {'':>7} "
                    f"{'ok' if floor.code == 0 else 'FAILED':>9}"
                )
                rows.append(row)
                print(row, flush=True)
                if floor.code != 0:
                    print(f"  prefect floor failed: {floor.message[:500]}", flush=True)
            if (targets, releases) in floors:
                ratio = (
                    f"{'':15} N={targets} K={releases}{' ' + side if side else ''}: dropship/Prefect-alone "
                    f"CPU per target {per_target / floors[(targets, releases)]:.2f}x"
                )
                rows.append(ratio)
                print(ratio, flush=True)
            pair = measured[(targets, releases)]
            if len(pair) == 2:
                (base_wall, base_cpu), (wall_now, cpu_now) = pair["base"], pair["this"]
                ratio = (
                    f"{'':15} N={targets} K={releases}: this/base wall {wall_now / base_wall:.2f}x, "
                    f"CPU per target {cpu_now / base_cpu:.2f}x (base {args.baseline})"
                )
                rows.append(ratio)
                print(ratio, flush=True)
    finally:
        if baseline is not None:
            subprocess.run(
                ["git", "-C", str(baseline), "worktree", "remove", "--force", str(baseline)],
                check=False,
                capture_output=True,
            )
        for thing in server.stop:
            stop = thing.stop
            stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(header)
    print("\n".join(rows))
    if args.profile is not None:
        print(summarize_profile(args.profile))
    return 0 if all_published else 1


if __name__ == "__main__":
    sys.exit(main())
