"""`dropship deployments apply`: create or update everything dropship needs on a Prefect server.

Idempotent: pools, limits and the automation are created only when missing
(an operator's later change to a limit is kept), deployments are upserted by
name, so a second apply leaves the server as it was.
"""

from __future__ import annotations

from collections.abc import Callable

from deployments import Settings, deployment_specs
from tasks.resources import POOLS, Applied, ensure_automation, ensure_deployment, ensure_limits, ensure_pool


def apply(settings: Settings, echo: Callable[[str], None] | None = None) -> Applied:
    applied = Applied(echo=echo)
    for pool in POOLS:
        ensure_pool(pool, applied)
    ensure_limits(applied, settings.machines_limit)
    for spec in deployment_specs(settings):
        ensure_deployment(spec, applied)
    ensure_automation(applied)
    return applied
