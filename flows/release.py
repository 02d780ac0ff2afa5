"""The release flow: classify, test, provision, build, collect, sign, publish, tear down.

Stages that can fail on bad input (plan, key check, tests) run before any
machine exists. Each built target then runs as one task run, `build <target>`
(provision -> build -> collect, each a log line), in parallel; a machine is deleted as soon
as its artifacts are safe, or as soon as its build fails. Nothing is
published unless every target succeeded. Teardown runs in `finally` and
again from the failure, crash and cancellation hooks; what a killed
orchestrator leaves behind is tagged for the reaper.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.schemas.objects import FlowRun, State
from prefect.flows import Flow
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run as current_run
from prefect.settings import PREFECT_UI_URL

from dropship import ledger
from dropship.errors import DropshipError, ReleaseFailed
from dropship.graph import dependencies, ready, skip_reason
from dropship.manifest import Manifest, load_manifest
from dropship.plan import ReleasePlan
from dropship.progress import event, tidy_reason
from dropship.run_folder import RunFolder
from dropship.ssh import write_keypair
from dropship.summary import ArtifactSummary, ImageSummary, TargetStatus, TargetSummary
from dropship.tags import ReleaseClass
from flows.jobs import needs_signed_tree, publish_language_packages, run_jobs_before_publication, run_unit_jobs
from tasks.build import ensure_build_deployment
from tasks.cache import build_target, decide_target, ensure_machines_limit
from tasks.machines import client_key_path, teardown, teardown_run
from tasks.oci import check_registry, image_targets, push_images, tag_images
from tasks.prepare import plan_release, preflight, test_source
from tasks.repository import sign_and_publish, sign_repositories
from tasks.settings import default_workdir
from tasks.summary import repository_url, write_summary


def _teardown_hook(flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
    """Failure/crash/cancellation hook: delete whatever machines the run still has."""
    params = flow_run.parameters
    workdir = params.get("workdir") or str(default_workdir())
    folder = RunFolder.of(workdir, str(flow_run.id))
    try:
        manifest = load_manifest(params["manifest"])
    except DropshipError as exc:  # the manifest broke (or went) after the run began
        alive = [life.name for life in ledger.lives(folder) if life.deleted is None]
        if alive:
            logging.getLogger("dropship.teardown").error(
                "teardown skipped: %s; machines %s may still exist: `dropship reap` deletes them",
                exc,
                ", ".join(alive),
            )
        return
    teardown(manifest, params.get("provider") or manifest.machines.provider, workdir, str(flow_run.id), folder)


def _tag_after_publication(spec: Manifest, plan: ReleasePlan, image: ImageSummary) -> ImageSummary:
    """Move the image tags once the packages are out. skopeo already retried; a failure left now cannot
    take the packages back, so the error says they are out and how to finish: the same release again
    reuses every stored build and image (no machine), publishes the same packages and moves the tags."""
    try:
        return tag_images(spec, image)
    except DropshipError as exc:
        again = f"--ref {plan.name}" if plan.release_class is ReleaseClass.DEVELOPMENT else plan.name
        raise ReleaseFailed(
            f"{plan.name}'s packages are published, but its image tags did not move ({exc}): "
            f"run `dropship release {again}` again to move them; nothing is rebuilt"
        ) from exc


def _outcome(future: PrefectFuture[Any], name: str) -> TargetSummary:
    """What became of one submitted build: built, or failed with its cause."""
    future.wait()
    if not future.state.is_completed():
        return TargetSummary(name=name, status=TargetStatus.FAILED, reason=_reason(future))
    built: TargetSummary = future.result()
    return built


def _build_graph(
    spec: Manifest, plan: ReleasePlan, workdir: str, force: bool, results: dict[str, TargetSummary]
) -> None:
    """Build or reuse every target into `results`, each once its dependencies' artifacts
    are in the run; a target whose dependency failed is skipped (dropship.graph)."""
    logger = get_run_logger()
    deps = dependencies(spec, plan.targets)
    running: dict[str, PrefectFuture[Any]] = {}
    progress = create_progress_artifact(
        0.0, key="release-progress", description=f"{plan.project} {plan.name}: targets done"
    )
    assert isinstance(progress, UUID), "called from synchronous code"

    def finish(name: str, result: TargetSummary) -> None:
        results[name] = result
        if result.status == TargetStatus.FAILED:
            logger.error("%s", tidy_reason(name, result.reason), extra=event("build", "failed", name=name))
        elif result.status == TargetStatus.SKIPPED:
            logger.warning("%s", result.reason, extra=event("build", "skipped", name=name))
        elif result.status == TargetStatus.REUSED:
            logger.info("%s", result.reason, extra=event("reuse", name=name))
        update_progress_artifact(progress, 100.0 * len(results) / len(plan.targets))

    while len(results) < len(plan.targets):
        finished = {name: r.status for name, r in results.items()}
        for name in ready(deps, finished, set(running)):
            why = skip_reason(deps[name], finished)
            if why is not None:
                finish(name, TargetSummary(name=name, status=TargetStatus.SKIPPED, reason=why))
                continue
            decision = decide_target(plan, name, workdir, force)  # the core decides (dropship.cache)
            if decision.reused is not None:
                finish(
                    name,
                    TargetSummary(
                        name=name,
                        status=TargetStatus.REUSED,
                        reason=decision.reason,
                        artifacts=[ArtifactSummary(f.name, f.size, f.sha256) for f in decision.reused.files],
                    ),
                )
                continue
            running[name] = build_target.submit(spec, plan, name, workdir, decision.reason)
        if not running:
            continue
        future = next(as_completed(list(running.values())))
        name = next(n for n, f in running.items() if f is future)
        del running[name]
        finish(name, _outcome(future, name))


def _reason(future: PrefectFuture[Any]) -> str:
    try:
        future.result()
    except Exception as exc:  # noqa: BLE001 - we want the message of whatever it was
        return str(exc) or type(exc).__name__
    return str(future.state.message or future.state.name)


def _run_name() -> str:
    """`hello v1.4.2` (or `hello main`): what a person looks for in the UI."""
    params = current_run.parameters
    what = params.get("tag") or params.get("ref") or "HEAD"
    try:
        project = load_manifest(params["manifest"]).project.name
    except (DropshipError, KeyError, OSError):
        project = "release"
    return f"{project} {what}"


@flow(
    name="release",
    flow_run_name=_run_name,
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
    started = datetime.now(UTC)
    workdir = workdir or str(default_workdir())
    run_id = str(current_run.id)
    logger = get_run_logger()

    ui = PREFECT_UI_URL.value()
    if ui:
        logger.info("%s/runs/flow-run/%s", str(ui).rstrip("/"), run_id, extra=event("Prefect UI", "running"))
    spec, plan = plan_release(manifest, tag, ref, targets, workdir, run_id, started, dry_run, provider)
    preflight(spec, plan)
    images = bool(image_targets(spec, plan))  # format = "oci" targets in this release
    if images and not dry_run:
        check_registry(spec, plan)  # the registry block and login, before any machine
    test_source(plan, spec.project.test)
    run_unit_jobs(spec, plan)  # [[jobs]] kind unit: before any machine
    ensure_build_deployment()
    ensure_machines_limit()

    key_path = client_key_path(plan)
    write_keypair(key_path, f"dropship-run-{plan.short_id}")

    results: dict[str, TargetSummary] = {}
    status, error, repository = "failed", "", ""
    image = None  # the release's container image (format = "oci" targets): pushed by digest, tagged last
    try:
        _build_graph(spec, plan, workdir, force, results)
        failures = {name: r.reason for name, r in results.items() if TargetStatus(r.status).unusable}
        if failures:
            raise ReleaseFailed(
                f"{plan.project} {plan.name}: {len(failures)} target(s) failed or skipped; nothing was published",
                failures,
            )
        formats = " and ".join(
            sorted(
                {
                    "APT" if fmt.value == "deb" else "RPM"
                    for n in plan.targets
                    if (fmt := spec.target(n).format) and fmt.is_package
                }
            )
        )
        tree = None
        if dry_run or needs_signed_tree(spec, plan):  # jobs install from it; publishing signs again under the lock
            sign_started = time.monotonic()
            tree = sign_repositories(spec, plan, base_url, workdir)
            logger.info(
                "%s repository of %s",
                formats,
                ", ".join(plan.suites),
                extra=event("sign", seconds=time.monotonic() - sign_started),
            )
        run_jobs_before_publication(spec, plan, tree, workdir)  # integration, docs, manual gates
        if images and not dry_run:  # every target succeeded: per-arch images and their index by digest, no tag yet
            image = push_images(spec, plan)
        if dry_run:
            assert tree is not None
            status, repository = "dry-run", tree
            logger.info("dry run: signed tree left in %s, nothing published", tree, extra=event("publish", "skipped"))
        else:
            publish_started = time.monotonic()
            published = sign_and_publish(spec, plan, base_url, workdir, asdict(image) if image else None)
            status, repository = "published", published.location
            done = f"signed the {formats} repository of {', '.join(plan.suites)}; uploaded {published.uploaded} files"
            if published.reused:
                done += f", {published.reused} unchanged from the previous release"
            logger.info(
                "%s; current -> %s",
                done,
                plan.release_id,
                extra=event("publish", seconds=time.monotonic() - publish_started),
            )
            publish_language_packages(spec, plan, workdir)  # [[registries]]: after everything succeeded
            if image is not None:  # the packages are out: now the image's tags move
                image = _tag_after_publication(spec, plan, image)
    except BaseException as exc:
        error = str(exc)
        raise
    finally:
        try:
            teardown_run(spec, plan, workdir)
        finally:
            shutil.rmtree(key_path.parent, ignore_errors=True)
            summary = write_summary(
                plan,
                results,
                status=status,
                error=error,
                repository=repository,
                wall_seconds=time.monotonic() - clock,
                url=None if dry_run else repository_url(spec, base_url),
                image=image,
            )
    return asdict(summary)
