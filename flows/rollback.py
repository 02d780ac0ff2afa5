"""Roll the repository back: point `current` at an earlier release, atomically."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run as current_run

from dropship.manifest import load_manifest
from tasks.oci import restore_image_tags
from tasks.repository import switch_current
from tasks.settings import default_workdir


def _run_name() -> str:
    return f"rollback to {current_run.parameters.get('to') or 'the previous release'}"


@flow(name="rollback", flow_run_name=_run_name, log_prints=True)
def rollback(manifest: str, to: str | None = None, workdir: str | None = None) -> dict[str, Any]:
    """Switch `current` to release `to`, or to the one published before the current one."""
    spec = load_manifest(manifest)
    workdir = workdir or str(default_workdir())
    previous, target = switch_current(spec.blocks.repo_server, workdir, to)
    image = restore_image_tags(spec, workdir, target)  # [oci]: that release's tags back on its image index
    create_markdown_artifact(
        key="rollback", markdown=f"# {spec.project.name}: rolled back\n\n`{previous}` -> `{target}`\n"
    )
    result: dict[str, Any] = {"from": previous, "to": target}
    if image:
        result["image"] = image
    return result
