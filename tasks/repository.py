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
from dropship.repos.tree import index_release, sign_release
from tasks.settings import PUBLISH_LIMIT, ensure_concurrency_limit


def _packages(manifest: Manifest, plan: ReleasePlan) -> dict[str, list[Path]]:
    """The collected packages of each target, of the target's format."""
    built: dict[str, list[Path]] = {}
    for name in plan.targets:
        target = manifest.target(name)
        suffix = ".deb" if target.format is PackageFormat.DEB else ".rpm"
        files = sorted((Path(plan.run_dir) / "artifacts" / name).glob(f"*{suffix}"))
        if not files:
            raise RepositoryError(f"target {name} ({target.format.value}) produced no {suffix} file")
        built[name] = files
    return built


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@task(name="sign", cache_policy=NO_CACHE)
def sign_repositories(manifest: Manifest, plan: ReleasePlan, base_url: str | None, workdir: str) -> str:
    """Build the new repository tree from the published one plus this release; return its path."""
    server = RepoServer.load(manifest.blocks.repo_server)
    url = base_url or server.url()
    tree = Path(plan.run_dir) / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    server.publisher(workdir).fetch_current(tree)
    built = _packages(manifest, plan)
    files = [f for fs in built.values() for f in fs]
    with SigningKey.load(manifest.blocks.signing_key).signer() as signer:
        result = sign_release(
            tree, manifest, list(plan.suites), [f for f in files if f.suffix == ".deb"],
            [f for f in files if f.suffix == ".rpm"], signer, base_url=url,
        )
    release = IndexedRelease(
        id=plan.release_id, name=plan.name, release_class=plan.release_class, version=plan.version,
        commit=plan.commit, date=now_utc(), suites=list(plan.suites), targets=list(plan.targets),
    )
    index_release(tree, manifest, url, release, {t: [f.name for f in fs] for t, fs in built.items()})
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
    url = base_url or server.url()
    tree = Path(run_dir) / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    server.publisher(workdir).fetch_current(tree)
    promotion = prepare_promotion(manifest, tree, build, as_tag, Path(run_dir) / "packages")
    files = [f for fs in promotion.packages.values() for f in fs]
    suites = list(promotion.classification.suites)
    with SigningKey.load(manifest.blocks.signing_key).signer() as signer:
        sign_release(
            tree, manifest, suites, [f for f in files if f.suffix == ".deb"], [f for f in files if f.suffix == ".rpm"],
            signer, base_url=url,
        )
    new_id = release_id(promotion.classification, datetime.now(timezone.utc))
    source = promotion.source
    release = IndexedRelease(
        id=new_id, name=as_tag, release_class=promotion.classification.release_class.value, version=source.version,
        commit=source.commit, date=now_utc(), suites=suites, targets=source.targets, promoted_from=source.id,
    )
    index_release(tree, manifest, url, release, {t: [f.name for f in fs] for t, fs in promotion.packages.items()})
    get_run_logger().info("promoting %s (%s) as %s into %s: %d packages", source.id, source.version, as_tag, suites, len(files))
    return str(tree), new_id
