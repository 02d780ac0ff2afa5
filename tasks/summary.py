"""The release summary: summary.json in the run folder and artifacts in the UI."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from dropship import ledger
from dropship.plan import ReleasePlan
from dropship.summary import ReleaseSummary, TargetSummary


@task(name="summary", cache_policy=NO_CACHE)
def write_summary(
    plan: ReleasePlan,
    targets: dict[str, TargetSummary],
    *,
    status: str,
    error: str,
    repository: str,
    wall_seconds: float,
) -> ReleaseSummary:
    lives = ledger.lives(Path(plan.run_dir))
    by_target = {life.target: life for life in lives}
    rows = []
    for name in plan.targets:
        summary = targets.get(name) or TargetSummary(name=name, status="not built")
        life = by_target.get(name)
        if life is not None:
            summary.machine = summary.machine or life.name
            summary.machine_seconds = life.seconds
            summary.cost = life.cost
        rows.append(summary)
    release = ReleaseSummary(
        run_id=plan.run_id, project=plan.project, name=plan.name, release_class=plan.release_class,
        suites=list(plan.suites), version=plan.version, commit=plan.commit, status=status,
        release_id=plan.release_id if status == "published" else "", error=error,
        repository=repository, machines_created=len(lives),
        machine_seconds=round(sum(life.seconds or 0.0 for life in lives), 3),
        cost=round(sum(life.cost or 0.0 for life in lives), 6),
        wall_seconds=round(wall_seconds, 3), targets=rows,
    )
    release.write(Path(plan.run_dir) / "summary.json")
    create_markdown_artifact(key="release-summary", markdown=release.to_markdown(), description=f"{plan.project} {plan.name}")
    table = [
        {"target": t.name, "artifact": a.name, "size": a.size, "sha256": a.sha256}
        for t in rows for a in t.artifacts
    ]
    if table:
        create_table_artifact(key="release-packages", table=table, description="every collected package")
    return release
