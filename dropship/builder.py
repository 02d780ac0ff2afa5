"""What the build flow does on a machine: unpack, build, report artifacts.

The report (name, size, sha256 of every artifact) is written next to the
workspace as `report.json`; the orchestrator reads it over SFTP and checks
every file it pulls against it. The report travels by file, not by Prefect
result, because a droplet's result storage is not the orchestrator's.

The build command is the project's code and its dependencies' code: it runs
with an allow-listed environment (`build_environment`: no PREFECT_*, no
credential of the worker or the orchestrator) and, given `run_as` on a
machine where the worker is root, as that unprivileged user (created if
missing), which can read neither the worker's credentials file nor its
/proc entries.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from dropship.errors import BuildFailed, CommandError, ConfigError
from dropship.graph import DEPS_DIR
from dropship.process import run
from dropship.repos.files import sha256_file

REPORT = "report.json"
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM")
"""What a build inherits from the worker; everything else comes from the manifest's `env`."""
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def build_environment(
    target_env: dict[str, str], *, home: Path, version: str, target: str, inherit: bool = True
) -> dict[str, str]:
    """The whole environment of a build command: an allow-list, never the worker's secrets.
    Without `inherit` (a build container: the image has its own PATH and locale) only what
    dropship and the manifest declare."""
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ} if inherit else {}
    if inherit:
        env.setdefault("PATH", DEFAULT_PATH)
    env["HOME"] = str(home)
    env.update(target_env)
    env["DROPSHIP_VERSION"] = version
    env["DROPSHIP_TARGET"] = target
    return env


def build_identity(run_as: str | None) -> tuple[int, int] | None:
    """(uid, gid) of `run_as`, created as a system user if missing; None when not root or not asked."""
    if not run_as or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(run_as)
    except KeyError:
        run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", run_as],
            what=f"creating the build user {run_as}",
        )
        entry = pwd.getpwnam(run_as)
    if entry.pw_uid == 0:
        raise ConfigError(f"build user {run_as} is root: builds must run unprivileged")
    return entry.pw_uid, entry.pw_gid


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for directory, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.lchown(os.path.join(directory, name), uid, gid)


class Runner(Protocol):
    """Runs a build command and returns its output, raising `CommandError` when it fails: on the
    machine itself (`run_on_machine`), or in a build container (`tasks/containers.ContainerRunner`)."""

    def __call__(
        self, command: list[str], *, cwd: Path, env: dict[str, str], timeout: float, identity: tuple[int, int] | None
    ) -> str: ...


def run_on_machine(
    command: list[str], *, cwd: Path, env: dict[str, str], timeout: float, identity: tuple[int, int] | None
) -> str:
    return run(
        command,
        cwd=cwd,
        env=env,
        inherit_env=False,
        what=f"build of {env.get('DROPSHIP_TARGET', command[0])}",
        timeout=timeout,
        user=identity[0] if identity else None,
        group=identity[1] if identity else None,
    )


@dataclass(frozen=True)
class ArtifactReport:
    name: str
    path: str
    """Absolute path on the machine."""
    size: int
    sha256: str


@dataclass(frozen=True)
class BuildReport:
    target: str
    version: str
    seconds: float
    artifacts: tuple[ArtifactReport, ...]
    output_tail: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> BuildReport:
        data = json.loads(text)
        return cls(
            target=data["target"],
            version=data["version"],
            seconds=float(data["seconds"]),
            artifacts=tuple(ArtifactReport(**a) for a in data["artifacts"]),
            output_tail=data.get("output_tail", ""),
        )


def unpack(archive: Path, destination: Path) -> None:
    """Extract a source archive, refusing links or paths that leave `destination`."""
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    with tarfile.open(archive, "r:*") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(destination, filter="data")
        else:  # Python before 3.11.4 (Debian 12's 3.11.2 on a stock droplet): the same refusals by hand
            for member in tar.getmembers():
                target = (destination / member.name).resolve()
                if member.name.startswith("/") or not target.is_relative_to(destination.resolve()):
                    raise BuildFailed(str(archive), f"source archive member {member.name!r} leaves the workspace")
                if not (member.isfile() or member.isdir() or member.issym()):
                    raise BuildFailed(str(archive), f"source archive member {member.name!r} is not a file or folder")
                if member.issym() and (
                    member.linkname.startswith("/")
                    or not (target.parent / member.linkname).resolve().is_relative_to(destination.resolve())
                ):
                    raise BuildFailed(str(archive), f"source archive link {member.name!r} points outside the workspace")
                member.mode &= 0o755
            tar.extractall(destination)  # noqa: S202 - every member checked above


def build(
    *,
    target: str,
    workspace: Path,
    archive: Path,
    command: list[str],
    artifacts: list[str],
    version: str,
    env: dict[str, str],
    timeout: float,
    run_as: str | None = None,
    image: dict[str, str] | None = None,
    runner: Runner | None = None,
) -> BuildReport:
    """Unpack `archive`, run `command` in it, hash the artifacts, write the report.

    `runner` runs the command (default: on the machine; a build container's runner
    gets the same source, home and declared environment, without the worker's PATH
    and locale). `image` (an oci target: `dockerfile` and `platform`) then builds
    the image from the built tree (`dropship.oci_build`); its archive is the artifact."""
    source = workspace / "src"
    unpack(archive, source)
    home = workspace / "home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    identity = build_identity(run_as)
    if identity is not None:
        _chown_tree(source, *identity)
        _chown_tree(home, *identity)
    started = time.monotonic()
    build_env = build_environment(env, home=home, version=version, target=target, inherit=runner is None)
    if (source / DEPS_DIR).is_dir():  # the artifacts of the targets it depends on (dropship.graph)
        build_env["DROPSHIP_DEPS"] = str(source / DEPS_DIR)
    try:
        output = (runner or run_on_machine)(command, cwd=source, env=build_env, timeout=timeout, identity=identity)
    except CommandError as exc:
        raise BuildFailed(target, str(exc)) from exc
    seconds = time.monotonic() - started
    found: list[ArtifactReport] = []
    for pattern in artifacts:
        matches = sorted(glob.glob(pattern, root_dir=source))
        if not matches:
            raise BuildFailed(target, f"artifact pattern {pattern!r} matched no file after the build")
        for match in matches:
            path = source / match
            if not path.is_file() or path.is_symlink():
                continue
            found.append(ArtifactReport(path.name, str(path), path.stat().st_size, sha256_file(path)))
    if image is not None:
        from dropship.oci_build import build_image

        saved = build_image(
            target=target,
            workspace=workspace,
            source=source,
            dockerfile=image["dockerfile"],
            platform=image["platform"],
            version=version,
            out_dir=workspace / "image",
        )
        found.append(ArtifactReport(saved.name, str(saved), saved.stat().st_size, sha256_file(saved)))
    names = [a.name for a in found]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise BuildFailed(target, f"several artifacts share a file name: {', '.join(sorted(duplicates))}")
    tail = "\n".join(output.strip().splitlines()[-20:])
    report = BuildReport(target, version, round(seconds, 3), tuple(found), tail)
    tmp = workspace / (REPORT + ".tmp")
    tmp.write_text(report.to_json())
    os.replace(tmp, workspace / REPORT)
    return report
