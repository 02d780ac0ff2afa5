"""The reaper flow: delete machines whose release is over or that outlived a TTL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from blocks.digitalocean import DigitalOceanCredentials
from dropship.machines.factory import make_provider
from dropship.reaper import reap as reap_machines
from dropship.reaper import run_id_of
from tasks.machines import cancel_open_build_runs
from tasks.settings import default_workdir


def run_finished(run_id: str) -> bool:
    """True when Prefect says the run ended, or does not know it."""
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
    except (ObjectNotFound, ValueError):
        return True
    return run.state is None or run.state.is_final()


@task(name="reap", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def reap_task(provider: str, workdir: str, credentials: str, ttl_minutes: float) -> list[str]:
    settings = DigitalOceanCredentials.load(credentials).settings() if provider == "digitalocean" else None
    reaped = reap_machines(
        make_provider(provider, Path(workdir), settings), run_finished=run_finished, ttl=timedelta(minutes=ttl_minutes)
    )
    logger = get_run_logger()
    for item in reaped:
        logger.info("deleted %s (%s): %s", item.machine.name, item.machine.id, item.reason)
        run_id = run_id_of(item.machine)
        if run_id:
            cancel_open_build_runs(run_id)
    if not reaped:
        logger.info("nothing to reap")
    return [f"{item.machine.name}: {item.reason}" for item in reaped]


@flow(name="reap", log_prints=True)
def reap(
    provider: str = "local",
    workdir: str | None = None,
    credentials: str = "dropship-digitalocean",
    ttl_minutes: float = 120.0,
) -> list[str]:
    """Delete machines tagged `dropship` whose run is over, or older than `ttl_minutes`."""
    return reap_task(provider, workdir or str(default_workdir()), credentials, ttl_minutes)
