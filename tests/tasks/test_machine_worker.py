"""The machine's launcher against a real Prefect server: it runs the worker again while its run waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import pytest

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


def test_a_poll_that_misses_the_run_is_tried_again_until_the_worker_takes_it(
    prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run is due beyond the worker's 10 s prefetch: the first polls find nothing (as during
    an API restart), and the launcher starts the worker again until one takes it."""
    from tasks import machine_worker
    from tasks.resources import BUILDERS_POOL

    monkeypatch.setattr(machine_worker, "RETRY_SECONDS", 1.0)
    monkeypatch.setattr(machine_worker, "PICKUP_SECONDS", 60.0)
    run_id = _build_run(tmp_path, "launcher-retry", 14)
    assert machine_worker.serve(run_id, BUILDERS_POOL, "launcher-retry") == 0
    assert not _state(run_id).is_scheduled(), "the worker took the run"
    starts = capsys.readouterr().out.count(f"running the worker for build run {run_id}")
    assert starts >= 2, f"the worker ran {starts} time(s): the first poll should have missed the run"


def test_a_run_no_poll_can_take_makes_the_launcher_give_up(
    prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks import machine_worker
    from tasks.resources import BUILDERS_POOL

    monkeypatch.setattr(machine_worker, "RETRY_SECONDS", 0.5)
    monkeypatch.setattr(machine_worker, "PICKUP_SECONDS", 3.0)
    run_id = _build_run(tmp_path, "launcher-never", 3600)
    assert machine_worker.serve(run_id, BUILDERS_POOL, "launcher-never") == 1
    assert _state(run_id).is_scheduled()
    assert f"no worker took build run {run_id} in 3 s; giving up" in capsys.readouterr().out
