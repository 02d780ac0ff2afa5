"""The release's container images: push per-arch images and their index, then move tags (dropship/oci.py).

The credentials come from prefect-docker's `DockerRegistryCredentials` block
named by `[oci] credentials`, read here on the orchestrator and handed to
dropship as plain values: they never reach a build machine, a log or a summary.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect_docker.credentials import DockerRegistryCredentials

from blocks.repo_server import RepoServer
from blocks.values import require_block
from dropship.containers import check_block_registry, missing_block
from dropship.errors import ImageError
from dropship.manifest import Manifest, PackageFormat
from dropship.oci import (
    IndexImage,
    RegistryAuth,
    Skopeo,
    current_tags,
    image_tags,
    move_tags,
    parse_repository,
    push_archive,
    push_index,
)
from dropship.oci_build import image_archive_name
from dropship.plan import ReleasePlan
from dropship.progress import event
from dropship.repos.index import INDEX_JSON, load_index
from dropship.summary import ImageSummary


def image_targets(manifest: Manifest, plan: ReleasePlan) -> list[str]:
    return [n for n in plan.targets if manifest.target(n).format is PackageFormat.OCI]


def registry_auth(manifest: Manifest) -> RegistryAuth:
    """Plain values from the `DockerRegistryCredentials` block, for the repository's registry."""
    assert manifest.oci is not None
    registry, _path = parse_repository(manifest.oci.repository)
    try:
        block = require_block(DockerRegistryCredentials, manifest.oci.credentials)
    except ValueError as exc:
        raise missing_block(manifest.oci.credentials, "[oci] credentials", registry) from exc
    # the manifest must not send this block's password to another host
    check_block_registry(manifest.oci.credentials, block.registry_url, registry, "[oci] repository")
    return RegistryAuth(registry, block.username, block.password.get_secret_value())


@task(name="push-images", task_run_name="push images", cache_policy=NO_CACHE)
def push_images(manifest: Manifest, plan: ReleasePlan) -> ImageSummary | None:
    """Every image target's archive pushed by digest, then one index of them by digest: no tag moves here."""
    names = image_targets(manifest, plan)
    if not names or manifest.oci is None:
        return None
    repository = manifest.oci.repository
    with Skopeo(registry_auth(manifest)) as skopeo:
        images = []
        for name in names:
            archive = plan.folder.artifacts(name) / image_archive_name(name)
            if not archive.is_file():
                raise ImageError(f"target {name} brought back no image archive ({archive.name})")
            images.append(push_archive(skopeo, archive, repository))
        index: IndexImage = push_index(skopeo, repository, images)
    get_run_logger().info(
        "%s@%s: %s",
        repository,
        index.digest,
        ", ".join(f"{p.platform} {p.digest[:19]}" for p in index.platforms),
        extra=event("image", "running"),
    )
    return ImageSummary(
        repository=repository,
        digest=index.digest,
        tags=image_tags(plan.release_class, plan.version, plan.commit),
        platforms={p.platform: p.digest for p in index.platforms},
    )


@task(name="tag-images", task_run_name="tag images", cache_policy=NO_CACHE)
def tag_images(manifest: Manifest, image: ImageSummary) -> ImageSummary:
    """Point the release's tags at its index; record what they pointed at before (what rollback restores)."""
    with Skopeo(registry_auth(manifest)) as skopeo:
        image.previous = move_tags(skopeo, image.repository, image.digest, image.tags)
    image.tagged = True
    get_run_logger().info(
        "%s: %s -> %s", image.repository, ", ".join(image.tags), image.digest[:19], extra=event("image")
    )
    return image


@task(name="check-registry", task_run_name="check registry", cache_policy=NO_CACHE)
def check_registry(manifest: Manifest, plan: ReleasePlan) -> dict[str, str | None] | None:
    """Before any machine: the credentials block exists and the registry accepts it.
    Returns where the release's tags point now (None: new tag)."""
    if not image_targets(manifest, plan) or manifest.oci is None:
        return None
    tags = image_tags(plan.release_class, plan.version, plan.commit)
    with Skopeo(registry_auth(manifest)) as skopeo:
        now = current_tags(skopeo, manifest.oci.repository, tags)
    get_run_logger().info(
        "registry %s accepts block %r; %s",
        manifest.oci.repository,
        manifest.oci.credentials,
        ", ".join(f"{t} -> {d[:19] if d else 'new'}" for t, d in now.items()),
        extra=event("check", name="registry"),
    )
    return now


def promoted_image(manifest: Manifest, source: dict[str, Any], release_class: str, as_tag: str) -> dict[str, Any]:
    """The image entry of a promotion: the development build's index, with the new release's tags."""
    if manifest.oci is None or not source.get("digest"):
        return {}
    tags = image_tags(release_class, as_tag.removeprefix("v"), "")  # a release class: no commit in its tags
    return {**source, "tags": tags, "tagged": False, "previous": {}}


@task(name="move-image-tags", task_run_name="move image tags", cache_policy=NO_CACHE)
def move_release_tags(manifest: Manifest, image: dict[str, Any]) -> dict[str, str | None]:
    """Point `image`'s tags at its index (no build, no machine); returns what they pointed at before."""
    with Skopeo(registry_auth(manifest)) as skopeo:
        before = move_tags(skopeo, image["repository"], image["digest"], image["tags"])
    get_run_logger().info(
        "%s: %s -> %s", image["repository"], ", ".join(image["tags"]), image["digest"][:19], extra=event("image")
    )
    return before


@task(name="restore-image-tags", task_run_name="restore image tags", cache_policy=NO_CACHE)
def restore_image_tags(manifest: Manifest, workdir: str, release_id: str) -> dict[str, Any]:
    """After a repository rollback to `release_id`: move that release's image tags back to its index.
    Tags of the release rolled back from that no earlier release had stay: a registry deletes manifests, not tags."""
    if manifest.oci is None:
        return {}
    with tempfile.TemporaryDirectory(prefix="dropship-rollback-") as scratch:
        tree = Path(scratch) / "tree"
        require_block(RepoServer, manifest.blocks.repo_server).publisher(workdir).fetch_current(tree, only={INDEX_JSON})
        release = next((r for r in load_index(tree) if r.id == release_id), None)
    if release is None or not release.image.get("digest"):
        get_run_logger().info("release %s has no image: no tag moved", release_id)
        return {}
    move_release_tags(manifest, release.image)
    return release.image
