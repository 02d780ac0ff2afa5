"""Schedules do create runs, and a real worker completes them.

On a fresh `prefect server start` (its scheduler service as deployed), the
project's own deployments are applied with the reaper every 30 s; a process
worker serves the orchestrator pool. The test waits for a run the scheduler
created (not one we started) to complete. With prefect 3.8.8 and SQLAlchemy
2.1 the scheduler failed on every pass and no run ever appeared.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropship.prefect_server import LocalPrefectServer
from tests.servers import own_prefect_server, stop_group
from tests.support import run_ok

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[LocalPrefectServer, dict[str, str]]]:
    with own_prefect_server(tmp_path) as pair:
        yield pair


def test_the_reap_schedule_creates_runs_that_a_worker_completes(
    server: tuple[LocalPrefectServer, dict[str, str]],
    tmp_path: Path,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings

    prefect_server, env = server
    manifest = tmp_path / "dropship.toml"
    manifest.write_text((ROOT / "examples/hello/dropship.toml").read_text())
    run_ok(
        [sys.executable, "-m", "cli", "deployments", "apply", "--manifest", str(manifest)]
        + ["--reap-minutes", "0.5", "--workdir", str(tmp_path / "state")],
        env,
    )
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "dropship-orchestrator", "--type", "process"],
        env={**env, "PREFECT_WORKER_QUERY_SECONDS": "2"},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started = time.monotonic()
    completed = []
    try:
        with temporary_settings({PREFECT_API_URL: prefect_server.api_url}), get_client(sync_client=True) as client:
            reap = client.read_deployment_by_name("reap/reap")
            while time.monotonic() - started < 300 and not completed:
                ended = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        deployment_id=FlowRunFilterDeploymentId(any_=[reap.id]),
                        state=FlowRunFilterState(
                            type=FlowRunFilterStateType(
                                any_=[StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]
                            )
                        ),
                    )
                )
                completed = [r for r in ended if r.state is not None and r.state.is_completed()]
                failed = [r for r in ended if r.state is not None and not r.state.is_completed()]
                assert not failed, f"a scheduled reap run ended {failed[0].state.name}: {failed[0].state.message}"
                time.sleep(2)
    finally:
        stop_group(worker)
        log.close()
    assert completed, (
        f"no scheduled run completed in 300 s; worker log:\n{(tmp_path / 'worker.log').read_text()[-2000:]}"
    )
    run = completed[0]
    print(
        f"\nFIGURE schedule: first scheduled reap run completed {time.monotonic() - started:.0f} s after the worker started"
    )
    assert run.auto_scheduled, "the scheduler created this run, not the test"
    assert run.parameters.get("workdir") == str(tmp_path / "state")
