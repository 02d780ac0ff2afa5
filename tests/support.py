"""Helpers shared by test modules: process scans, child runs, git tags, idle machines.

Test modules import from here (or from the fixtures in conftest.py and the
server support modules), never from one another.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dropship.demo import GIT_IDENTITY
from dropship.machines import Machine, MachineRequest
from dropship.machines.local import LocalProvider
from dropship.machines.userdata import WorkerSpec, render
from dropship.ssh import KeyPair, generate_keypair

ROOT = Path(__file__).resolve().parents[1]
"""The project's folder: where `python -m cli` finds the command."""


def run_ok(argv: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: float = 300) -> str:
    """Run `argv` to its end and return what it printed; the test fails with its output if it fails."""
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def processes() -> Iterator[tuple[int, bytes, bytes]]:
    """(pid, command line, environment) of every process this user may read, as /proc has them."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), (entry / "cmdline").read_bytes(), (entry / "environ").read_bytes()
            except OSError:  # gone meanwhile, or not ours to read
                continue


def parents_and_sessions() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, session id) of every process, from /proc/<pid>/stat."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[int(entry.name)] = (int(fields[1]), int(fields[3]))
    return found


def processes_with_env(needle: bytes) -> list[int]:
    return [pid for pid, _, environ in processes() if needle in environ]


def machine_processes_under(folder: Path) -> list[int]:
    """Processes of machines whose state is under `folder` (this test's, not another
    session's or a concurrent run's): those started with DROPSHIP_MACHINE_ROOT there,
    and sshd listeners of a config there (sshd does not keep the marker in its environment)."""
    root = f"DROPSHIP_MACHINE_ROOT={folder}".encode()
    config = str(folder).encode()
    return [
        pid
        for pid, cmdline, environ in processes()
        if any(v.startswith(root) for v in environ.split(b"\0")) or (b"sshd" in cmdline and config in cmdline)
    ]


def child_runs(run_id: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"dropship-run-{run_id}"]))
        )


def run_logs(run_ids: list[str]) -> list[Any]:
    """Every log line of the flow runs `run_ids`, oldest first (read page by page)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    logs: list[Any] = []
    with get_client(sync_client=True) as client:
        while page := client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)),
            limit=200,
            offset=len(logs),
            sort=LogSort.TIMESTAMP_ASC,
        ):
            logs += page
    return logs


def commit_and_tag(repo: Path, tag: str, edit: dict[str, Any] | None = None) -> None:
    if edit:
        text = (repo / "dropship.toml").read_text()
        for old, new in edit.items():
            assert old in text
            text = text.replace(old, new)
        (repo / "dropship.toml").write_text(text)
    git = ["git", *GIT_IDENTITY, "-C", str(repo)]
    subprocess.run([*git, "commit", "-qam", f"for {tag}"], check=True)
    subprocess.run([*git, "tag", "-a", tag, "-m", tag], check=True)


IDLE_WORKER = WorkerSpec(
    api_url="http://127.0.0.1:9/api",
    pool="p",
    queue="q",
    prefect=[sys.executable, "-c", "import time; time.sleep(300)"],
    env={},
)


def idle_user_data(host: KeyPair, client: KeyPair) -> str:
    """The user_data of a machine with `host`'s host key that lets `client` in and whose worker idles."""
    return render(
        host_private_key=host.private_openssh,
        host_public_key=host.public_line,
        authorized_key=client.public_line,
        work_dir="/var/lib/dropship/work",
        worker=IDLE_WORKER,
    )


def boot(provider: LocalProvider, client: KeyPair, name: str = "m", tags: tuple[str, ...] = ()) -> Machine:
    host = generate_keypair("host")
    user_data = idle_user_data(host, client)
    return provider.create(MachineRequest(name, tags, "s", "i", "r", user_data, host.public_line))


def wait_healthy(url: str, process: subprocess.Popen[Any], log: Path, timeout: float = 120) -> None:
    """Until `url`/healthz answers 200 (a webhook receiver just started), or fail with its log."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline and process.poll() is None, log.read_text()
        time.sleep(0.2)
