"""A dockerd the emulator owns, and the few Docker calls its droplets need.

Never the system's daemon: `dockerd --iptables=false --bridge=none` with its
data root, exec root, pid file and socket under one folder, started in its
own session so stopping it (SIGTERM, then SIGKILL of the whole group) takes
its containerd and every container with it. Containers run on the network `run` is given
(`none` for droplets: `dropship.emulator.network` plays their wire).

This is the one boundary where Docker's errors (the `docker` SDK's
`DockerException` family, a daemon that does not start) become
`MachineError`s.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
from docker.models.containers import Container

from dropship.errors import ConfigError, MachineError

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


class DockerDaemon:
    """`dockerd` with its data root and log under `folder`; its socket and exec root (where containerd's
    socket lives) under a short `/tmp/dsd-<hash>/`, as unix socket paths cap at 108 bytes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.short = short_folder(self.folder)
        self.socket = self.short / "d.sock"
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: docker.DockerClient | None = None

    @property
    def host(self) -> str:
        """The value for DOCKER_HOST."""
        return f"unix://{self.socket}"

    @property
    def log_path(self) -> Path:
        return self.folder / "dockerd.log"

    def start(self, timeout: float = 60.0) -> DockerDaemon:
        dockerd = shutil.which("dockerd", path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin")
        if not dockerd:
            raise ConfigError(
                "dockerd not found: install Debian's docker.io (the emulator runs droplets as containers)"
            )
        if os.geteuid() != 0:
            raise ConfigError(
                "container droplets need root to run dockerd; use the process backend (--machines processes)"
            )
        (self.folder / "data").mkdir(parents=True, exist_ok=True)
        (self.short / "exec").mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        argv = [
            dockerd,
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--ip-masq=false",
            "--data-root",
            str(self.folder / "data"),
            "--exec-root",
            str(self.short / "exec"),
            "--pidfile",
            str(self.folder / "dockerd.pid"),
            "-H",
            self.host,
        ]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                client = docker.DockerClient(base_url=self.host, version="auto", timeout=120)
                client.ping()
                self._client = client
                return self
            except (docker.errors.DockerException, OSError):
                time.sleep(0.2)
        tail = self.log_path.read_text(errors="replace")[-600:].replace("\n", " | ")
        self.stop()
        raise MachineError(f"dockerd did not start in {timeout:.0f} s (log {self.log_path}): {tail}")

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            raise MachineError("the emulator's dockerd is not running: start() it first")
        return self._client

    def stop(self, grace: float = 10.0) -> None:
        """Remove every container, then stop dockerd and its containerd."""
        if self._client is not None:
            try:
                for container in self._client.containers.list(all=True):
                    container.remove(force=True)
            except (docker.errors.DockerException, OSError):
                pass
            self._client.close()
            self._client = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        _killpg(proc.pid, signal.SIGKILL)  # containerd and shims left in the group
        proc.wait(timeout=10)
        _unmount_under((self.folder, self.short))  # dockerd leaves its netns and data-root mounts behind
        self.socket.unlink(missing_ok=True)
        shutil.rmtree(self.short, ignore_errors=True)

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
        labels: dict[str, str],
        capabilities: tuple[str, ...] = (),
        network_mode: str = "host",
    ) -> Container:
        """A detached container on `network_mode` ("host", or "none": a namespace with loopback only) with
        `mounts` (host folder -> path inside), with `capabilities` added to Docker's default set."""
        volumes = {host: {"bind": inside, "mode": "rw"} for host, inside in mounts.items()}
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
        """Run `argv` in a running container (for tests: the hypervisor's console)."""
        with _docker_errors(f"exec in container {name}"):
            code, output = self.client.containers.get(name).exec_run(argv)
            return int(code), output.decode(errors="replace")


def short_folder(folder: Path) -> Path:
    """Where the daemon of `folder` keeps its socket and exec root: `/tmp/dsd-<hash>` (socket paths cap at 108 bytes)."""
    tag = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:10]
    return Path(f"/tmp/dsd-{tag}")


def sweep(folder: Path) -> None:
    """What a daemon of `folder` killed without `stop()` leaves (mounts, its /tmp folder, the data root).
    Call it once its processes are gone."""
    short = short_folder(folder)
    _unmount_under((folder.resolve(), short))
    shutil.rmtree(short, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)


def _unmount_under(folders: tuple[Path, ...]) -> None:
    """Lazily unmount every mount point under `folders`, deepest first."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    points = [line.split()[1].replace("\\040", " ") for line in lines if len(line.split()) > 1]
    prefixes = tuple(f"{folder}/" for folder in folders)
    for point in sorted((p for p in points if p.startswith(prefixes)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
