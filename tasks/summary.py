"""The release summary: summary.json in the run folder and artifacts in the UI."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from blocks.repo_server import RepoServer
from blocks.values import require_block
from dropship import ledger
from dropship.manifest import Manifest
from dropship.plan import ReleasePlan
from dropship.summary import ImageSummary, ReleaseSummary, TargetStatus, TargetSummary, read_run_records


@task(name="summary", task_run_name="summary", cache_policy=NO_CACHE)
def write_summary(
    plan: ReleasePlan,
    targets: dict[str, TargetSummary],
    *,
    status: str,
    error: str,
    repository: str,
    wall_seconds: float,
    url: str | None = None,
    image: ImageSummary | None = None,
) -> ReleaseSummary:
    """summary.json, and three artifacts in the UI: the summary, every package, a link to the repository."""
    lives = ledger.lives(plan.folder)
    by_target = {life.target: life for life in lives}
    rows = []
    for name in plan.targets:
        summary = targets.get(name) or TargetSummary(name=name, status=TargetStatus.NOT_BUILT)
        summary.container = plan.containers.get(name, "")
        life = by_target.get(name)
        if life is not None:
            summary.machine = summary.machine or life.name
            summary.machine_seconds = life.seconds
            summary.cost = life.cost
        rows.append(summary)
    jobs, language_packages = read_run_records(plan.folder)
    release = ReleaseSummary(
        run_id=plan.run_id,
        project=plan.project,
        name=plan.name,
        release_class=plan.release_class,
        suites=list(plan.suites),
        version=plan.version,
        commit=plan.commit,
        status=status,
        release_id=plan.release_id if status == "published" else "",
        error=error,
        repository=repository,
        machines_created=len(lives),
        machine_seconds=round(sum(life.seconds or 0.0 for life in lives), 3),
        cost=round(sum(life.cost or 0.0 for life in lives), 6),
        wall_seconds=round(wall_seconds, 3),
        targets=rows,
        jobs=jobs,
        language_packages=language_packages,
        url=url or "",
        image=image,
    )
    release.write(plan.folder.summary)
    create_markdown_artifact(
        key="release-summary", markdown=release.to_markdown(), description=f"{plan.project} {plan.name}"
    )
    table = [
        {"target": t.name, "artifact": a.name, "size": a.size, "sha256": a.sha256} for t in rows for a in t.artifacts
    ]
    if table:
        create_table_artifact(key="release-packages", table=table, description="every collected package")
    if image is not None:
        create_table_artifact(
            key="release-image",
            table=[{"platform": p, "reference": f"{image.repository}@{d}"} for p, d in sorted(image.platforms.items())]
            + [{"platform": "index", "reference": image.reference}],
            description=f"tags {', '.join(image.tags)}" + ("" if image.tagged else " (not moved)"),
        )
    if url and status == "published":
        create_link_artifact(
            key="release-repository",
            link=f"{url.rstrip('/')}/index.html",
            link_text=f"{plan.project} repository ({plan.release_id})",
            description="the published release index",
        )
    return release


def repository_url(manifest: Manifest, base_url: str | None) -> str:
    """The URL clients use, for the link artifact; never fails the summary."""
    if base_url:
        return base_url
    try:
        return require_block(RepoServer, manifest.blocks.repo_server).url()
    except Exception:  # noqa: BLE001 - a missing block already failed the release with its own message
        return ""
