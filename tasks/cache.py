"""Build or reuse: the core decides (`dropship.cache.build_or_reuse`), these record it.

Before a target is submitted, `decide_target` looks its content hash up in
the artifact store under the orchestrator's workdir, checking every file by
sha256: a hit copies the files into the run and the target gets no machine;
a miss, a `force`, or a stored build that fails its check is built by
`build <target>`, which stores what it collected. Prefect's own task caching
is not used: one owner, the store, says whether a build exists.

A built target is one task run, `build <target>`: provision, build on the
machine (its build flow run nested under it), collect, each a log line. Every
task run costs the orchestrator's server a creation and three state events
(each recorded, persisted and seen by the triggers) and its client the task
engine's work; at six task runs per target they were a large part of what
orchestration costs per target (docs/orchestrator.md). Provisioning and
collecting keep their retries, here rather than as Prefect task retries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from dropship.cache import Decision, LocalArtifactStore, build_or_reuse
from dropship.errors import ConfigError
from dropship.graph import archive_with_dependencies
from dropship.manifest import Manifest
from dropship.plan import ReleasePlan
from dropship.progress import event
from dropship.summary import TargetSummary
from tasks.build import build_on_machine
from tasks.collect import collect_artifacts
from tasks.machines import provision_machine
from tasks.resources import DEFAULT_MACHINES, MACHINES_LIMIT, ensure_concurrency_limit

T = TypeVar("T")

PROVISION_ATTEMPTS, PROVISION_DELAY = 2, 5.0
COLLECT_ATTEMPTS, COLLECT_DELAY = 3, 3.0


def store_for(workdir: str) -> LocalArtifactStore:
    return LocalArtifactStore(Path(workdir) / "store")


def decide_target(plan: ReleasePlan, target_name: str, workdir: str, forced: bool) -> Decision:
    """Reuse the stored build of the target's content hash (copied into the run), or say why it is built."""
    decision = build_or_reuse(
        store_for(workdir), target_name, plan.content[target_name], plan.folder.artifacts(target_name), forced=forced
    )
    if decision.reused is not None:  # a built target's first line is its task run's (`build_target`)
        get_run_logger().info(
            "%s: %s (%s)", target_name, decision.reason, ", ".join(f.name for f in decision.reused.files)
        )
    return decision


def _attempts(step: str, target_name: str, attempts: int, delay: float, fn: Callable[[], T]) -> T:
    """`fn()`, tried `attempts` times `delay` seconds apart; each failure but the last is logged."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except ConfigError:  # bad input (a loopback worker URL, a refused size): the same again 5 s later
            raise
        except Exception as exc:  # noqa: BLE001 - as Prefect's task retries did; the last one is raised
            if attempt == attempts:
                raise
            get_run_logger().warning(
                "%s %s failed (%s); trying again in %.0f s", step, target_name, str(exc) or type(exc).__name__, delay
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


@task(name="build-target", task_run_name="build {target_name}", cache_policy=NO_CACHE)
def build_target(manifest: Manifest, plan: ReleasePlan, target_name: str, workdir: str, reason: str) -> TargetSummary:
    """Provision, build, collect, delete; then keep the artifacts in the store."""
    store = store_for(workdir)
    logger = get_run_logger()
    content_hash = plan.content[target_name].digest
    logger.info("building %s (%s), content hash %s", target_name, reason, content_hash[:12])
    started = time.monotonic()
    depends_on = manifest.target(target_name).depends_on
    if depends_on:  # their artifacts go to the machine inside the source archive (dropship.graph)
        artifacts = {dep: sorted(plan.folder.artifacts(dep).iterdir()) for dep in depends_on}
        archive = archive_with_dependencies(Path(plan.archive), artifacts, plan.folder.source_archive(target_name))
        plan = replace(plan, archive=str(archive))
        logger.info("%s gets the artifacts of %s in $DROPSHIP_DEPS", target_name, ", ".join(depends_on))
    # One slot of `dropship-machines` per machine alive (the flow creates the limit if missing).
    with concurrency(MACHINES_LIMIT, occupy=1, strict=False, timeout_seconds=3600):
        machine = _attempts(
            "provisioning",
            target_name,
            PROVISION_ATTEMPTS,
            PROVISION_DELAY,
            lambda: provision_machine(manifest, plan, target_name, workdir),
        )
        logger.info(
            "machine %s is up, building (%s)", machine.name, reason, extra=event("build", "running", name=target_name)
        )
        build_on_machine(manifest, plan, target_name, machine, workdir)  # raises unless the build completed
        summary = _attempts(
            "collecting",
            target_name,
            COLLECT_ATTEMPTS,
            COLLECT_DELAY,
            lambda: collect_artifacts(manifest, plan, target_name, machine, workdir),
        )
    logger.info(
        "%s",
        ", ".join(a.name for a in summary.artifacts),
        extra=event("build", name=target_name, seconds=time.monotonic() - started),
    )
    files = sorted(plan.folder.artifacts(target_name).iterdir())
    store.put(content_hash, target_name, plan.version, files, plan.content[target_name].files)
    summary.reason = reason
    return summary


@task(name="machines-limit", task_run_name="machines limit", cache_policy=NO_CACHE)
def ensure_machines_limit() -> None:
    """Create `dropship-machines` once, at the start of the release, if nobody has:
    each build then takes a slot of a limit that exists (no warning per target)."""
    if ensure_concurrency_limit(MACHINES_LIMIT, DEFAULT_MACHINES):
        get_run_logger().info("created the concurrency limit %s (%d machines)", MACHINES_LIMIT, DEFAULT_MACHINES)
