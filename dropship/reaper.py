"""The backstop for what a release left behind.

Teardown runs in the flow's `finally` and its failure/crash/cancellation
hooks, but a process killed with SIGKILL (or a machine that died with its
host) runs neither. The reaper, on a schedule, deletes every machine tagged
`dropship` whose run is over (Completed, Failed, Crashed, Cancelled) at once;
a machine whose run Prefect does not know, or whose run still claims to run,
only after a TTL. It also removes what a dead run keeps on the orchestrator's
disk that must not outlive it: the per-run SSH private key (`ssh/`) and the
signing keyring (`gnupg/`, with its gpg-agent), and the builders' work queues
no machine serves any more.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dropship.machines import BASE_TAG, RUN_TAG_PREFIX, Machine, Provider
from dropship.run_folder import GNUPG_DIR, SECRET_DIRS
from dropship.signing import remove_gnupg_home


@dataclass(frozen=True)
class Reaped:
    machine: Machine
    reason: str


def run_id_of(machine: Machine) -> str | None:
    return next((t[len(RUN_TAG_PREFIX) :] for t in machine.tags if t.startswith(RUN_TAG_PREFIX)), None)


def reap(
    provider: Provider,
    *,
    run_finished: Callable[[str], bool | None],
    ttl: timedelta,
    now: datetime | None = None,
) -> list[Reaped]:
    """Delete what should not be running any more; return what was deleted and why.

    `run_finished(run_id)`: True when the run is over, False while it runs,
    None when Prefect does not know it (then only the TTL deletes its machines).
    """
    now = now or datetime.now(UTC)
    reaped = []
    for machine in provider.list(BASE_TAG):
        run_id = run_id_of(machine)
        age = now - machine.created_at
        finished = run_finished(run_id) if run_id is not None else None
        if run_id is None:
            reason = "no run tag" if age > ttl else ""
        elif finished:
            reason = f"run {run_id} is over"
        elif age > ttl:
            reason = (
                f"older than {ttl} while run {run_id} still claims to run"
                if finished is False
                else f"older than {ttl} and run {run_id} is unknown to Prefect"
            )
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


def sweep_run_secrets(runs_dir: Path, run_finished: Callable[[str], bool | None]) -> list[str]:
    """Remove the secret folders of every run under `runs_dir` that is over or unknown; return `<id>/<folder>`s."""
    swept: list[str] = []
    if not runs_dir.is_dir():
        return swept
    for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        present = [name for name in SECRET_DIRS if (run_dir / name).exists() or (run_dir / name).is_symlink()]
        if not present or run_finished(run_dir.name) is False:
            continue
        for name in present:
            if name == GNUPG_DIR:
                remove_gnupg_home(run_dir / name)
            else:
                shutil.rmtree(run_dir / name, ignore_errors=True)
            swept.append(f"{run_dir.name}/{name}")
    return swept


def stale_queues(
    queues: dict[str, datetime], machines: set[str], busy: set[str], *, now: datetime, grace: timedelta
) -> list[str]:
    """Work queues (name -> created) that no machine serves, with no open run, older than `grace`."""
    return sorted(
        name
        for name, created in queues.items()
        if name != "default" and name not in machines and name not in busy and now - created > grace
    )


def orphaned(
    runs: dict[str, datetime | None], *, started: dict[str, datetime], now: datetime, silence: timedelta, ttl: timedelta
) -> list[str]:
    """Running runs whose orchestrator vanished: last heartbeat (run id -> time, None if it never sent one)
    older than `silence`, or, with no heartbeat at all, started longer than `ttl` ago."""
    lost = []
    for run_id, beat in runs.items():
        if beat is not None:
            if now - beat > silence:
                lost.append(run_id)
        elif now - started.get(run_id, now) > ttl:
            lost.append(run_id)
    return sorted(lost)
