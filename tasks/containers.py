"""Build containers (`container = "<image>"`), the Prefect side: prefect-docker's blocks and tasks.

On the orchestrator, while planning: each build image's tag is resolved to a
digest with the target's `DockerRegistryCredentials` block (`resolve_build_images`),
so the content hash covers the image and the machine pulls exactly that digest.

On the machine, in the build flow: `ContainerRunner` runs the build command in
that image through prefect-docker's tasks (`pull_docker_image`,
`create_docker_container`, `start_docker_container`, `get_docker_container_logs`,
`remove_docker_container`), each a task run of the build in the UI, against a
`DockerHost` pointing at the build's own dockerd (`dropship.containers.BuildDocker`).
The block is loaded on the machine (every block is readable there, see the
threat model in docs/architecture.md) and checked against the image's registry
before its login; the password goes only to that dockerd's login call.
"""

from __future__ import annotations

import os
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from prefect import get_run_logger
from prefect.cache_policies import NO_CACHE
from prefect.utilities.asyncutils import run_coro_as_sync
from prefect_docker.containers import (
    create_docker_container,
    get_docker_container_logs,
    remove_docker_container,
    start_docker_container,
)
from prefect_docker.credentials import DockerRegistryCredentials
from prefect_docker.host import DockerHost
from prefect_docker.images import pull_docker_image

from blocks.values import load_registries, require_block
from dropship.containers import (
    BuildDocker,
    check_block_registry,
    container_environment,
    docker_errors,
    missing_block,
    parse_image,
    pin_build_images,
    run_spec,
)
from dropship.errors import BuildFailed, CommandError
from dropship.manifest import Manifest
from dropship.redaction import redact_secrets

T = TypeVar("T")
MARKER = "DROPSHIP_MACHINE_ID"


def load_credentials(block: str, registry: str, used_by: str) -> DockerRegistryCredentials:
    """The block, refused when missing or for another registry than `registry` (before any login)."""
    try:
        credentials = require_block(DockerRegistryCredentials, block)
    except ValueError as exc:
        raise missing_block(block, used_by, registry) from exc
    check_block_registry(block, credentials.registry_url, registry, used_by)
    return credentials


def resolve_build_images(manifest: Manifest, targets: tuple[str, ...]) -> dict[str, str]:
    """{target: registry/name@sha256:...} for `targets` (each has a `container`), asked of each registry now
    with the targets' blocks (`dropship.containers.pin_build_images`)."""
    pinned = pin_build_images(manifest, targets, load_registries(manifest, targets))
    logger = get_run_logger()
    for name, reference in pinned.items():
        logger.info("target %s builds in %s = %s", name, manifest.target(name).container, reference.rsplit("@", 1)[1])
    return pinned


def _sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """prefect-docker's tasks are async; the build flow is not."""
    return run_coro_as_sync(coroutine)


class ContainerRunner:
    """Runs a build command in `reference` (pinned by digest) on the build's own dockerd."""

    def __init__(self, *, target: str, workspace: Path, reference: str, credentials: str) -> None:
        self.target = target
        self.workspace = workspace
        self.image = parse_image(reference)
        if self.image.digest is None:
            raise BuildFailed(target, f"the build image {reference} is not pinned by digest: re-run the release")
        self.credentials = credentials

    def __call__(
        self, command: list[str], *, cwd: Path, env: dict[str, str], timeout: float, identity: tuple[int, int] | None
    ) -> str:
        logger = get_run_logger()
        assert self.image.digest is not None
        reference = self.image.pinned(self.image.digest)
        credentials = load_credentials(self.credentials, self.image.registry, f"the container of {self.target}")
        secret = credentials.password.get_secret_value()
        home = Path(env["HOME"])
        spec = run_spec(
            source=cwd,
            home=home,
            env=container_environment(env, os.environ.get(MARKER)),
            identity=identity,
            target=self.target,
        )
        with BuildDocker(self.workspace, self.target) as docker:
            host = DockerHost(base_url=docker.host, version="auto", timeout=int(min(timeout, 3600)) + 60)
            started = time.monotonic()
            try:
                with docker_errors(self.target, f"pulling {reference}"):
                    _sync(
                        pull_docker_image.with_options(
                            cache_policy=NO_CACHE, task_run_name=f"pull {self.image.repository}"
                        )(
                            repository=self.image.repository,
                            tag=self.image.digest,
                            docker_host=host,
                            docker_registry_credentials=credentials,
                        )
                    )
            except BuildFailed as exc:  # the daemon's message may echo what it was sent
                reason = redact_secrets(exc.reason, credentials.username, secret)
                if "unauthorized" in reason.lower() or "authentication required" in reason.lower():
                    reason += (
                        f": check the username and password in the DockerRegistryCredentials block {self.credentials!r}"
                    )
                raise BuildFailed(self.target, reason) from None  # the daemon's own error may carry the password
            logger.info("pulled %s in %.1f s", reference, time.monotonic() - started)
            with docker_errors(self.target, f"creating the build container from {reference}"):
                container = _sync(
                    create_docker_container.with_options(cache_policy=NO_CACHE, task_run_name="create build container")(
                        image=reference, command=command, docker_host=host, **spec
                    )
                )
            try:
                self._start(host, container.id, command)
                code = self._wait(host, container.id, timeout)
                with docker_errors(self.target, "reading the build container's output"):
                    output: str = _sync(
                        get_docker_container_logs.with_options(cache_policy=NO_CACHE, task_run_name="build output")(
                            container_id=container.id, docker_host=host, stdout=True, stderr=True
                        )
                    )
            finally:
                self._remove(host, container.id)
        if code is None:
            raise CommandError(command, -1, f"{output}\ntimed out after {timeout} s", f"build of {self.target}")
        if code != 0:
            raise CommandError(command, code, output, f"build of {self.target} in {self.image.repository}")
        return output

    def _remove(self, host: DockerHost, container_id: str) -> None:
        """Remove the build container; a failure is logged, never raised: it must not hide the build's own
        error, and the container goes anyway with the build's dockerd (stopped with every container next)."""
        try:
            with docker_errors(self.target, "removing the build container"):
                _sync(
                    remove_docker_container.with_options(cache_policy=NO_CACHE, task_run_name="remove build container")(
                        container_id=container_id, docker_host=host, force=True
                    )
                )
        except BuildFailed as exc:
            get_run_logger().warning("%s; the build's dockerd is stopped with it", exc.reason)

    def _start(self, host: DockerHost, container_id: str, command: list[str]) -> None:
        """Start the container; a program the image lacks fails as it does without a container (exit 127)."""
        import docker.errors

        with docker_errors(self.target, "starting the build container"):
            try:
                _sync(
                    start_docker_container.with_options(cache_policy=NO_CACHE, task_run_name="start build container")(
                        container_id=container_id, docker_host=host
                    )
                )
            except docker.errors.APIError as exc:
                text = str(exc.explanation or exc)
                if "executable file not found" in text or "no such file or directory" in text:
                    raise CommandError(
                        command, 127, f"{command[0]}: not found in {self.image.repository}", f"build of {self.target}"
                    ) from exc
                raise

    def _wait(self, host: DockerHost, container_id: str, timeout: float) -> int | None:
        """The container's exit code, or None (and the container killed) when it outlived `timeout`."""
        import requests

        with docker_errors(self.target, "waiting for the build container"), host.get_client() as client:
            container = client.containers.get(container_id)
            try:
                status = container.wait(timeout=timeout)
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):  # docker-py's wait timeout
                container.kill()
                return None
            return int(status.get("StatusCode", -1))
