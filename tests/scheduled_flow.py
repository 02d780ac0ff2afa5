"""A trivial flow the orchestrator tests schedule; a worker imports it as `tests.scheduled_flow:tick`."""

from __future__ import annotations

from prefect import flow


@flow(name="stack-tick")
def tick() -> str:
    return "tick"
