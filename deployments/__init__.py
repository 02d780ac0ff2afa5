"""What dropship deploys to Prefect, as data: the deployments and their schedules.

The pools, limits and automation they rely on, and the `build` deployment a
release ensures itself, are in `tasks.resources`.

`deployments/prefect.yaml` says the same for `prefect deploy --all`;
`dropship deployments apply` (`deployments.apply`) creates it from this
module, plus what a prefect.yaml can't hold: the global concurrency limits
and the zombie-run automation. A test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks.resources import BUILD, DEFAULT_MACHINES, ORCHESTRATOR_POOL, DeploymentSpec

DEFAULT_WEEKLY_CRON = "0 3 * * 1"
DEFAULT_TIMEZONE = "UTC"
DEFAULT_REAP_MINUTES = 10


@dataclass(frozen=True)
class Settings:
    manifest: str
    """Absolute path of the project's dropship.toml on the orchestrator."""
    workdir: str | None = None
    weekly_cron: str = DEFAULT_WEEKLY_CRON
    timezone: str = DEFAULT_TIMEZONE
    weekly_ref: str = "main"
    reap_minutes: float = DEFAULT_REAP_MINUTES
    provider: str = "local"
    machines_limit: int = DEFAULT_MACHINES


def deployment_specs(settings: Settings) -> list[DeploymentSpec]:
    common: dict[str, Any] = {"manifest": settings.manifest}
    if settings.workdir:
        common["workdir"] = settings.workdir
    return [
        DeploymentSpec(
            "release",
            "release-tag",
            "flows.release.release",
            ORCHESTRATOR_POOL,
            "Release a tag (vX.Y.Z or the manifest's extra pattern): run with -p tag=v1.4.2.",
            dict(common),
        ),
        DeploymentSpec(
            "release",
            "release-weekly",
            "flows.release.release",
            ORCHESTRATOR_POOL,
            f"Weekly development build of {settings.weekly_ref} into the nightly suites.",
            {**common, "ref": settings.weekly_ref},
            cron=settings.weekly_cron,
            timezone=settings.timezone,
        ),
        DeploymentSpec(
            "promote",
            "promote",
            "flows.promote.promote",
            ORCHESTRATOR_POOL,
            "Publish a development build as a release tag, without rebuilding: -p build=<id> -p as_tag=vX.Y.Z.",
            dict(common),
        ),
        DeploymentSpec(
            "rollback",
            "rollback",
            "flows.rollback.rollback",
            ORCHESTRATOR_POOL,
            "Point the repository's current back at an earlier release (-p to=<id>, default: the previous).",
            dict(common),
        ),
        DeploymentSpec(
            "reap",
            "reap",
            "flows.reap.reap",
            ORCHESTRATOR_POOL,
            "Delete build machines whose release is over or that outlived their TTL.",
            {"provider": settings.provider, **({"workdir": settings.workdir} if settings.workdir else {})},
            interval_minutes=settings.reap_minutes,
        ),
        BUILD,
    ]
