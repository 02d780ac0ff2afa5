"""Signing the repositories and publishing them."""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.repo_server import RepoServer
from blocks.signing_key import SigningKey
from dropship.deploy import PublishResult
from dropship.errors import RepositoryError
from dropship.manifest import Manifest, PackageFormat
from dropship.plan import ReleasePlan
from dropship.repos.tree import seed_tree, sign_release


def _packages(manifest: Manifest, plan: ReleasePlan) -> tuple[list[Path], list[Path]]:
    """The collected .debs and .rpms, each from a target of the matching format."""
    debs: list[Path] = []
    rpms: list[Path] = []
    for name in plan.targets:
        target = manifest.target(name)
        suffix = ".deb" if target.format is PackageFormat.DEB else ".rpm"
        files = sorted((Path(plan.run_dir) / "artifacts" / name).glob("*"))
        packages = [f for f in files if f.suffix == suffix]
        if not packages:
            raise RepositoryError(f"target {name} ({target.format.value}) produced no {suffix} file")
        (debs if suffix == ".deb" else rpms).extend(packages)
    return debs, rpms


@task(name="sign", cache_policy=NO_CACHE)
def sign_repositories(manifest: Manifest, plan: ReleasePlan, base_url: str | None) -> str:
    """Build the new repository tree from the published one plus this release; return its path."""
    server = RepoServer.load(manifest.blocks.repo_server)
    tree = Path(plan.run_dir) / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    seed_tree(tree, server.publisher().current_tree())
    debs, rpms = _packages(manifest, plan)
    with SigningKey.load(manifest.blocks.signing_key).signer() as signer:
        result = sign_release(
            tree, manifest, list(plan.suites), debs, rpms, signer, base_url=base_url or server.url()
        )
    logger = get_run_logger()
    logger.info("APT: added %s; removed %s", result.apt_added, result.apt_removed or "nothing")
    logger.info("RPM: added %s; removed %s", result.rpm_added, result.rpm_removed or "nothing")
    return str(tree)


@task(name="publish", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def publish_tree(manifest: Manifest, plan: ReleasePlan, tree: str) -> PublishResult:
    server = RepoServer.load(manifest.blocks.repo_server)
    result = server.publisher().publish(Path(tree), plan.release_id)
    get_run_logger().info(
        "published %s: %d files (%d hard-linked, %d copied); current -> releases/%s",
        plan.release_id, result.files, result.linked, result.copied, plan.release_id,
    )
    return result
