"""A built target is one task run; its provisioning and collecting keep their retries (tasks/cache.py)."""

from __future__ import annotations

import pytest


def test_a_step_is_tried_again_after_a_failure_and_its_last_failure_is_raised(prefect_server: str) -> None:
    from prefect import flow

    from tasks.cache import _attempts

    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError(f"refused #{len(calls)}")
        return "up"

    def broken() -> str:
        calls.append(1)
        raise OSError("still refused")

    @flow(name="attempts")
    def run(fn_name: str, attempts: int) -> str:
        return _attempts("provisioning", "amd64-deb", attempts, 0.01, {"flaky": flaky, "broken": broken}[fn_name])

    assert run("flaky", 3) == "up" and len(calls) == 3
    calls.clear()
    with pytest.raises(OSError, match="still refused"):
        run("broken", 2)
    assert len(calls) == 2, "tried exactly `attempts` times"
    calls.clear()
    with pytest.raises(OSError, match="refused #1"):
        run("flaky", 1)
    assert len(calls) == 1
