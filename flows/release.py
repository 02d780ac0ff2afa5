"""The release flow: classify, test, provision, build, collect, sign, publish, tear down.

Stages that can fail on bad input (plan, key check, tests) run before any
machine exists. Each target then runs as its own chain of tasks
(provision -> build -> collect), in parallel; a machine is deleted as soon
as its artifacts are safe, or as soon as its build fails. Nothing is
published unless every target succeeded. Teardown runs in `finally` and
again from the failure, crash and cancellation hooks; what a killed
orchestrator leaves behind is tagged for the reaper.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import FlowRun, State
from prefect.flows import Flow
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run as current_run

from dropship.errors import ReleaseFailed
from dropship.manifest import load_manifest
from dropship.plan import ReleasePlan
from dropship.ssh import write_keypair
from dropship.summary import ArtifactSummary, TargetSummary
from tasks.build import ensure_build_deployment
from tasks.cache import build_target, cache_policy, restore_artifacts
from tasks.machines import check_machines, client_key_path, teardown, teardown_run
from tasks.prepare import check_signing_key, plan_release, test_source
from tasks.repository import sign_and_publish, sign_repositories
from tasks.settings import default_workdir
from tasks.summary import repository_url, write_summary


def _teardown_hook(flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
    """Failure/crash/cancellation hook: delete whatever machines the run still has."""
    params = flow_run.parameters
    workdir = params.get("workdir") or str(default_workdir())
    try:
        manifest = load_manifest(params["manifest"])
    except Exception:  # noqa: BLE001 - a run with no valid manifest created no machine
        return
    run_dir = str(Path(workdir) / "runs" / str(flow_run.id))
    teardown(manifest, params.get("provider") or manifest.machines.provider, workdir, str(flow_run.id), run_dir)


def _outcome(
    future: PrefectFuture[Any], spec: Any, plan: ReleasePlan, name: str, workdir: str, policy: Any
) -> TargetSummary:
    """What became of one target: failed, reused from the store, or built (again)."""
    future.wait()
    if not future.state.is_completed():
        return TargetSummary(name=name, status="failed", reason=_reason(future))
    if future.state.name != "Cached":
        built: TargetSummary = future.result()
        return built
    lookup = restore_artifacts(plan, name, workdir)
    if lookup.build is not None:
        return TargetSummary(
            name=name, status="reused", reason=f"cache hit {plan.content[name].digest[:12]}",
            artifacts=[ArtifactSummary(f.name, f.size, f.sha256) for f in lookup.build.files],
        )
    rebuild = build_target.with_options(cache_policy=policy, refresh_cache=True)
    try:  # the store lost or altered the cached build: make it again
        rebuilt: TargetSummary = rebuild(spec, plan, name, plan.content[name].digest, workdir, True)
    except Exception as exc:  # noqa: BLE001 - recorded as this target's failure
        return TargetSummary(name=name, status="failed", reason=str(exc))
    rebuilt.reason = f"rebuilt: cached build unusable ({lookup.problem})"
    return rebuilt


def _reason(future: PrefectFuture[Any]) -> str:
    try:
        future.result()
    except Exception as exc:  # noqa: BLE001 - we want the message of whatever it was
        return str(exc) or type(exc).__name__
    return str(future.state.message or future.state.name)


@flow(
    name="release",
    log_prints=True,
    on_failure=[_teardown_hook],
    on_crashed=[_teardown_hook],
    on_cancellation=[_teardown_hook],
)
def release(
    manifest: str,
    tag: str | None = None,
    ref: str | None = None,
    targets: list[str] | None = None,
    dry_run: bool = False,
    workdir: str | None = None,
    base_url: str | None = None,
    force: bool = False,
    provider: str | None = None,
) -> dict[str, Any]:
    """Release `tag` (stable/extra) or `ref` (development) of the project in `manifest`.

    `targets` limits the build to some targets; `dry_run` builds, collects and
    signs but publishes nothing; `base_url` overrides the URL written into the
    .repo and .sources files; `force` rebuilds targets whose content hash has
    a stored build; `provider` (local or digitalocean) overrides the manifest's.
    """
    clock = time.monotonic()
    started = datetime.now(timezone.utc)
    workdir = workdir or str(default_workdir())
    run_id = str(current_run.id)
    logger = get_run_logger()

    spec, plan = plan_release(manifest, tag, ref, targets, workdir, run_id, started, dry_run, provider)
    check_signing_key(spec.blocks.signing_key)
    check_machines(spec, plan, workdir)
    test_source(plan, spec.project.test)
    ensure_build_deployment()

    key_path = client_key_path(plan)
    write_keypair(key_path, f"dropship-run-{plan.short_id}")

    results: dict[str, TargetSummary] = {}
    status, error, repository = "failed", "", ""
    try:
        policy = cache_policy(workdir)
        builder = build_target.with_options(cache_policy=policy, refresh_cache=True if force else None)
        futures = {
            name: builder.submit(spec, plan, name, plan.content[name].digest, workdir, force) for name in plan.targets
        }
        for name, future in futures.items():
            results[name] = _outcome(future, spec, plan, name, workdir, policy)
        failures = {name: r.reason for name, r in results.items() if r.status == "failed"}
        if failures:
            raise ReleaseFailed(f"{plan.project} {plan.name}: {len(failures)} target(s) failed; nothing was published", failures)
        if dry_run:
            tree = sign_repositories(spec, plan, base_url, workdir)
            status, repository = "dry-run", tree
            logger.info("dry run: signed tree left in %s, nothing published", tree)
        else:
            published = sign_and_publish(spec, plan, base_url, workdir)
            status, repository = "published", published.location
    except BaseException as exc:
        error = str(exc)
        raise
    finally:
        try:
            teardown_run(spec, plan, workdir)
        finally:
            shutil.rmtree(key_path.parent, ignore_errors=True)
            summary = write_summary(
                plan, results, status=status, error=error, repository=repository,
                wall_seconds=time.monotonic() - clock, url=None if dry_run else repository_url(spec, base_url),
            )
    return asdict(summary)

