"""What must not accumulate: machines of finished runs, run secrets, stray
work queues, and the demo's Prefect server after the demo was killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from dropship.machines.local import LocalProvider
from dropship.ports import free_port
from dropship.prefect_server import PIDFILE, LocalPrefectServer, _is_our_server
from dropship.ssh import generate_keypair
from tests.support import boot, machine_processes_under

ROOT = Path(__file__).resolve().parents[2]


def _crashed_run() -> str:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    @flow(name="release")
    def stand_in() -> None:
        pass

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(stand_in, state=Crashed(message="orchestrator killed"))
    return str(run.id)


def test_machines_of_a_crashed_run_go_at_once_unknown_runs_wait_for_the_ttl(
    prefect_server: str, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client

    from flows.reap import reap
    from tasks.resources import Applied, ensure_pool

    ensure_pool("dropship-builders", Applied())
    state = tmp_path / "state"
    provider = LocalProvider(state / "local")
    client = generate_keypair("client")
    crashed, unknown = _crashed_run(), str(uuid.uuid4())
    doomed = boot(provider, client, "hello-amd64-deb-doomed", (f"dropship-run-{crashed}",))
    kept = boot(provider, client, "hello-amd64-deb-kept", (f"dropship-run-{unknown}",))
    for name in (doomed.name, kept.name, "hello-arm64-deb-nobody"):
        with get_client(sync_client=True) as prefect:
            prefect.create_work_queue(name=name, work_pool_name="dropship-builders")
    for run_id in (crashed, unknown):
        (state / "runs" / run_id / "ssh").mkdir(parents=True)
        (state / "runs" / run_id / "ssh" / "id_ed25519").write_text("private")

    done = reap(provider="local", workdir=str(state), ttl_minutes=120, queue_grace_minutes=0)
    assert f"{doomed.name}: run {crashed} is over" in done
    assert [m.name for m in provider.list()] == [kept.name], "an unknown run's machine waits for the TTL"
    assert (
        f"queue {doomed.name}: no machine serves it" in done
        and "queue hello-arm64-deb-nobody: no machine serves it" in done
    )
    with get_client(sync_client=True) as prefect:
        queues = {q.name for q in prefect.read_work_queues(work_pool_name="dropship-builders")}
    assert kept.name in queues and doomed.name not in queues and "hello-arm64-deb-nobody" not in queues
    assert not (state / "runs" / crashed / "ssh").exists() and not (state / "runs" / unknown / "ssh").exists()

    done = reap(provider="local", workdir=str(state), ttl_minutes=0, queue_grace_minutes=0)
    assert any(line.startswith(f"{kept.name}: older than") and "unknown to Prefect" in line for line in done)
    assert provider.list() == [] and machine_processes_under(tmp_path) == []


def _server_pid(home: Path, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = int((home / PIDFILE).read_text())
            if _is_our_server(pid, home):
                return pid
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError("the demo's server did not start")


def _gone(pid: int, home: Path, timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not _is_our_server(pid, home):
            return time.monotonic() - started
        time.sleep(0.2)
    return None


@pytest.mark.e2e
def test_a_killed_demos_server_dies_with_it_and_a_survivor_is_stopped_at_the_next_start(tmp_path: Path) -> None:
    home = tmp_path / "prefect"
    code = (
        "import sys, time; from pathlib import Path; from dropship.prefect_server import LocalPrefectServer; "
        "s = LocalPrefectServer(Path(sys.argv[1])); s.start(); print('up', flush=True); time.sleep(600)"
    )
    demo = subprocess.Popen([sys.executable, "-c", code, str(home)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert demo.stdout is not None and demo.stdout.readline().strip() == "up"
    pid = _server_pid(home)
    demo.send_signal(signal.SIGKILL)
    demo.wait()
    seconds = _gone(pid, home, 60)
    print(f"\nFIGURE killed demo: its Prefect server was gone {seconds} s after the kill")
    assert seconds is not None, "the server outlived the killed demo"
    try:  # whatever of its group is left (uvicorn children) goes too
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

    # A server that survived some other way (no parent-death signal): found by its pidfile.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
    )
    survivor = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(free_port())],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    (home / PIDFILE).write_text(f"{survivor.pid}\n")
    deadline = time.monotonic() + 20  # /proc shows the new process's environment a moment after exec
    while not _is_our_server(survivor.pid, home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _is_our_server(survivor.pid, home)
    server = LocalPrefectServer(home)
    try:
        server.start()
        assert server.stale_pid == survivor.pid
        assert survivor.wait(timeout=5) is not None
    finally:
        server.stop()
    assert not (home / PIDFILE).exists()
