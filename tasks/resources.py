"""What dropship keeps on a Prefect server, and the names it finds it by.

The work pools, the global concurrency limits, the zombie-run automation and
the `build` deployment, each with an `ensure_*` that creates it when missing
and leaves it as it is otherwise (an operator's later change to a limit is
kept). The release flow ensures what a run needs (the build deployment, the
machines limit); `dropship deployments apply` (`deployments.apply`) ensures
everything. Both import this module, so the names are written once.
"""

from __future__ import annotations

import contextlib
import importlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.workers.process import ProcessWorker

from dropship.orchestrator import HEARTBEAT_SECONDS

ORCHESTRATOR_POOL = "dropship-orchestrator"
"""Process work pool of the orchestrator: releases, promotion, rollback, reaping."""
BUILDERS_POOL = "dropship-builders"
"""Process work pool the build machines' workers serve, one work queue per machine."""
PUBLISH_LIMIT = "dropship-publish"
MACHINES_LIMIT = "dropship-machines"
DEFAULT_MACHINES = 8
"""Slots of MACHINES_LIMIT when a release or `deployments apply` creates it."""
ZOMBIE_AUTOMATION = "dropship: crash zombie flow runs"


@dataclass(frozen=True)
class DeploymentSpec:
    flow: str
    """Flow name (the deployment is `<flow>/<name>`)."""
    name: str
    entrypoint: str
    """Module path: workers import the installed dropship, no source is pulled."""
    pool: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None
    timezone: str | None = None
    interval_minutes: float | None = None

    @property
    def full_name(self) -> str:
        return f"{self.flow}/{self.name}"


BUILD = DeploymentSpec(
    "build",
    "build",
    "flows.build.build",
    BUILDERS_POOL,
    "One target's build, run by the worker on that target's machine (started by the release flow).",
)
"""Also ensured by every release run, so a server without `apply` still works."""


POOLS = {
    ORCHESTRATOR_POOL: "dropship orchestrator: releases, promotion, rollback, reaping",
    BUILDERS_POOL: "dropship build machines; one work queue per machine",
}


@dataclass
class Applied:
    """What apply did to each thing, in order; `echo` shows each line as it happens (the CLI's progress)."""

    lines: list[str] = field(default_factory=list)
    echo: Callable[[str], None] | None = None

    def note(self, what: str, thing: str) -> None:
        line = f"{what:<9} {thing}"
        self.lines.append(line)
        if self.echo is not None:
            self.echo(line)


def heartbeat_env() -> dict[str, str]:
    return {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS)}


def ensure_pool(name: str, applied: Applied) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            applied.note("unchanged", f"work pool {name}")
        except ObjectNotFound:
            try:
                client.create_work_pool(
                    WorkPoolCreate(
                        name=name,
                        type="process",
                        description=POOLS[name],
                        base_job_template=ProcessWorker.get_default_base_job_template(),
                    )
                )
            except ObjectAlreadyExists:
                applied.note("unchanged", f"work pool {name}")  # a concurrent release made it
                return
            applied.note("created", f"work pool {name}")


def ensure_concurrency_limit(name: str, limit: int) -> bool:
    """Create the global concurrency limit if it is missing; True if this call created it.

    An existing limit is left as an operator set it.
    """
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return False
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
        except ObjectAlreadyExists:
            return False  # another release created it meanwhile
    return True


def ensure_limits(applied: Applied, machines: int) -> None:
    for name, limit in ((PUBLISH_LIMIT, 1), (MACHINES_LIMIT, machines)):
        if ensure_concurrency_limit(name, limit):
            applied.note("created", f"concurrency limit {name} ({limit})")
        else:
            applied.note("unchanged", f"concurrency limit {name}")


def zombie_automation() -> Any:
    """Prefect's recipe for self-hosted servers: a running flow run that misses
    heartbeats for three periods is marked Crashed, which runs the release
    flow's crash hook (teardown) and lets the reaper take its machines."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=ZOMBIE_AUTOMATION,
        description="Marks flow runs Crashed when their heartbeats stop (dropship deployments apply).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=3 * HEARTBEAT_SECONDS),
        ),
        actions=[
            ChangeFlowRunState(
                name=None,
                state=StateType.CRASHED,
                message="no heartbeat for 3 periods: the run's process is gone",
                force=False,
            )
        ],
    )


def ensure_automation(applied: Applied) -> None:
    from prefect.automations import Automation

    try:
        found = Automation.read(name=ZOMBIE_AUTOMATION)
        assert isinstance(found, Automation), "called from synchronous code"
        applied.note("unchanged", f"automation {ZOMBIE_AUTOMATION!r}")
    except ValueError:
        zombie_automation().create()
        applied.note("created", f"automation {ZOMBIE_AUTOMATION!r}")


def _flow(entrypoint: str) -> Any:
    module, name = entrypoint.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _schedules(spec: DeploymentSpec) -> list[Any]:
    from prefect.schedules import Cron, Interval

    if spec.cron:
        return [Cron(spec.cron, timezone=spec.timezone)]
    if spec.interval_minutes:
        return [Interval(timedelta(minutes=spec.interval_minutes))]
    return []


def _job_variables(spec: DeploymentSpec) -> dict[str, Any]:
    return {"env": heartbeat_env()} if spec.pool == ORCHESTRATOR_POOL else {}


def _wanted(spec: DeploymentSpec) -> tuple[Any, ...]:
    schedules: list[tuple[Any, ...]] = []
    if spec.cron:
        schedules.append(("cron", spec.cron, spec.timezone))
    if spec.interval_minutes:
        schedules.append(("interval", spec.interval_minutes * 60))
    return (spec.parameters, spec.pool, spec.entrypoint, spec.description, schedules, _job_variables(spec))


def _actual(deployment: Any) -> tuple[Any, ...]:
    schedules: list[tuple[Any, ...]] = []
    for item in deployment.schedules:
        schedule = item.schedule
        if getattr(schedule, "cron", None):
            schedules.append(("cron", schedule.cron, schedule.timezone))
        elif getattr(schedule, "interval", None):
            schedules.append(("interval", schedule.interval.total_seconds()))
    return (
        deployment.parameters,
        deployment.work_pool_name,
        deployment.entrypoint,
        deployment.description,
        schedules,
        deployment.job_variables or {},
    )


def ensure_deployment(spec: DeploymentSpec, applied: Applied) -> None:
    """Upsert `spec`; a deployment already as wanted is not touched (its schedule keeps its planned runs)."""
    from prefect.types.entrypoint import EntrypointType

    with get_client(sync_client=True) as client:
        try:
            existing = client.read_deployment_by_name(spec.full_name)
        except ObjectNotFound:
            existing = None
    if existing is not None and _actual(existing) == _wanted(spec):
        applied.note("unchanged", f"deployment {spec.full_name}")
        return
    # deploy() prints a banner and a table with rich; dropship says what it did in its own words
    with contextlib.redirect_stdout(io.StringIO()):
        _flow(spec.entrypoint).deploy(
            name=spec.name,
            work_pool_name=spec.pool,
            entrypoint_type=EntrypointType.MODULE_PATH,
            parameters=spec.parameters,
            description=spec.description,
            schedules=_schedules(spec),
            job_variables=_job_variables(spec),
            build=False,
            push=False,
            print_next_steps=False,
            ignore_warnings=True,
        )
    applied.note("updated" if existing is not None else "created", f"deployment {spec.full_name}")
