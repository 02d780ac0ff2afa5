"""Build-or-reuse: Prefect caching keyed on the target's content hash.

The default cache policy includes the run id and never hits across runs, so
`build-target` uses a policy whose key is only the target and its content
hash, with its records kept under the orchestrator's workdir. A hit means
the task does not run at all: no machine, no build. The artifacts then come
from the store, each checked by sha256; a store entry that is missing or fails
its check makes the flow rebuild that target (refresh_cache).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.concurrency.sync import concurrency
from prefect.context import TaskRunContext

from dropship.cache import LocalArtifactStore, Lookup, why_built
from dropship.graph import archive_with_dependencies
from dropship.manifest import Manifest
from dropship.plan import ReleasePlan
from dropship.progress import event
from dropship.summary import TargetSummary
from tasks.build import build_on_machine
from tasks.collect import collect_artifacts
from tasks.machines import provision_machine
from tasks.resources import DEFAULT_MACHINES, MACHINES_LIMIT, ensure_concurrency_limit

"""Slots of `dropship-machines` when a release creates the limit (`deployments apply --machines` sets its own)."""


@dataclass
class ContentHashPolicy(CachePolicy):
    """Cache key: the target's name and content hash, nothing else."""

    def compute_key(
        self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str | None:
        return f"dropship-build-{inputs['target_name']}-{inputs['content_hash']}"


def store_for(workdir: str) -> LocalArtifactStore:
    return LocalArtifactStore(Path(workdir) / "store")


def cache_policy(workdir: str) -> CachePolicy:
    return ContentHashPolicy().configure(key_storage=str(Path(workdir) / "cache" / "keys"))


@task(name="build-target", task_run_name="target {target_name}", cache_policy=ContentHashPolicy(), persist_result=True)
def build_target(
    manifest: Manifest, plan: ReleasePlan, target_name: str, content_hash: str, workdir: str, forced: bool
) -> TargetSummary:
    """Provision, build, collect, delete; then keep the artifacts in the store."""
    store = store_for(workdir)
    logger = get_run_logger()
    reason = why_built(store.last(target_name), plan.content[target_name], forced=forced)
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
        machine = provision_machine(manifest, plan, target_name, workdir)
        logger.info(
            "machine %s is up, building (%s)", machine.name, reason, extra=event("build", "running", name=target_name)
        )
        build_on_machine(manifest, plan, target_name, machine, workdir)  # raises unless the build completed
        summary = collect_artifacts(manifest, plan, target_name, machine, workdir)
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


@task(name="restore", task_run_name="restore {target_name}", cache_policy=NO_CACHE)
def restore_artifacts(plan: ReleasePlan, target_name: str, workdir: str) -> Lookup:
    """Copy a cached target's artifacts from the store into the run, checking each sha256."""
    digest = plan.content[target_name].digest
    lookup = store_for(workdir).get(digest, plan.folder.artifacts(target_name))
    logger = get_run_logger()
    if lookup.build is None:
        logger.warning("%s: cached build %s is unusable (%s): rebuilding", target_name, digest[:12], lookup.problem)
    else:
        logger.info("%s: reused build %s (%s)", target_name, digest[:12], ", ".join(f.name for f in lookup.build.files))
    return lookup
