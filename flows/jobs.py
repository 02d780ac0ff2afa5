"""The release flow's jobs: unit before the builds; integration, docs and the manual
gate after signing and before publication; language packages after publication.

Called from `flows.release.release` (a few lines there); the gate must run in
the flow itself, since `pause_flow_run` pauses the calling flow run.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from dropship.errors import JobFailed, ReleaseFailed
from dropship.jobs import JobKind, integration_targets, jobs_of
from dropship.machines import run_tag
from dropship.manifest import Manifest
from dropship.plan import ReleasePlan
from dropship.progress import event
from dropship.summary import JobOutcome
from tasks.jobs import (
    check_language,
    docs_job,
    integration_job,
    publish_language,
    unit_job,
)
from tasks.machines import provider_for


class Approval(RunInput):
    """What a person answers at a manual gate (the Prefect UI shows this form)."""

    approve: bool = Field(default=False, description="Publish this release?")
    reason: str = Field(default="", description="Why (kept in the release's job record).")


def _record(plan: ReleasePlan, outcomes: list[JobOutcome]) -> None:
    """jobs.json in the run folder, and the table in the UI."""
    path = plan.folder.jobs
    known = json.loads(path.read_text()) if path.exists() else []
    known = [j for j in known if j["name"] not in {o.name for o in outcomes}] + [asdict(o) for o in outcomes]
    path.write_text(json.dumps(known, indent=2) + "\n")
    rows = ["| job | kind | status | seconds | machine | detail |", "|---|---|---|---|---|---|"]
    for job in known:
        detail = (job["detail"] or "-").replace("|", "/").replace("\n", " ")[:300]
        rows.append(
            f"| {job['name']} | {job['kind']} | {job['status']} | {job['seconds']:.1f} | "
            f"{job['machine'] or '-'} | {detail} |"
        )
    create_markdown_artifact(
        key="release-jobs", markdown="\n".join(rows) + "\n", description=f"{plan.project} {plan.name}: jobs"
    )


def run_unit_jobs(manifest: Manifest, plan: ReleasePlan) -> None:
    """Before any build: every unit job of this release class, in parallel; any failure stops the release."""
    jobs = jobs_of(manifest, JobKind.UNIT, plan.release_class)
    if not jobs:
        return
    futures = {job.name: unit_job.submit(plan, job) for job in jobs}
    _settle(plan, futures, "before any build")


def _settle(plan: ReleasePlan, futures: dict[str, Any], when: str) -> list[JobOutcome]:
    outcomes: list[JobOutcome] = []
    failures: dict[str, str] = {}
    for name, future in futures.items():
        future.wait()
        try:
            outcomes.append(future.result())
        except Exception as exc:  # noqa: BLE001 - recorded as the job's failure
            reason = exc.reason if isinstance(exc, JobFailed) else str(exc)
            failures[name] = reason
            outcomes.append(JobOutcome(name, "", "failed", detail=reason))
    logger = get_run_logger()
    for outcome in outcomes:
        if outcome.status == "failed":  # the whole reason here; the record keeps its first DETAIL_LIMIT characters
            logger.error(
                "%s", failures.get(outcome.name, outcome.detail), extra=event("job", "failed", name=outcome.name)
            )
        else:
            mark = "ok" if outcome.status == "passed" else "warning"
            where = f" on {outcome.machine}" if outcome.machine else ""
            logger.info(
                "%s%s",
                outcome.detail or outcome.status,
                where,
                extra=event("job", mark, name=outcome.name, seconds=outcome.seconds),
            )
    _record(plan, outcomes)
    if failures:
        raise ReleaseFailed(
            f"{plan.project} {plan.name}: {len(failures)} job(s) failed {when}; nothing was published", failures
        )
    return outcomes


def _no_machine_left(manifest: Manifest, plan: ReleasePlan, workdir: str) -> None:
    """Every machine of the run deleted (builds and jobs delete their own; this is the check)."""
    provider = provider_for(manifest, plan.provider, workdir)
    for machine in provider.list(run_tag(plan.run_id)):
        provider.delete(machine.id)
        get_run_logger().warning("deleted machine %s before waiting for approval", machine.name)


def needs_signed_tree(manifest: Manifest, plan: ReleasePlan) -> bool:
    """Whether a job installs from, or writes into, the signed tree before publication."""
    return bool(
        jobs_of(manifest, JobKind.INTEGRATION, plan.release_class)
        or jobs_of(manifest, JobKind.DOCS, plan.release_class)
    )


def run_jobs_before_publication(
    manifest: Manifest, plan: ReleasePlan, tree: str | None, workdir: str
) -> list[JobOutcome]:
    """Integration and docs jobs in parallel on the signed tree, then each manual gate in turn.

    Raises `ReleaseFailed` (a job failed) or `JobFailed` (a gate was rejected
    or timed out): the release then ends unpublished.
    """
    futures: dict[str, Any] = {}
    for job in jobs_of(manifest, JobKind.INTEGRATION, plan.release_class):
        left_out = [t for t in integration_targets(manifest, job) if t not in plan.targets]
        if left_out:  # `--target` chose other targets: nothing of this job's was built
            get_run_logger().info("%s: skipped, %s not built in this run", job.name, ", ".join(left_out))
            continue
        assert tree is not None, "an integration job installs from the signed tree"
        futures[job.name] = integration_job.submit(manifest, plan, job, tree, workdir)
    for job in jobs_of(manifest, JobKind.DOCS, plan.release_class):
        assert tree is not None, "a docs job writes into the signed tree"
        futures[job.name] = docs_job.submit(plan, job, tree)
    outcomes = _settle(plan, futures, "on the signed tree") if futures else []
    gates = [] if plan.dry_run else jobs_of(manifest, JobKind.MANUAL, plan.release_class)
    if gates:
        _no_machine_left(manifest, plan, workdir)
    for job in gates:
        outcomes.append(manual_gate(plan, job.name, job.timeout))
    if not plan.dry_run and _has_registry_packages(manifest, plan):
        check_language(manifest, plan)  # a conflicting version stops the release before anything is published
    return outcomes


def _has_registry_packages(manifest: Manifest, plan: ReleasePlan) -> bool:
    return any(p.registry for t in plan.targets for p in manifest.target(t).packages)


def manual_gate(plan: ReleasePlan, name: str, timeout: int) -> JobOutcome:
    """Pause the flow run until a person approves or rejects, in the UI or with
    `resume_flow_run(id, run_input={"approve": true, "reason": "..."})`."""
    logger = get_run_logger()
    logger.info(
        "waiting up to %d s for approval of %s %s (version %s) in the Prefect UI",
        timeout,
        plan.project,
        plan.name,
        plan.version,
        extra=event("gate", "running", name=name),
    )
    try:
        answer = pause_flow_run(
            wait_for_input=Approval, timeout=timeout, poll_interval=min(2, timeout), key=f"gate-{name}"
        )
    except FlowPauseTimeout as exc:
        outcome = JobOutcome(name, "manual", "timed out", float(timeout), detail=f"no answer within {timeout} s")
        _record(plan, [outcome])
        raise JobFailed(name, f"no approval within {timeout} s; nothing was published") from exc
    status = "approved" if answer.approve else "rejected"
    outcome = JobOutcome(name, "manual", status, detail=answer.reason)
    _record(plan, [outcome])
    if not answer.approve:
        raise JobFailed(name, f"rejected: {answer.reason or 'no reason given'}; nothing was published")
    logger.info("approved (%s)", answer.reason or "no reason given", extra=event("gate", name=name))
    return outcome


def publish_language_packages(manifest: Manifest, plan: ReleasePlan, workdir: str) -> None:
    """After the repository was published (so after every target and job succeeded); never on a dry run."""
    if plan.dry_run or not _has_registry_packages(manifest, plan):
        return
    started = time.monotonic()
    results = publish_language(manifest, plan)
    path = plan.folder.registries
    path.write_text(json.dumps(results, indent=2) + "\n")
    get_run_logger().info(
        "%s",
        "; ".join(f"{r['file']} -> {r['registry']} ({r['status']})" for r in results),
        extra=event("language packages", seconds=time.monotonic() - started),
    )
