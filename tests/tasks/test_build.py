"""The build waits of a release share one read of their runs per interval (tasks/build.py)."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dropship.prefect_server import LocalPrefectServer

pytestmark = pytest.mark.e2e

WAITERS = 8


def test_build_waits_share_one_flow_run_query_per_interval(tmp_path: Path) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Completed, Running

    from tasks.build import WAIT_POLL_SECONDS, _wait

    @flow(name="build")
    def stand_in() -> None:
        pass

    # INFO: uvicorn logs every request, so the server itself counts the queries.
    server = LocalPrefectServer(tmp_path / "prefect", extra_env={"PREFECT_SERVER_LOGGING_LEVEL": "INFO"})
    server.start()
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            with get_client(sync_client=True) as client:
                runs = [client.create_flow_run(stand_in, state=Running()) for _ in range(WAITERS)]
            finished: dict[Any, Any] = {}
            errors: list[BaseException] = []

            def wait(run_id: Any) -> None:
                try:  # settings are per thread, as in a release's task threads
                    with temporary_settings({PREFECT_API_URL: server.api_url}):
                        finished[run_id] = _wait(run_id, "t", "q", timeout=300)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            log = tmp_path / "prefect" / "server.log"
            before = _requests(log, FILTER)
            tokens_before = _requests(log, CSRF)
            started = time.monotonic()
            threads = [threading.Thread(target=wait, args=(run.id,)) for run in runs]
            for thread in threads:
                thread.start()
            time.sleep(6 * WAIT_POLL_SECONDS)
            tokens = _requests(log, CSRF) - tokens_before  # before this test's own client below
            with get_client(sync_client=True) as client:
                for run in runs:
                    client.set_flow_run_state(run.id, Completed(), force=True)
            for thread in threads:
                thread.join(timeout=60)
            waited = time.monotonic() - started
        assert not errors, errors
        assert all(finished[run.id].state.is_completed() for run in runs)
        queries = _requests(log, FILTER) - before
    finally:
        server.stop()
    # One query per interval for all the waits, plus one when each wait starts (its run
    # is not in the last read yet): a query per wait and interval would be WAITERS times more.
    intervals = waited / (0.9 * WAIT_POLL_SECONDS)
    print(f"\nFIGURE shared-wait: {queries} flow_runs/filter queries for {WAITERS} waits over {waited:.1f} s")
    assert queries <= WAITERS + intervals + 1, (queries, waited)
    assert queries < WAITERS * intervals / 2
    # ... through one client: a new client per read asked the server for a CSRF token each time
    assert tokens <= 1, tokens


FILTER = '"POST /api/flow_runs/filter HTTP'
CSRF = '"GET /api/csrf-token'


def _requests(log: Path, what: str) -> int:
    return len(re.findall(re.escape(what), log.read_text(errors="replace")))
