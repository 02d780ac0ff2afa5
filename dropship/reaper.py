"""The backstop for machines a release left behind.

Teardown runs in the flow's `finally` and its failure/crash/cancellation
hooks, but a process killed with SIGKILL (or a machine that died with its
host) runs neither. The reaper, on a schedule, deletes every machine tagged
`dropship` whose run is finished (or unknown to Prefect), or that is older
than a TTL whatever its run says: a run still "Running" after the TTL has
lost its orchestrator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from dropship.machines import BASE_TAG, RUN_TAG_PREFIX, Machine, Provider


@dataclass(frozen=True)
class Reaped:
    machine: Machine
    reason: str


def run_id_of(machine: Machine) -> str | None:
    return next((t[len(RUN_TAG_PREFIX):] for t in machine.tags if t.startswith(RUN_TAG_PREFIX)), None)


def reap(
    provider: Provider,
    *,
    run_finished: Callable[[str], bool],
    ttl: timedelta,
    now: datetime | None = None,
) -> list[Reaped]:
    """Delete what should not be running any more; return what was deleted and why."""
    now = now or datetime.now(timezone.utc)
    reaped = []
    for machine in provider.list(BASE_TAG):
        run_id = run_id_of(machine)
        age = now - machine.created_at
        if run_id is None:
            reason = "no run tag" if age > ttl else ""
        elif run_finished(run_id):
            reason = f"run {run_id} is over"
        elif age > ttl:
            reason = f"older than {ttl} while run {run_id} still claims to run"
        else:
            reason = ""
        if reason:
            provider.delete(machine.id)
            reaped.append(Reaped(machine, reason))
    alive = {run_id_of(m) for m in provider.list(BASE_TAG)}
    for run_id in provider.run_leftovers():  # e.g. a run's SSH key, once its run is over and its machines gone
        if run_id not in alive and run_finished(run_id):
            provider.release_run(run_id)
    return reaped
