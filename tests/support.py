"""Helpers shared by test modules: process scans, child runs, run logs and the secret-leak scan, git
tags, the blocks and manifests of example releases, idle machines.

Test modules import from here (or from the fixtures in conftest.py and the
server support modules), never from one another.
"""

from __future__ import annotations

import json
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


def secret_leaks(secret: str, run_ids: list[str], folder: Path) -> list[str]:
    """Where `secret` shows: files under `folder` (a release's state, published tree, sources), and the
    log lines, artifacts and parameters of the flow runs `run_ids` and their machines' runs. [] when
    nowhere; each place otherwise ("file ...", "log ...", "artifact ...", "parameters of run ...")."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found = [
        f"file {path}"
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink() and secret.encode() in path.read_bytes()
    ]
    runs = list(run_ids) + [str(child.id) for run in run_ids for child in child_runs(run)]
    logs = run_logs(runs)
    assert logs, "the runs logged something: the scan read their logs"
    found += [f"log {log.message[:80]!r}" for log in logs if secret in log.message]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=runs))
        )
        parameters = {run: client.read_flow_run(run).parameters for run in runs}
    found += [
        f"artifact {a.key or a.id}" for a in artifacts if secret in json.dumps(a.model_dump(mode="json"), default=str)
    ]
    found += [
        f"parameters of run {run}" for run, given in parameters.items() if secret in json.dumps(given, default=str)
    ]
    return found


def save_release_blocks(
    signing_key: str,
    published: Path,
    *,
    key_block: str = "hello-signing-key",
    repo_block: str = "hello-repo",
    registry: Any = None,
    registry_block: str = "hello-registry",
    registry_url: str | None = None,
) -> None:
    """The blocks a release of a test project names: its signing key, a repository folder (`published`)
    and, given a `registry` (tests/registry.py), a DockerRegistryCredentials block with its login for
    `registry_url` (the registry's own host by default)."""
    from blocks.repo_server import RepoServer
    from blocks.signing_key import SigningKey

    SigningKey(private_key=signing_key).save(key_block, overwrite=True)
    RepoServer(path=str(published)).save(repo_block, overwrite=True)
    if registry is not None:
        from prefect_docker.credentials import DockerRegistryCredentials

        DockerRegistryCredentials(
            username=registry.username, password=registry.password, registry_url=registry_url or registry.host
        ).save(registry_block, overwrite=True)


def write_example_with_oci(repo: Path, repository: str, *, replace: dict[str, str] | None = None) -> None:
    """The example's dropship.toml (without its wheel and jobs) plus its image targets (`oci.toml`) pushing
    to `repository`, as the repository's manifest; each `replace` pair is applied to both parts."""
    manifest = (repo / "dropship.toml").read_text().split("\n# A pure-Python wheel")[0]
    fragment = (repo / "oci.toml").read_text()
    assert '"127.0.0.1:5000/hello"' in fragment, "oci.toml names the image repository the tests replace"
    fragment = fragment.replace('"127.0.0.1:5000/hello"', f'"{repository}"')
    for old, new in (replace or {}).items():
        assert old in manifest + fragment, f"{old!r} is in neither dropship.toml nor oci.toml"
        manifest, fragment = manifest.replace(old, new), fragment.replace(old, new)
    (repo / "dropship.toml").write_text(manifest + "\n" + fragment)


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
    launcher=[sys.executable, "-c", "import time; time.sleep(300)"],
    env={},
)


def idle_user_data(host: KeyPair, client: KeyPair, worker: WorkerSpec = IDLE_WORKER) -> str:
    """The user_data of a machine with `host`'s host key that lets `client` in and whose worker
    (once handed a build run) idles."""
    return render(
        host_private_key=host.private_openssh,
        host_public_key=host.public_line,
        authorized_key=client.public_line,
        work_dir="/var/lib/dropship/work",
        worker=worker,
    )


def boot(
    provider: LocalProvider,
    client: KeyPair,
    name: str = "m",
    tags: tuple[str, ...] = (),
    worker: WorkerSpec = IDLE_WORKER,
) -> Machine:
    host = generate_keypair("host")
    user_data = idle_user_data(host, client, worker)
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
