"""Signing the repositories, publishing them, rolling back.

Everything that reads the published tree and changes it holds the
repository's lock (`Publisher.locked`) from the read to the switch. The lock
is a flock, locally or on the server: it ends with its holder, so a killed
run never leaves it held (a Prefect concurrency slot would stay taken for its
lease, 300 s). Whoever waits is told which run holds it.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run

from blocks.repo_server import RepoServer
from blocks.signing_key import SigningKey
from blocks.values import require_block
from dropship.errors import RepositoryError
from dropship.manifest import Manifest, PackageFormat
from dropship.plan import ReleasePlan
from dropship.promote import prepare_promotion
from dropship.publish import Publisher, PublishResult
from dropship.registries import language_files
from dropship.repos.index import IndexedLanguagePackage, IndexedRelease
from dropship.repos.tree import sign_and_index
from dropship.run_folder import RunFolder
from dropship.signing import sweep_gnupg_homes
from dropship.tags import release_id
from tasks.oci import promoted_image


def _packages(manifest: Manifest, plan: ReleasePlan) -> dict[str, list[Path]]:
    """The collected packages of each target, of the target's format."""
    built: dict[str, list[Path]] = {}
    for name in plan.targets:
        target = manifest.target(name)
        if target.format is None or not target.format.is_package:  # language packages, images: not here
            continue
        suffix = ".deb" if target.format is PackageFormat.DEB else ".rpm"
        files = sorted(plan.folder.artifacts(name).glob(f"*{suffix}"))
        if not files:
            raise RepositoryError(f"target {name} ({target.format.value}) produced no {suffix} file")
        built[name] = files
    return built


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _published_tree(publisher: Publisher, folder: RunFolder) -> Path:
    """A fresh copy of what clients see now, to add this release to."""
    tree = folder.tree
    shutil.rmtree(tree, ignore_errors=True)
    publisher.fetch_current(tree)
    return tree


def _run_is_live(run_id: str) -> bool:
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
    except (ObjectNotFound, ValueError):
        return False
    return run.state is not None and not run.state.is_final()


def sweep_dead_keyrings(folder: RunFolder) -> None:
    """Keyrings (and gpg-agents) that runs killed while signing left in their run folders (not `folder`'s)."""
    swept = sweep_gnupg_homes(folder.root.parent, lambda rid: rid == folder.root.name or _run_is_live(rid))
    if swept:
        get_run_logger().info("removed the signing keyrings that dead runs left: %s", ", ".join(swept))


def _sign_release(
    manifest: Manifest,
    plan: ReleasePlan,
    base_url: str | None,
    server: RepoServer,
    publisher: Publisher,
    image: dict[str, Any] | None = None,
) -> Path:
    sweep_dead_keyrings(plan.folder)
    tree = _published_tree(publisher, plan.folder)
    if plan.folder.docs.is_dir():  # what docs jobs built (tasks/jobs.py): in before the page links it
        shutil.copytree(plan.folder.docs, tree / "docs", dirs_exist_ok=True)
    release = IndexedRelease(
        id=plan.release_id,
        name=plan.name,
        release_class=plan.release_class,
        version=plan.version,
        commit=plan.commit,
        date=now_utc(),
        suites=list(plan.suites),
        targets=list(plan.targets),
        language_packages=[
            IndexedLanguagePackage(
                f.path.name, f.target, f.kind.value, f.registry or "", f.path.stat().st_size, f.sha256
            )
            for f in language_files(manifest, plan.targets, plan.folder.artifacts())
        ],
        image=dict(image or {}),  # the release's container image (tasks/oci.py), shown on the index page
    )
    with require_block(SigningKey, manifest.blocks.signing_key).signer(plan.folder.gnupg) as signer:
        result = sign_and_index(
            tree, manifest, release, _packages(manifest, plan), signer, base_url=base_url or server.url()
        )
    logger = get_run_logger()
    logger.info("APT: added %s; removed %s", result.apt_added, result.apt_removed or "nothing")
    logger.info("RPM: added %s; removed %s", result.rpm_added, result.rpm_removed or "nothing")
    return tree


def _holder(what: str) -> str:
    return f"flow run {flow_run.name or '?'} ({flow_run.id or 'no run'}): {what}"


def _publish(publisher: Publisher, release_id: str, tree: Path) -> PublishResult:
    logger = get_run_logger()

    def progress(step: str, done: int, total: int) -> None:
        if done == total or done % 100 == 0:
            logger.info("%s: %d/%d files", step, done, total)

    result = publisher.publish(tree, release_id, progress=progress)
    logger.info(
        "published %s: %d files (%d reused from the previous release, %d uploaded, %d bytes); current -> releases/%s",
        release_id,
        result.files,
        result.reused,
        result.uploaded,
        result.bytes_uploaded,
        release_id,
    )
    return result


@task(name="sign", task_run_name="sign", cache_policy=NO_CACHE)
def sign_repositories(manifest: Manifest, plan: ReleasePlan, base_url: str | None, workdir: str) -> str:
    """Build the new repository tree from the published one plus this release; return its path (dry runs)."""
    server = require_block(RepoServer, manifest.blocks.repo_server)
    publisher = server.publisher(workdir)
    with publisher.locked(_holder(f"reading {plan.release_id}"), get_run_logger().warning):
        return str(_sign_release(manifest, plan, base_url, server, publisher))


@task(
    name="sign-and-publish", task_run_name="sign and publish", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE
)
def sign_and_publish(
    manifest: Manifest, plan: ReleasePlan, base_url: str | None, workdir: str, image: dict[str, Any] | None = None
) -> PublishResult:
    """Read what is published, add this release, sign, publish: one critical section.

    The repository's own lock (a flock, locally or on the server) is held
    from reading `current` to switching it, so two releases never start from
    the same tree and neither's packages vanish from the indices. The kernel
    drops the lock with a dead holder, so a killed release blocks no one.
    """
    server = require_block(RepoServer, manifest.blocks.repo_server)
    publisher = server.publisher(workdir)
    with publisher.locked(_holder(f"publishing {plan.release_id}"), get_run_logger().warning):
        tree = _sign_release(manifest, plan, base_url, server, publisher, image)
        return _publish(publisher, plan.release_id, tree)


@task(name="switch-current", task_run_name="switch current", cache_policy=NO_CACHE)
def switch_current(repo_server: str, workdir: str, to: str | None) -> tuple[str | None, str]:
    """Roll `current` back to `to` (or the release before it); return (from, to)."""
    publisher = require_block(RepoServer, repo_server).publisher(workdir)
    with publisher.locked(_holder(f"rolling back to {to or 'the previous release'}"), get_run_logger().warning):
        current, target = publisher.rollback(to)
    get_run_logger().info("current: %s -> %s", current, target)
    return current, target


@task(name="promote", task_run_name="promote", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def promote_build(
    manifest: Manifest, build: str, as_tag: str, run_dir: str, workdir: str, base_url: str | None
) -> tuple[PublishResult, dict[str, Any]]:
    """The published tree plus `build`'s packages in the tag's suites, signed and published under the lock.

    Returns the publication and the image (if any) whose tags the flow then moves: outside this
    retried task, so a failed tag move is not retried as a second promotion ("already released"),
    and outside the lock, which registry I/O has no business holding."""
    server = require_block(RepoServer, manifest.blocks.repo_server)
    publisher = server.publisher(workdir)
    with publisher.locked(_holder(f"promoting {build} as {as_tag}"), get_run_logger().warning):
        folder = RunFolder(Path(run_dir))
        sweep_dead_keyrings(folder)
        tree = _published_tree(publisher, folder)
        promotion = prepare_promotion(manifest, tree, build, as_tag, folder.promoted_packages)
        source = promotion.source
        release_class = promotion.classification.release_class.value
        release = IndexedRelease(
            id=release_id(promotion.classification, datetime.now(UTC)),
            name=as_tag,
            release_class=release_class,
            version=source.version,
            commit=source.commit,
            date=now_utc(),
            suites=list(promotion.classification.suites),
            targets=source.targets,
            promoted_from=source.id,
            # promote publishes no language package: shown as collected only
            language_packages=[replace(p, registry="") for p in source.language_packages],
            # the development build's image index, re-tagged for the release after publication (tasks/oci.py)
            image=promoted_image(manifest, source.image, release_class, as_tag),
        )
        with require_block(SigningKey, manifest.blocks.signing_key).signer(folder.gnupg) as signer:
            sign_and_index(tree, manifest, release, promotion.packages, signer, base_url=base_url or server.url())
        get_run_logger().info("promoting %s (%s) as %s into %s", source.id, source.version, as_tag, release.suites)
        return _publish(publisher, release.id, tree), release.image
