"""The per-target build, run by the Prefect worker on the target's machine: one flow run, the
build itself (`tasks.build.run_build`), with no task run of its own (a build container's
prefect-docker calls are task runs in it)."""

from __future__ import annotations

from prefect import flow

from tasks.build import run_build


@flow(name="build", log_prints=True)
def build(
    target: str,
    workspace: str,
    archive: str,
    command: list[str],
    artifacts: list[str],
    version: str,
    env: dict[str, str] | None = None,
    timeout: float = 1800.0,
    build_user: str | None = None,
    image: dict[str, str] | None = None,
    container: dict[str, str] | None = None,
) -> dict[str, object]:
    """Unpack the uploaded source, run the build command, write report.json.

    The orchestrator reads the report over SFTP, not this return value: a
    machine's result storage is its own disk. The command runs with an
    allow-listed environment, as `build_user` where the worker is root.
    `image` (oci targets: dockerfile, platform) then builds the target's image.
    `container` (reference pinned by digest, credentials block name) runs the
    command in that image through prefect-docker (tasks/containers.py).
    """
    report = run_build(
        target, workspace, archive, command, artifacts, version, env or {}, timeout, build_user, image, container
    )
    return {"target": report.target, "artifacts": [a.name for a in report.artifacts], "seconds": report.seconds}
