"""Stages that run before any machine exists: plan, preflight checks, tests."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.values import load_inputs
from dropship.checks import require, run_checks
from dropship.manifest import Manifest
from dropship.plan import ReleasePlan, make_plan
from dropship.progress import event
from dropship.project_tests import run_tests
from tasks.containers import resolve_build_images
from tasks.machines import do_credentials, droplet_worker


@task(name="plan", task_run_name="plan", cache_policy=NO_CACHE)
def plan_release(
    manifest_path: str,
    tag: str | None,
    ref: str | None,
    targets: list[str] | None,
    workdir: str,
    run_id: str,
    started: datetime,
    dry_run: bool,
    provider: str | None = None,
) -> tuple[Manifest, ReleasePlan]:
    manifest, plan = make_plan(
        manifest_path,
        tag=tag,
        ref=ref,
        targets=targets,
        workdir=Path(workdir),
        run_id=run_id,
        started=started,
        dry_run=dry_run,
        provider=provider,
        resolve_containers=resolve_build_images,  # container = "...": tag -> digest, before any machine
    )
    get_run_logger().info(
        "%s %s is a %s release of commit %s, version %s, into suites %s; targets: %s",
        plan.project,
        plan.name,
        plan.release_class,
        plan.commit[:12],
        plan.version,
        ", ".join(plan.suites),
        ", ".join(plan.targets),
        extra=event("plan"),
    )
    return manifest, plan


@task(name="preflight", task_run_name="preflight", cache_policy=NO_CACHE)
def preflight(manifest: Manifest, plan: ReleasePlan) -> list[str]:
    """Every block, the key's expiry, the provider and the repository server, before any test or machine.

    The same checks and one-line messages as `dropship check`; raises
    `PreflightFailed` (a ConfigError) naming what is missing and the fixing command.
    """
    checks = run_checks(
        manifest,
        plan.manifest_path,
        load_inputs(manifest, plan.provider, build_images=False),  # the plan stage pinned them with their blocks
        provider=plan.provider,
        targets=plan.targets,
        build_images=False,
    )
    logger = get_run_logger()
    for check in checks:
        logger.info("%s", check.line())
    require(checks)
    if plan.provider == "digitalocean":
        credentials = do_credentials(manifest)
        droplet_worker(credentials, "preflight").env_file()  # the URL and credentials droplets' workers get are usable
        credentials.index_url()  # and the package index they install from is one they reach
    logger.info("%s", "; ".join(c.what for c in checks), extra=event("check"))
    return [check.line() for check in checks]


@task(name="test", task_run_name="test", cache_policy=NO_CACHE)
def test_source(plan: ReleasePlan, command: list[str] | None) -> None:
    logger = get_run_logger()
    if not command:
        logger.warning("the manifest has no test command: nothing was tested", extra=event("test", "warning"))
        return
    started = time.monotonic()
    output = run_tests(Path(plan.archive), command, version=plan.version, source_date_epoch=plan.source_date_epoch)
    tail = "\n".join(output.strip().splitlines()[-20:])
    logger.info("%s exited 0%s", " ".join(command), f"; its last lines:\n{tail}" if tail else "")
    logger.info("%s", " ".join(command), extra=event("test", seconds=time.monotonic() - started))
