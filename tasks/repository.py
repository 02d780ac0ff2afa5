"""Signing the repositories, publishing them, rolling back."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from blocks.repo_server import RepoServer
from blocks.signing_key import SigningKey
from dropship.deploy import PublishResult
from dropship.errors import RepositoryError
from dropship.manifest import Manifest, PackageFormat
from dropship.plan import ReleasePlan
from dropship.promote import prepare_promotion
from dropship.release import release_id
from dropship.repos.index import IndexedRelease
from dropship.repos.tree import sign_and_index
from deployments import PUBLISH_LIMIT
from deployments.apply import ensure_concurrency_limit


def _packages(manifest: Manifest, plan: ReleasePlan) -> dict[str, list[Path]]:
    """The collected packages of each target, of the target's format."""
    built: dict[str, list[Path]] = {}
    for name in plan.targets:
        target = manifest.target(name)
        if target.format is None:  # language packages only: published to their registries, not here
            continue
        suffix = ".deb" if target.format is PackageFormat.DEB else ".rpm"
        files = sorted((Path(plan.run_dir) / "artifacts" / name).glob(f"*{suffix}"))
        if not files:
            raise RepositoryError(f"target {name} ({target.format.value}) produced no {suffix} file")
        built[name] = files
    return built


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _published_tree(server: RepoServer, run_dir: str, workdir: str) -> Path:
    """A fresh copy of what clients see now, to add this release to."""
    tree = Path(run_dir) / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    server.publisher(workdir).fetch_current(tree)
    return tree


@task(name="sign", cache_policy=NO_CACHE)
def sign_repositories(manifest: Manifest, plan: ReleasePlan, base_url: str | None, workdir: str) -> str:
    """Build the new repository tree from the published one plus this release; return its path."""
    server = RepoServer.load(manifest.blocks.repo_server)
    tree = _published_tree(server, plan.run_dir, workdir)
    release = IndexedRelease(
        id=plan.release_id, name=plan.name, release_class=plan.release_class, version=plan.version,
        commit=plan.commit, date=now_utc(), suites=list(plan.suites), targets=list(plan.targets),
    )
    with SigningKey.load(manifest.blocks.signing_key).signer() as signer:
        result = sign_and_index(tree, manifest, release, _packages(manifest, plan), signer,
                                base_url=base_url or server.url())
    logger = get_run_logger()
    logger.info("APT: added %s; removed %s", result.apt_added, result.apt_removed or "nothing")
    logger.info("RPM: added %s; removed %s", result.rpm_added, result.rpm_removed or "nothing")
    return str(tree)


@task(name="publish", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def publish_tree(repo_server: str, release_id: str, tree: str, workdir: str) -> PublishResult:
    """Publish under the global `publish` limit (strict): two releases never interleave."""
    server = RepoServer.load(repo_server)
    logger = get_run_logger()
    ensure_concurrency_limit(PUBLISH_LIMIT, 1)

    def progress(step: str, done: int, total: int) -> None:
        if done == total or done % 100 == 0:
            logger.info("%s: %d/%d files", step, done, total)

    with concurrency(PUBLISH_LIMIT, occupy=1, strict=True, timeout_seconds=1800):
        result = server.publisher(workdir).publish(Path(tree), release_id, progress=progress)
    logger.info(
        "published %s: %d files (%d reused from the previous release, %d uploaded, %d bytes); current -> releases/%s",
        release_id, result.files, result.reused, result.uploaded, result.bytes_uploaded, release_id,
    )
    return result


@task(name="switch-current", cache_policy=NO_CACHE)
def switch_current(repo_server: str, workdir: str, to: str | None) -> tuple[str | None, str]:
    """Roll `current` back to `to` (or the release before it); return (from, to)."""
    publisher = RepoServer.load(repo_server).publisher(workdir)
    ensure_concurrency_limit(PUBLISH_LIMIT, 1)
    with concurrency(PUBLISH_LIMIT, occupy=1, strict=True, timeout_seconds=1800):
        current, target = publisher.rollback(to)
    get_run_logger().info("current: %s -> %s", current, target)
    return current, target


@task(name="sign-promotion", cache_policy=NO_CACHE)
def sign_promotion(manifest: Manifest, build: str, as_tag: str, run_dir: str, workdir: str, base_url: str | None) -> tuple[str, str]:
    """The published tree plus `build`'s packages in the tag's suites, signed; return (tree, release id)."""
    server = RepoServer.load(manifest.blocks.repo_server)
    tree = _published_tree(server, run_dir, workdir)
    promotion = prepare_promotion(manifest, tree, build, as_tag, Path(run_dir) / "packages")
    source = promotion.source
    release = IndexedRelease(
        id=release_id(promotion.classification, datetime.now(timezone.utc)), name=as_tag,
        release_class=promotion.classification.release_class.value, version=source.version, commit=source.commit,
        date=now_utc(), suites=list(promotion.classification.suites), targets=source.targets, promoted_from=source.id,
    )
    with SigningKey.load(manifest.blocks.signing_key).signer() as signer:
        sign_and_index(tree, manifest, release, promotion.packages, signer, base_url=base_url or server.url())
    get_run_logger().info("promoting %s (%s) as %s into %s", source.id, source.version, as_tag, release.suites)
    return str(tree), release.id
