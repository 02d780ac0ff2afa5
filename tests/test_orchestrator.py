"""`dropship server start` with the real components: Debian's PostgreSQL 15,
redis-server and nginx, Prefect API replicas, the services process, workers
and the example release, plus the faults the supervisor must absorb."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from dropship.errors import ApiUnavailable, ConfigError
from dropship.orchestrator import StackConfig, read_auth_string, systemd_units
from dropship.ports import free_port
from tests.stack import (
    Postgres,
    Redis,
    Stack,
    descendants,
    start_postgres,
    start_redis,
    start_stack,
)
from tests.support import run_ok, wait_healthy

ROOT = Path(__file__).resolve().parents[1]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def backing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Postgres, Redis]]:
    folder = tmp_path_factory.mktemp("backing")
    pg = start_postgres()
    redis = start_redis(folder / "redis")
    yield pg, redis
    redis.stop()
    pg.remove()


@pytest.fixture(scope="module")
def stack(backing: tuple[Postgres, Redis], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One replicated stack for the module: 2 API replicas, services, nginx."""
    pg, redis = backing
    home = tmp_path_factory.mktemp("stack") / "home"
    running = start_stack(home, "--database", pg.url, "--redis", redis.url, "--api-replicas", "2")
    children = descendants(running.process.pid)
    yield running
    code = running.stop()
    assert code == 0, running.output.read_text()[-2000:]
    time.sleep(0.5)
    left = [pid for pid in children + descendants(running.process.pid) if alive(pid)]
    assert left == [], f"SIGTERM left children of the supervisor running: {left}"


def demo(api_url: str, workdir: Path, tag: str) -> subprocess.Popen[str]:
    """`dropship demo` against the stack, as a user runs it (its own process, retry settings from the CLI)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(workdir / "prefect-home"),
        PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(workdir / "results"),
    )
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "demo", "--workdir", str(workdir), "--tag", tag],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 600) -> str:
    out, _ = process.communicate(timeout=timeout)
    return out


def wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float = 300) -> list[str]:
    """Read the demo's output until a line contains `needle` (the rest is read by `finish`)."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} never appeared:\n{''.join(lines)[-3000:]}")


# ---- the stack itself -------------------------------------------------------


def test_stack_serves_api_and_ui_through_nginx_from_both_replicas(stack: Stack) -> None:
    import urllib.request

    assert stack.healthy()
    with urllib.request.urlopen(f"{stack.api_url.removesuffix('/api')}/ui-settings", timeout=10) as response:
        assert json.loads(response.read())["api_url"] == stack.api_url  # the UI talks to nginx
    ports = (stack.home / "run" / "replica-ports").read_text().split()
    assert len(ports) == 2
    for port in ports:  # each replica serves on its own, and nginx's config names both
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=10) as response:
            assert response.status == 200
        assert f"server 127.0.0.1:{port} " in (stack.home / "nginx.conf").read_text()
    assert "api-1 (pid" in stack.log() and "api-2 (pid" in stack.log() and "services (pid" in stack.log()
    upgrade = stack.log().index("applying database migrations")
    assert upgrade < stack.log().index("api-1 (pid") < stack.log().index("api-2 (pid")


def test_release_publishes_while_an_api_replica_is_killed(stack: Stack, tmp_path: Path) -> None:
    process = demo(stack.api_url, tmp_path / "demo", "v0.1.0")
    wait_for_line(process, "is up, building")  # machines exist, builds are being started
    victim = stack.pids()["api-1"]
    os.kill(victim, signal.SIGKILL)
    output = finish(process)
    assert process.returncode == 0, output[-4000:]
    assert "Published hello v0.1.0 (stable" in output
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert (
        summary["status"] == "published" and len(summary["targets"]) == 5
    )  # the example: 4 package targets and a wheel
    assert (tmp_path / "demo" / "published" / "current" / "dists" / "stable" / "InRelease").exists()
    new = stack.wait_restart("api-1", victim)
    assert alive(new) and f"api-1 (pid {victim}) exited with code -9; restarting" in stack.log()
    assert stack.healthy()


def test_schedule_runs_on_a_worker_and_resumes_after_the_services_process_is_killed(
    stack: Stack, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate, WorkPoolCreate
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.settings import PREFECT_API_URL, temporary_settings

    pool = "stack-tick-pool"
    with temporary_settings({PREFECT_API_URL: stack.api_url}), get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        flow_id = client.create_flow_from_name("stack-tick")
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name="every-5s",
            entrypoint="tests.scheduled_flow:tick",
            work_pool_name=pool,
            schedules=[DeploymentScheduleCreate(schedule=IntervalSchedule(interval=timedelta(seconds=5)))],
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_API_URL=stack.api_url,
        PREFECT_HOME=str(tmp_path / "worker-home"),
        PYTHONPATH=str(ROOT),
        PREFECT_WORKER_QUERY_SECONDS="2",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    with (tmp_path / "worker.log").open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def runs(client: Any, *states: StateType) -> list[Any]:
        return list(
            client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(states)))),
            )
        )

    def completed_after(client: Any, moment: datetime, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [r for r in runs(client, StateType.COMPLETED) if r.created and r.created > moment]
            if done:
                return done
            time.sleep(2)
        raise AssertionError(
            f"no run created after {moment} completed; worker log:\n"
            + (tmp_path / "worker.log").read_text(errors="replace")[-2000:]
        )

    try:
        with temporary_settings({PREFECT_API_URL: stack.api_url}), get_client(sync_client=True) as client:
            start = datetime.now(UTC) - timedelta(seconds=5)
            assert completed_after(client, start, 150)
            # Without a scheduler, no new run appears: remove the ones already made, then kill it.
            for run in runs(client, StateType.SCHEDULED):
                client.delete_flow_run(run.id)
            victim = stack.pids()["services"]
            killed = datetime.now(UTC)
            os.kill(victim, signal.SIGKILL)
            stack.wait_restart("services", victim)
            fresh = completed_after(client, killed, 180)
            assert all(r.state.is_completed() for r in fresh)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:  # it waits for flow runs it started; they are trivial
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def test_postgresql_restart_mid_release_loses_nothing_published(
    stack: Stack, backing: tuple[Postgres, Redis], tmp_path: Path
) -> None:
    pg, _ = backing
    workdir = tmp_path / "demo"
    first = demo(stack.api_url, workdir, "v0.1.0")
    out = finish(first)
    assert first.returncode == 0, out[-3000:]
    before = os.readlink(workdir / "published" / "current")
    process = demo(stack.api_url, workdir, "v0.1.1")
    wait_for_line(process, "is up, building")
    pg.restart()
    output = finish(process)
    current = os.readlink(workdir / "published" / "current")
    releases = sorted(p.name for p in (workdir / "published" / "releases").iterdir())
    if process.returncode == 0:
        assert "Published hello v0.1.1" in output and current != before and len(releases) == 2
    else:  # a clear error, and the earlier release still published
        assert "release failed" in output or "dropship:" in output, output[-3000:]
        assert current == before and before.removeprefix("releases/") in releases
    assert stack.healthy()
    print(f"PostgreSQL restart mid-release: exit {process.returncode}, releases {releases}")


def _client_env(api_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


ORPHAN_FLOW = """
import os, sys, time
from prefect import flow

@flow(name="stack-orphan")
def orphan() -> None:
    from prefect.runtime import flow_run
    print(f"RUN {flow_run.id}", flush=True)
    time.sleep(3600)

orphan()
"""


def test_zombie_automation_crashes_a_run_whose_process_vanished_and_the_webhook_starts_a_release(
    stack: Stack, tmp_path: Path
) -> None:
    """On the replicated stack: `dropship deployments apply` creates the zombie-run
    automation, which the services process (triggers on Redis messaging) fires
    for a flow run whose process was SIGKILLed after its first heartbeat; and
    `dropship webhook` turns a GitLab tag push into a run of release/release-tag."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from blocks.webhook import WebhookSecrets
    from deployments.runs import RELEASE_TAG
    from dropship.orchestrator import HEARTBEAT_SECONDS
    from tasks.resources import ZOMBIE_AUTOMATION

    env = _client_env(stack.api_url, tmp_path / "prefect-home")
    manifest = str(ROOT / "examples/hello/dropship.toml")
    dropship = [sys.executable, "-m", "cli"]
    applied = run_ok([*dropship, "deployments", "apply", "--manifest", manifest], env)
    assert f"automation {ZOMBIE_AUTOMATION!r}" in applied

    # A run whose process dies: heartbeats every HEARTBEAT_SECONDS (as the deployments set), then SIGKILL.
    with (tmp_path / "orphan.log").open("w") as log:
        orphan = subprocess.Popen(
            [sys.executable, "-c", ORPHAN_FLOW],
            env={**env, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    webhook: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 180
        run_id = ""
        while not run_id:
            assert time.monotonic() < deadline and orphan.poll() is None, (tmp_path / "orphan.log").read_text()
            found = [line for line in (tmp_path / "orphan.log").read_text().splitlines() if line.startswith("RUN ")]
            run_id = found[0].split()[1] if found else ""
            time.sleep(0.5)
        time.sleep(3)  # its first heartbeat is emitted as the run starts
        os.killpg(orphan.pid, signal.SIGKILL)
        orphan.wait()
        killed = time.monotonic()

        # Meanwhile the webhook: a tag push starts one run of the release deployment.
        with temporary_settings({PREFECT_API_URL: stack.api_url}):
            WebhookSecrets(gitlab_token="stack-token").save("dropship-webhook-stack-test", overwrite=True)
        port = free_port()
        with (tmp_path / "webhook.log").open("wb") as log_file:
            webhook = subprocess.Popen(
                [
                    *dropship,
                    "webhook",
                    "--port",
                    str(port),
                    "--manifest",
                    manifest,
                    "--secrets-block",
                    "dropship-webhook-stack-test",
                ],
                env=env,
                cwd=ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, webhook, tmp_path / "webhook.log")
        body = json.dumps(
            {
                "object_kind": "tag_push",
                "ref": "refs/tags/v7.0.0",
                "checkout_sha": "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
                "after": "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
                "project": {"path_with_namespace": "acme/hello"},
            }
        ).encode()
        headers = {"X-Gitlab-Event": "Tag Push Hook", "X-Gitlab-Token": "stack-token"}
        first = httpx.post(f"{url}/hooks/release", headers=headers, content=body, timeout=30)
        assert first.status_code == 202, first.text
        again = httpx.post(f"{url}/hooks/release", headers=headers, content=body, timeout=30)
        assert again.status_code == 202 and again.json()["flow_run_id"] == first.json()["flow_run_id"]

        with temporary_settings({PREFECT_API_URL: stack.api_url}), get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(RELEASE_TAG)
            started = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
            )
            assert [(str(r.id), r.parameters.get("tag")) for r in started] == [(first.json()["flow_run_id"], "v7.0.0")]
            assert started[0].state is not None and started[0].state.is_scheduled()
            for run in started:  # no orchestrator worker serves the stack: nothing else would run it
                client.delete_flow_run(run.id)

            # The automation's window is 3 heartbeats; the services process evaluates it periodically.
            deadline = killed + 3 * HEARTBEAT_SECONDS + 120
            services_log = ""
            while True:
                state = client.read_flow_run(UUID(run_id)).state
                assert state is not None
                if state.is_crashed() or time.monotonic() > deadline:
                    services_log = (stack.home / "logs" / "services.log").read_text(errors="replace")
                    break
                time.sleep(2)
            assert state.is_crashed(), f"{state.name}: {state.message}; services log:\n{services_log[-2000:]}"
            assert "no heartbeat" in (state.message or "")
            print(f"zombie run crashed {time.monotonic() - killed:.0f} s after its process was killed")
    finally:
        if orphan.poll() is None:
            os.killpg(orphan.pid, signal.SIGKILL)
        if webhook is not None and webhook.poll() is None:
            os.killpg(webhook.pid, signal.SIGTERM)
            webhook.wait(timeout=30)
        from prefect.automations import Automation

        with temporary_settings({PREFECT_API_URL: stack.api_url}):  # the module's other tests run CLI releases
            try:
                Automation.read(name=ZOMBIE_AUTOMATION).delete()
            except ValueError:
                pass


# ---- the command's other paths -------------------------------------------------


def test_embedded_server_restarted_after_a_kill_and_stopped_by_sigterm(tmp_path: Path) -> None:
    import urllib.request

    running = start_stack(tmp_path / "home")
    try:
        assert running.healthy()
        with urllib.request.urlopen(f"http://127.0.0.1:{running.port}/ui-settings", timeout=10) as response:
            assert json.loads(response.read())["api_url"] == running.api_url
        (server,) = [pid for pid in descendants(running.process.pid) if pid in _children(running.process.pid)]
        os.kill(server, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not ("embedded server restarted" in running.log() and running.healthy()):
            time.sleep(0.5)
        assert "exited with code -9; restarting" in running.log() and running.healthy(), running.log()
        children = descendants(running.process.pid)
    finally:
        code = running.stop()
    assert code == 0
    time.sleep(0.5)
    assert [pid for pid in children if alive(pid)] == []


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_auth_string_file_must_be_root_only(tmp_path: Path) -> None:
    secret = tmp_path / "auth"
    secret.write_text("admin:s3cret\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600") as refused:
        read_auth_string(secret)
    assert "s3cret" not in str(refused.value)
    secret.chmod(0o600)
    assert read_auth_string(secret) == "admin:s3cret"
    secret.write_text("no-colon\n")
    with pytest.raises(ConfigError, match="user:password"):
        read_auth_string(secret)


def test_replicated_server_refuses_world_readable_auth_file_before_starting_anything(tmp_path: Path) -> None:
    secret = tmp_path / "auth"
    secret.write_text("admin:pw\n")
    secret.chmod(0o640)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "server",
            "start",
            "--home",
            str(tmp_path / "home"),
            "--port",
            str(free_port()),
            "--database",
            "postgresql+asyncpg://u@127.0.0.1:1/x",
            "--redis",
            "redis://127.0.0.1:1/0",
            "--auth-string-file",
            str(secret),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and "chmod 600" in done.stderr
    assert not (tmp_path / "home" / "logs" / "database-upgrade.log").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"database": "postgresql+asyncpg://x@h/db"}, "give both --database and --redis"),
        ({"database": "postgresql://x@h/db", "redis": "redis://h:6379/0"}, r"must be a postgresql\+asyncpg://"),
        ({"database": "postgresql+asyncpg://x@h/db", "redis": "redis://h:6379/0", "api_replicas": 0}, "at least 1"),
    ],
)
def test_stack_config_refuses_half_a_configuration(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StackConfig(home=tmp_path, **kwargs)


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    import shutil

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: systemd)")
    env_file = tmp_path / "server.env"
    env_file.write_text("DROPSHIP_DATABASE_URL=postgresql+asyncpg://prefect@127.0.0.1/prefect\n")
    dropship = str(Path(sys.executable).with_name("dropship"))
    units = systemd_units(
        dropship=dropship,
        home=Path("/var/lib/dropship/server"),
        env_file=env_file,
        host="127.0.0.1",
        port=4200,
        api_replicas=2,
        auth_string_file=Path("/etc/dropship/auth"),
    )
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    done = subprocess.run(
        [analyze, "verify", *(str(tmp_path / n) for n in units)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ExecStart={dropship} server start" in units["dropship-server.service"]
    assert "KillMode=mixed" in units["dropship-server.service"]
    assert "PREFECT_CLIENT_MAX_RETRIES=7" in units["dropship-worker.service"]


# ---- tasks/api: dropship's own API calls --------------------------------------


def test_api_call_waits_for_a_server_that_comes_up_late(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from dropship.prefect_server import LocalPrefectServer
    from tasks.api import call

    port = free_port()
    server = LocalPrefectServer(tmp_path / "prefect", port=port)
    retries: list[str] = []
    done = threading.Event()

    def start_late() -> None:
        # The server dies with the thread that started it (PR_SET_PDEATHSIG is
        # per thread), so this thread lives until the test is done.
        time.sleep(3.0)
        server.start()
        done.wait()

    starter = threading.Thread(target=start_late)
    starter.start()
    try:
        with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
            version = call(
                lambda client: client.api_version(),
                "reading the API version",
                patience=180,
                on_retry=lambda exc, pause: retries.append(type(exc).__name__),
            )
        assert version and retries and set(retries) <= {"ConnectError", "ReadError", "RemoteProtocolError"}
    finally:
        done.set()
        starter.join()
        server.stop()


def test_api_call_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.api import call

    port = free_port()
    with (
        temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}),
        pytest.raises(ApiUnavailable, match="kept failing for 2 s while reading build run 42"),
    ):
        call(lambda client: client.api_version(), "reading build run 42", patience=2)


def test_build_machines_workers_get_the_retry_settings(tmp_path: Path) -> None:
    """The worker env file a machine sources carries Prefect's client retries; a value
    the provider sets explicitly wins."""
    from dropship.machines.userdata import WorkerSpec, render

    worker = WorkerSpec(
        api_url="http://127.0.0.1:4200/api",
        pool="dropship-builders",
        queue="q",
        launcher=["true"],
        env={"PREFECT_CLIENT_MAX_RETRIES": "2"},
    )
    script = render(host_private_key="k", host_public_key="p", authorized_key="a", work_dir="/w", worker=worker)
    (tmp_path / "ud.sh").write_text(script)
    subprocess.run(
        ["sh", str(tmp_path / "ud.sh")],
        env={"DROPSHIP_MACHINE_ROOT": str(tmp_path / "root"), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    env = (tmp_path / "root" / "etc/dropship/worker.env").read_text()
    assert "export PREFECT_CLIENT_RETRY_EXTRA_CODES=500,504\n" in env
    assert "export PREFECT_CLIENT_MAX_RETRIES=2\n" in env and "PREFECT_CLIENT_MAX_RETRIES=7" not in env


def test_processes_dropship_starts_beat_faster_than_the_zombie_window() -> None:
    """Prefect's default heartbeat (180 s) is longer than the zombie automation's 90 s window:
    a release run from the CLI would be crashed mid-release on a server with the automation."""
    from unittest import mock

    from prefect.settings import Settings

    from dropship.orchestrator import CLIENT_RETRY_ENV, HEARTBEAT_SECONDS, apply_client_retry_env
    from tasks.resources import zombie_automation

    with mock.patch.dict(os.environ):  # the session's other tests keep their environment
        for name in CLIENT_RETRY_ENV:
            os.environ.pop(name, None)
        assert Settings().flows.heartbeat_frequency == 180, "Prefect's default, which the automation would not survive"
        apply_client_retry_env()
        assert Settings().flows.heartbeat_frequency == HEARTBEAT_SECONDS
        assert zombie_automation().trigger.within.total_seconds() >= 3 * Settings().flows.heartbeat_frequency


def test_client_env_skips_csrf_tokens_only_where_the_server_does_not_want_them(tmp_path: Path) -> None:
    """Each new Prefect client asks for a CSRF token before its first write; dropship's processes
    skip that round trip only when the server answers that its CSRF protection is off."""
    from dropship.orchestrator import client_env, csrf_enforced
    from dropship.prefect_server import LocalPrefectServer

    authed = LocalPrefectServer(tmp_path / "authed", extra_env={"PREFECT_SERVER_API_AUTH_STRING": "admin:pw"})
    guarded = LocalPrefectServer(tmp_path / "guarded", extra_env={"PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "true"})
    with authed, guarded:
        assert client_env(authed.api_url, "admin:pw") == {"PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "false"}
        assert csrf_enforced(authed.api_url) is None, "a 401 is no answer: Prefect's default stands"
        assert csrf_enforced(guarded.api_url) is True
        assert client_env(guarded.api_url) == {}
        # a client told to skip tokens is refused by the guarded server: why the probe is needed
        env = {**os.environ, "PREFECT_API_URL": guarded.api_url, "PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "false"}
        refused = subprocess.run(
            [
                sys.executable,
                "-c",
                "from prefect import get_client\nfrom prefect.client.schemas.actions import WorkPoolCreate\n"
                "with get_client(sync_client=True) as c:\n"
                "    c.create_work_pool(WorkPoolCreate(name='csrf-probe', type='process'))",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert refused.returncode != 0 and "403" in refused.stderr + refused.stdout, refused.stderr[-800:]
    # no answer at all: Prefect's default (ask for tokens)
    assert csrf_enforced(f"http://127.0.0.1:{free_port()}/api", timeout=2) is None
    assert client_env(f"http://127.0.0.1:{free_port()}/api") == {}


def test_the_csrf_probe_follows_no_redirect_and_sends_its_credentials_nowhere_else() -> None:
    """A proxy in front may redirect to a login page on another host: the probe's Authorization
    header (the API's auth string) must not go there, and a redirect is no answer."""
    import http.server

    seen: list[str | None] = []

    class Login(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(422)
            self.end_headers()
            self.wfile.write(b'{"detail": "CSRF protection is disabled."}')

        def log_message(self, format: str, *args: object) -> None:
            pass

    login = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Login)

    class Proxy(Login):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{login.server_address[1]}/login")
            self.end_headers()

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    for server in (login, proxy):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from dropship.orchestrator import csrf_enforced

        assert csrf_enforced(f"http://127.0.0.1:{proxy.server_address[1]}/api", "admin:s3cret") is None
        assert seen == [], "the redirect was not followed"
        # the login page itself answers like Prefect: the same probe there says "disabled"
        assert csrf_enforced(f"http://127.0.0.1:{login.server_address[1]}/api", "admin:s3cret") is False
        assert seen and seen[-1] is not None and seen[-1].startswith("Basic ")
    finally:
        for server in (login, proxy):
            server.shutdown()
            server.server_close()
