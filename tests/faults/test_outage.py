"""The Prefect API down while a release waits for a build: a short outage
(15 s) is waited through, a long one is named with the API's address."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropship.errors import BuildFailed
from dropship.prefect_server import LocalPrefectServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalPrefectServer]:
    server = LocalPrefectServer(tmp_path / "prefect")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_the_build_wait_rides_out_a_short_outage_and_names_a_long_one(
    server: LocalPrefectServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Completed, Running

    import tasks.build
    from tasks.build import _wait

    @flow(name="build")
    def stand_in() -> None:
        pass

    with temporary_settings({PREFECT_API_URL: server.api_url}):
        with get_client(sync_client=True) as client:
            run = client.create_flow_run(stand_in, state=Running())
        port = server.port
        outage: dict[str, float] = {}
        test_over = threading.Event()

        def restart_then_finish() -> None:
            time.sleep(2)
            server.stop()
            outage["down"] = time.monotonic()
            time.sleep(15)
            server.start(port)
            outage["up"] = time.monotonic()
            # settings are per thread (context variables): name the server again here
            with temporary_settings({PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
                client.set_flow_run_state(run.id, Completed(), force=True)
            # The restarted server dies with the thread that started it
            # (PR_SET_PDEATHSIG is per thread): this one lives until the test ends.
            test_over.wait()

        # The outage lasts 15 s plus the server's own restart (a minute or two on a busy host):
        # the wait must ride all of it out.
        monkeypatch.setattr(tasks.build, "API_OUTAGE_SECONDS", 900.0)
        helper = threading.Thread(target=restart_then_finish, daemon=True)
        helper.start()
        finished = _wait(run.id, "amd64-deb", "q", timeout=900)
        assert finished.state is not None and finished.state.is_completed()
        print(f"\nFIGURE prefect-down-15s: waited through {outage['up'] - outage['down']:.0f} s of outage")

        with get_client(sync_client=True) as client:
            other = client.create_flow_run(stand_in, state=Running())
        monkeypatch.setattr(tasks.build, "API_OUTAGE_SECONDS", 10.0)
        server.stop()
        started = time.monotonic()
        with pytest.raises(BuildFailed, match=f"the Prefect API at {server.api_url} was unreachable for") as failure:
            _wait(other.id, "amd64-deb", "q", timeout=900)
        print(f"FIGURE prefect-down-long: failed {time.monotonic() - started:.0f} s into the outage: {failure.value}")
        assert time.monotonic() - started < 180
        test_over.set()
        helper.join(timeout=5)
