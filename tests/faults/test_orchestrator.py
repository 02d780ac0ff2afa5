"""End to end on the session's Prefect server, with local machines: a machine
killed mid-build, and the orchestrator killed (SIGKILL) mid-build and while
signing, then the reaper. Every figure printed with FIGURE is in the report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dropship.demo import prepare_repository
from dropship.machines.local import LocalProvider, _pids_with_marker
from tests.faults.harness import agents_of
from tests.support import child_runs, commit_and_tag, machine_processes_under

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SLOW_BUILD = 'build = ["sh", "-c", "touch building; sleep 300; sh packaging/build.sh deb amd64"]'


def _project(tmp_path: Path, tag: str, signing_key: str, build: str | None = None) -> Path:
    from blocks.repo_server import RepoServer
    from blocks.signing_key import SigningKey

    key = tmp_path / "signing-key.asc"
    key.write_text(signing_key)
    key.chmod(0o600)
    SigningKey(private_key_file=str(key)).save("hello-faults-key", overwrite=True)
    RepoServer(path=str(tmp_path / "published")).save("hello-faults-repo", overwrite=True)
    repo = prepare_repository(tmp_path / "hello", "v0.0.1")
    edits = {
        'signing_key = "hello-signing-key"': 'signing_key = "hello-faults-key"',
        'repo_server = "hello-repo"': 'repo_server = "hello-faults-repo"',
        '[machines]\nprovider = "local"': '[machines]\nprovider = "local"\nbuild_timeout = 600',
    }
    if build:
        edits['build = ["sh", "packaging/build.sh", "deb", "amd64"]'] = build
    commit_and_tag(repo, tag, edits)
    return repo / "dropship.toml"


def _wait_for(what: str, check: Any, timeout: float = 240.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def _building(state: Path) -> str | None:
    provider = LocalProvider(state / "local")
    for machine in provider.list():
        if (Path(machine.work_dir) / "src" / "building").exists():
            return machine.id
    return None


def _queues() -> set[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {q.name for q in client.read_work_queues(work_pool_name="dropship-builders")}


def test_a_machine_killed_mid_build_fails_the_release_within_a_minute(
    prefect_server: str,
    signing_key: str,
    tmp_path: Path,
) -> None:
    from flows.release import release

    manifest = _project(tmp_path, "v0.7.0", signing_key, SLOW_BUILD)
    state_dir = tmp_path / "state"
    killed: dict[str, float] = {}

    def kill_machine() -> None:
        machine_id = _wait_for("the build", lambda: _building(state_dir))
        for pid in _pids_with_marker(machine_id):  # its worker, the flow run and the build: the machine died
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed["at"] = time.monotonic()

    killer = threading.Thread(target=kill_machine, daemon=True)
    killer.start()
    state = release(
        manifest=str(manifest), tag="v0.7.0", targets=["amd64-deb"], workdir=str(state_dir), return_state=True
    )
    ended = time.monotonic()
    killer.join(timeout=5)
    assert "at" in killed, "the machine was never killed"
    seconds = ended - killed["at"]
    print(f"\nFIGURE machine-killed-mid-build: release failed {seconds:.1f} s after the kill (build_timeout 600 s)")
    assert state.is_failed()
    assert "machine lost during the build" in state.message and "amd64-deb" in state.message, state.message
    assert seconds < 120, "the loss was noticed well before build_timeout"
    assert LocalProvider(state_dir / "local").list() == [] and machine_processes_under(tmp_path) == []
    run_id = str(state.state_details.flow_run_id)
    assert not any(r.state.is_running() or r.state.is_scheduled() for r in child_runs(run_id))
    assert not (tmp_path / "published" / "current").exists(), "nothing was published"
    assert not [q for q in _queues() if q.startswith("hello-amd64-deb-")]


@pytest.mark.parametrize("kill_during", ["build", "sign"])
def test_an_orchestrator_killed_leaves_nothing_after_the_reaper(
    kill_during: str,
    prefect_server: str,
    signing_key: str,
    tmp_path: Path,
) -> None:
    from prefect.client.orchestration import get_client

    from flows.reap import reap

    manifest = _project(tmp_path, "v0.6.0", signing_key, SLOW_BUILD if kill_during == "build" else None)
    state_dir = tmp_path / "state"
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
    code = (
        "import sys; from flows.release import release; "
        "release(manifest=sys.argv[1], tag='v0.6.0', targets=['amd64-deb'], workdir=sys.argv[2])"
    )
    log = tmp_path / "orchestrator.log"
    with log.open("wb") as out:
        orchestrator = subprocess.Popen(
            [sys.executable, "-c", code, str(manifest), str(state_dir)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def reached(check: Any) -> Any:
        def probe() -> Any:
            assert orchestrator.poll() is None, f"the release ended first:\n{log.read_text()[-3000:]}"
            return check()

        return probe

    try:
        if kill_during == "build":
            _wait_for("the build", reached(lambda: _building(state_dir)))
        else:
            _wait_for(
                "signing",
                reached(lambda: list((state_dir / "runs").glob("*/gnupg")) if (state_dir / "runs").is_dir() else None),
                timeout=300,
            )
        os.killpg(orchestrator.pid, signal.SIGKILL)
    finally:
        orchestrator.kill()
        orchestrator.wait()
    (run_dir,) = list((state_dir / "runs").iterdir())
    run_id = run_dir.name
    keyring = run_dir / "gnupg"
    if kill_during == "sign":
        assert keyring.exists() or keyring.is_symlink(), "the kill left the keyring behind"
        real = Path(os.readlink(keyring)) if keyring.is_symlink() else keyring
    else:
        assert LocalProvider(state_dir / "local").list(), "the kill left the machine behind"
    assert (run_dir / "ssh").exists(), "and the run's SSH key"

    time.sleep(12)  # more than the heartbeat silence the reaper is given below
    started = time.monotonic()
    done = reap(
        provider="local", workdir=str(state_dir), ttl_minutes=120, heartbeat_silence_seconds=10, queue_grace_minutes=0
    )
    print(f"\nFIGURE orchestrator-killed-during-{kill_during}: reaper took {time.monotonic() - started:.1f} s: {done}")
    with get_client(sync_client=True) as client:
        from uuid import UUID

        assert client.read_flow_run(UUID(run_id)).state.is_crashed()
    assert f"run {run_id}: crashed, orchestrator gone" in done
    assert LocalProvider(state_dir / "local").list() == [] and machine_processes_under(tmp_path) == []
    assert not (run_dir / "ssh").exists() and not keyring.exists() and not keyring.is_symlink()
    if kill_during == "sign":
        _wait_for("the agent to stop", lambda: not agents_of(real), timeout=10)
    assert not [q for q in _queues() if q.startswith("hello-amd64-deb-")], "its work queue was removed"
    assert not (tmp_path / "published" / "current").exists(), "the repository is unchanged (nothing published)"
    assert not any(r.state.is_running() or r.state.is_scheduled() for r in child_runs(run_id))
