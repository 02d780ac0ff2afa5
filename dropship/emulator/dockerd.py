"""A dockerd the emulator owns, and the few Docker calls its droplets need.

The daemon itself is `dropship.dockerd` (never the system's; stopping it
takes its containerd and every container with it); this module adds what
droplets need. Containers run on the network `run` is given (`none` for
droplets: `dropship.emulator.network` plays their wire).

This is the one boundary where Docker's errors (the `docker` SDK's
`DockerException` family, a daemon that does not start) become
`MachineError`s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
from docker.models.containers import Container

from dropship import dockerd
from dropship.dockerd import short_folder, sweep
from dropship.errors import MachineError

__all__ = ["DockerDaemon", "short_folder", "sweep"]

T = TypeVar("T")


@contextmanager
def _docker_errors(what: str) -> Iterator[None]:
    try:
        yield
    except docker.errors.NotFound as exc:
        raise MachineError(f"{what}: not found in the emulator's dockerd ({_short(exc)})") from exc
    except docker.errors.DockerException as exc:
        raise MachineError(f"{what}: {_short(exc)}") from exc
    except OSError as exc:  # the socket went away: the daemon died
        raise MachineError(f"{what}: the emulator's dockerd is not answering ({exc})") from exc


def _short(exc: Exception) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return " ".join(str(text).split())[:300]


class DockerDaemon(dockerd.DockerDaemon):
    """The emulator's dockerd (`dropship.dockerd`) and the calls its droplets make."""

    missing = "dockerd not found: install Debian's docker.io (the emulator runs droplets as containers)"
    unprivileged = "container droplets need root to run dockerd; use the process backend (--machines processes)"

    # --- the calls droplets make ---------------------------------------------
    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one Docker SDK call, its errors turned into `MachineError(what: ...)`."""
        with _docker_errors(what):
            return fn()

    def has_image(self, ref: str) -> bool:
        with _docker_errors(f"look up image {ref}"):
            try:
                self.client.images.get(ref)
                return True
            except docker.errors.ImageNotFound:
                return False

    def import_tarball(self, tarball: Path, repository: str, tag: str) -> None:
        with _docker_errors(f"docker import of {tarball.name}"):
            self.client.api.import_image_from_file(str(tarball), repository=repository, tag=tag)

    def run(
        self,
        image: str,
        command: list[str],
        *,
        name: str,
        mounts: dict[str, str],
        hostname: str,
        read_only_mounts: dict[str, str] | None = None,
        labels: dict[str, str],
        capabilities: tuple[str, ...] = (),
        network_mode: str = "host",
    ) -> Container:
        """A detached container on `network_mode` ("host", or "none": a namespace with loopback only) with
        `mounts` (host folder -> path inside) and `read_only_mounts` (the same, read-only), with
        `capabilities` added to Docker's default set."""
        volumes = {host: {"bind": inside, "mode": "rw"} for host, inside in mounts.items()}
        volumes |= {host: {"bind": inside, "mode": "ro"} for host, inside in (read_only_mounts or {}).items()}
        with _docker_errors(f"start container {name}"):
            container: Container = self.client.containers.run(
                image,
                command,
                name=name,
                detach=True,
                network_mode=network_mode,
                volumes=volumes,
                hostname=hostname,
                labels=labels,
                cap_add=list(capabilities),
                stop_signal="SIGTERM",
                tmpfs={"/run": "rw,nosuid,nodev,mode=755"},  # cleared at each boot, as on a machine
            )
            return container

    def container(self, name: str) -> Container | None:
        with _docker_errors(f"look up container {name}"):
            try:
                found: Container = self.client.containers.get(name)
                return found
            except docker.errors.NotFound:
                return None

    def remove(self, name: str) -> None:
        """`docker rm -f`; a container already gone is fine."""
        with _docker_errors(f"remove container {name}"):
            try:
                self.client.containers.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass

    def stop_container(self, name: str, timeout: int = 5) -> None:
        with _docker_errors(f"stop container {name}"):
            self.client.containers.get(name).stop(timeout=timeout)

    def start_container(self, name: str) -> None:
        with _docker_errors(f"start container {name}"):
            self.client.containers.get(name).start()

    def commit(self, name: str, repository: str, tag: str) -> dict[str, Any]:
        """`docker commit`; returns the image's attributes (Id, Size, ...)."""
        with _docker_errors(f"commit container {name}"):
            image = self.client.containers.get(name).commit(repository=repository, tag=tag, pause=True)
            attrs: dict[str, Any] = image.attrs
            return attrs

    def remove_image(self, ref: str) -> None:
        with _docker_errors(f"remove image {ref}"):
            try:
                self.client.images.remove(ref, force=True)
            except docker.errors.ImageNotFound:
                pass

    def exec(self, name: str, argv: list[str]) -> tuple[int, str]:
        """Run `argv` in a running container (for tests: a look inside a droplet without SSH)."""
        with _docker_errors(f"exec in container {name}"):
            code, output = self.client.containers.get(name).exec_run(argv)
            return int(code), output.decode(errors="replace")
