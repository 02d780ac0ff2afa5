"""The reaper flow: what a dead or finished release left behind, deleted.

- machines of runs that are over (Completed, Failed, Crashed, Cancelled) at
  once; machines of runs Prefect doesn't know, or still "Running", after the TTL;
- release runs whose orchestrator vanished (Running, last heartbeat older than
  90 s, or no heartbeat and older than the TTL) are marked Crashed first, so
  their machines go in the same pass (the zombie automation does the marking
  where it is installed: it needs Prefect's event triggers);
- the builders' work queues no machine serves any more;
- per-run SSH private keys and GnuPG homes (and their agents) of runs that are over.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkQueueFilter,
    WorkQueueFilterName,
)
from prefect.client.schemas.objects import StateType
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed

from blocks.digitalocean import DigitalOceanCredentials
from blocks.values import require_block
from dropship.machines.factory import make_provider
from dropship.reaper import orphaned, run_id_of, stale_queues, sweep_run_secrets
from dropship.reaper import reap as reap_machines
from dropship.run_folder import runs_dir
from tasks.machines import cancel_open_build_runs
from tasks.resources import BUILDERS_POOL, ZOMBIE_AUTOMATION
from tasks.settings import default_workdir

HEARTBEAT_SILENCE = timedelta(seconds=90)
QUEUE_GRACE = timedelta(minutes=10)
HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"


def run_finished(run_id: str) -> bool | None:
    """True when Prefect says the run ended, False while it runs, None when it does not know it."""
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
    except (ObjectNotFound, ValueError):
        return None
    return run.state is None or run.state.is_final()


def _zombie_automation_installed() -> bool:
    with get_client(sync_client=True) as client:
        try:
            return bool(client.read_automations_by_name(ZOMBIE_AUTOMATION))
        except ObjectNotFound:
            return False


def _last_heartbeat(client: object, run_id: str, since: datetime) -> datetime | None:
    page = client.read_events(  # type: ignore[attr-defined]
        EventFilter(
            occurred=EventOccurredFilter.model_validate({"since": since}),  # pydantic makes it a DateTime
            event=EventNameFilter(name=[HEARTBEAT_EVENT]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
        ),
        limit=50,
    )
    times = [e.occurred for e in page.events]
    return max(times) if times else None


@task(
    name="crash-orphaned-releases",
    task_run_name="crash orphaned releases",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=5,
)
def crash_orphaned_releases(
    ttl_minutes: float, silence_seconds: float = HEARTBEAT_SILENCE.total_seconds()
) -> list[str]:
    """Mark Running release runs Crashed whose orchestrator stopped sending heartbeats."""
    if _zombie_automation_installed():
        return []
    now = datetime.now(UTC)
    ttl = timedelta(minutes=ttl_minutes)
    with get_client(sync_client=True) as client:
        running = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["release"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
        )
        beats = {str(r.id): _last_heartbeat(client, str(r.id), now - ttl) for r in running}
        started = {str(r.id): r.start_time or r.created or now for r in running}
        lost = orphaned(beats, started=started, now=now, silence=timedelta(seconds=silence_seconds), ttl=ttl)
        for run_id in lost:
            beat = beats[run_id]
            why = f"no heartbeat since {beat:%H:%M:%S} UTC" if beat else f"no heartbeat in {ttl}"
            client.set_flow_run_state(
                UUID(run_id), Crashed(message=f"the reaper found its orchestrator gone ({why})"), force=True
            )
    logger = get_run_logger()
    for run_id in lost:
        logger.info("marked release run %s Crashed: its orchestrator vanished", run_id)
    return lost


def _remove_stale_queues(machine_names: set[str], grace: timedelta) -> list[str]:
    now = datetime.now(UTC)
    with get_client(sync_client=True) as client:
        try:
            queues = client.read_work_queues(work_pool_name=BUILDERS_POOL)
        except ObjectNotFound:
            return []
        open_runs = client.read_flow_runs(
            work_queue_filter=WorkQueueFilter(name=WorkQueueFilterName(any_=[q.name for q in queues] or ["-"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING])
                )
            ),
        )
        busy = {r.work_queue_name for r in open_runs if r.work_queue_name}
        created = {q.name: (q.created or now) for q in queues}
        stale = stale_queues(created, machine_names, busy, now=now, grace=grace)
        by_name = {q.name: q for q in queues}
        for name in stale:
            try:
                client.delete_work_queue_by_id(by_name[name].id)
            except ObjectNotFound:
                pass
    return stale


@task(name="reap", task_run_name="reap", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def reap_task(
    provider: str, workdir: str, credentials: str, ttl_minutes: float, queue_grace_minutes: float = 10.0
) -> list[str]:
    settings = require_block(DigitalOceanCredentials, credentials).settings() if provider == "digitalocean" else None
    machines = make_provider(provider, Path(workdir), settings)
    reaped = reap_machines(machines, run_finished=run_finished, ttl=timedelta(minutes=ttl_minutes))
    logger = get_run_logger()
    for item in reaped:
        logger.info("deleted %s (%s): %s", item.machine.name, item.machine.id, item.reason)
        run_id = run_id_of(item.machine)
        if run_id:
            cancel_open_build_runs(run_id)
    done = [f"{item.machine.name}: {item.reason}" for item in reaped]
    for name in _remove_stale_queues({m.name for m in machines.list()}, timedelta(minutes=queue_grace_minutes)):
        logger.info("removed work queue %s: no machine serves it", name)
        done.append(f"queue {name}: no machine serves it")
    for swept in sweep_run_secrets(runs_dir(workdir), run_finished):
        logger.info("removed %s: its run is over", swept)
        done.append(f"run secrets {swept}: run is over")
    if not done:
        logger.info("nothing to reap")
    return done


@flow(name="reap", log_prints=True)
def reap(
    provider: str = "local",
    workdir: str | None = None,
    credentials: str = "dropship-digitalocean",
    ttl_minutes: float = 120.0,
    heartbeat_silence_seconds: float = HEARTBEAT_SILENCE.total_seconds(),
    queue_grace_minutes: float = QUEUE_GRACE.total_seconds() / 60,
) -> list[str]:
    """Crash orphaned release runs, then delete machines, queues and run secrets whose run is over.

    A Running release whose last heartbeat is older than `heartbeat_silence_seconds`
    (or that never sent one and is older than `ttl_minutes`) has lost its
    orchestrator; a builders' queue no machine serves is removed after
    `queue_grace_minutes`.
    """
    crashed = crash_orphaned_releases(ttl_minutes, heartbeat_silence_seconds)
    return [f"run {r}: crashed, orchestrator gone" for r in crashed] + reap_task(
        provider, workdir or str(default_workdir()), credentials, ttl_minutes, queue_grace_minutes
    )
