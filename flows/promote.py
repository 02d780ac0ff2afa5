"""Promote a development build to a stable or extra release, without rebuilding.

No machine is created: the packages come from the published repository, are
added to the tag's suites, signed, and published like any release.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.runtime import flow_run as current_run

from dropship.errors import DropshipError, PublishError
from dropship.manifest import load_manifest
from dropship.run_folder import RunFolder
from tasks.oci import move_release_tags
from tasks.repository import promote_build
from tasks.settings import default_workdir
from tasks.summary import repository_url


@flow(name="promote", flow_run_name="promote {build} as {as_tag}", log_prints=True)
def promote(
    manifest: str, build: str, as_tag: str, workdir: str | None = None, base_url: str | None = None
) -> dict[str, Any]:
    """Publish the packages of development release `build` as release `as_tag` (e.g. v1.4.2)."""
    spec = load_manifest(manifest)
    workdir = workdir or str(default_workdir())
    run_dir = RunFolder.of(workdir, str(current_run.id)).root
    result, image = promote_build(spec, build, as_tag, str(run_dir), workdir, base_url)
    if image:  # the packages are out: the image's tags move, no build, no machine
        try:
            move_release_tags(spec, image)
        except DropshipError as exc:  # a second promote would say "already released": say how to finish
            tags = ", ".join(image["tags"])
            raise PublishError(
                f"{as_tag}'s packages are published, but its image tags ({tags}) did not move ({exc}): point them at "
                f"{image['repository']}@{image['digest']} with `skopeo copy --all` once the registry is back"
            ) from exc
    new_id = result.release_id
    url = repository_url(spec, base_url)
    create_markdown_artifact(
        key="promotion",
        markdown=f"# {spec.project.name} {as_tag}: promoted\n\n- from development build `{build}`\n"
        f"- release `{new_id}`: {result.files} files, {result.uploaded} uploaded\n- machines created: 0\n",
    )
    if url:
        create_link_artifact(key="release-repository", link=f"{url.rstrip('/')}/index.html", link_text=f"{as_tag}")
    return {"release_id": new_id, "promoted_from": build, "tag": as_tag, "location": result.location}
