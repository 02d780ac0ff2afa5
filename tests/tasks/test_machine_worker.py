"""The machine's launcher against a real Prefect server: it runs the worker again while its run waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from prefect.states import State


def _build_run(tmp_path: Path, queue: str, in_seconds: float) -> UUID:
    """A build run on `queue`, due in `in_seconds`, whose build fails at once (no archive)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    from tasks.build import ensure_build_deployment
    from tasks.resources import BUILD

    ensure_build_deployment.fn()
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(BUILD.full_name)
        run = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={
                "target": "t",
                "workspace": str(tmp_path / "w"),
                "archive": str(tmp_path / "missing.tar.gz"),
                "command": ["true"],
                "artifacts": [],
                "version": "0",
            },
            state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(seconds=in_seconds)),
            work_queue_name=queue,
        )
    return run.id


def _state(run_id: UUID) -> State:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    assert state is not None
    return state


def _launcher(tmp_path: Path, queue: str, run_id: UUID, retry: float, patience: float) -> tuple[int, str]:
    """The launcher as a machine runs it: its own process, the run's id written into its pipe."""
    import os
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    from tasks.resources import BUILDERS_POOL

    pipe = tmp_path / "build-run"
    os.mkfifo(pipe)
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    argv = [sys.executable, "-m", "tasks.machine_worker", "--pool", BUILDERS_POOL, "--queue", queue]
    with subprocess.Popen(
        [*argv, "--handover", str(pipe), "--retry-seconds", str(retry), "--pickup-seconds", str(patience)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as launcher:
        pipe.write_text(f"{run_id}\n")
        output, _ = launcher.communicate(timeout=180)
    return launcher.returncode, output


def test_a_poll_that_misses_the_run_is_tried_again_until_the_worker_takes_it(
    prefect_server: str, tmp_path: Path
) -> None:
    """The run is due beyond the worker's 10 s prefetch: the first polls find nothing (as during
    an API restart), and the launcher starts the worker again until one takes it."""
    run_id = _build_run(tmp_path, "launcher-retry", 14)
    status, output = _launcher(tmp_path, "launcher-retry", run_id, retry=1.0, patience=60.0)
    assert status == 0, output
    assert not _state(run_id).is_scheduled(), "the worker took the run"
    starts = output.count(f"running the worker for build run {run_id}")
    assert starts >= 2, f"the worker ran {starts} time(s): the first poll should have missed the run"


def test_a_run_no_poll_can_take_makes_the_launcher_give_up(prefect_server: str, tmp_path: Path) -> None:
    run_id = _build_run(tmp_path, "launcher-never", 3600)
    status, output = _launcher(tmp_path, "launcher-never", run_id, retry=0.5, patience=3.0)
    assert status == 1, output
    assert _state(run_id).is_scheduled()
    assert f"no worker took build run {run_id} in 3 s; giving up" in output
