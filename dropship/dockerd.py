"""A dockerd of dropship's own: never the system's daemon.

`dockerd --iptables=false --bridge=none` with its data root, pid file and log
under one folder, its socket and exec root under a short `/tmp/dsd-<hash>/`
(unix socket paths cap at 108 bytes), started in its own session. `stop()`
removes every container, stops dockerd (SIGTERM, then SIGKILL of its group;
containerd dies with it), kills what outlives both (each container's
containerd shim, which works in the container's bundle under the exec root,
and the processes of the daemon's containers, found by their ids in their
cgroups), and unmounts what dockerd
mounted. `sweep(folder)` does the last two for a daemon killed without
`stop()`: a local machine's deletion calls it on the machine's own daemon
folder (`DOCKERD_FOLDER` in the build's workspace), so a build killed with its
machine leaves no dockerd, containerd, shim, container, mount or /tmp folder.

Three users: a build container's daemon and an image target's (`BuildDaemon`:
the dockerd of one build, in the build's workspace), and the DigitalOcean
emulator's (`dropship.emulator.dockerd`, which adds the calls its droplets make).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import ClassVar, Self

import docker
import docker.errors

from dropship.errors import BuildFailed, ConfigError, DropshipError, MachineError

DOCKERD_FOLDER = "dockerd"
"""A build's dockerd folder, in the build's workspace (the machine's own folder): where the machine's
deletion sweeps what a killed build's daemon leaves."""


def search_path() -> str:
    """Where dockerd is looked for: PATH, and Debian's folders for it (a worker's PATH may lack sbin)."""
    return os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin"


def find_dockerd(path: str | None = None) -> str | None:
    return shutil.which("dockerd", path=path if path is not None else search_path())


class DockerDaemon:
    """`dockerd` with its data root and log under `folder`; its socket and exec root (where containerd's
    socket lives) under a short `/tmp/dsd-<hash>/`."""

    missing: ClassVar[str] = "dockerd not found: install Debian's docker.io"
    unprivileged: ClassVar[str] = "dockerd needs root: run this as root"

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

    def start(self, timeout: float = 60.0) -> Self:
        dockerd = find_dockerd()
        if not dockerd:
            raise ConfigError(self.missing)
        if os.geteuid() != 0:
            raise ConfigError(self.unprivileged)
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
            raise MachineError(f"the dockerd of {self.folder} is not running: start() it first")
        return self._client

    def stop(self, grace: float = 10.0) -> None:
        """Remove every container, then stop dockerd and its containerd, and kill what outlives them."""
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
        _killpg(proc.pid, signal.SIGKILL)  # containerd left in the group
        proc.wait(timeout=10)
        _kill_leftovers(self.folder, self.short)  # a daemon that died before removing its containers
        _unmount_under((self.folder, self.short))  # dockerd leaves its netns and data-root mounts behind
        self.socket.unlink(missing_ok=True)
        shutil.rmtree(self.short, ignore_errors=True)


class BuildDaemon:
    """The dockerd of one build, in `folder` (`<workspace>/DOCKERD_FOLDER`); a context manager that starts
    it (after sweeping what a killed build left there) and stops and sweeps it. `purpose` says what needs
    it, in the build's one-line errors."""

    def __init__(self, folder: Path, target: str, purpose: str, search: str | None = None) -> None:
        self.target = target
        self.purpose = purpose
        self.daemon = DockerDaemon(folder)
        self.search = search

    @property
    def host(self) -> str:
        """`unix:///tmp/dsd-.../d.sock`, for a prefect-docker `DockerHost(base_url=...)`."""
        return self.daemon.host

    def __enter__(self) -> BuildDaemon:
        if find_dockerd(self.search) is None:
            raise BuildFailed(
                self.target,
                f'{self.purpose} needs Docker, and dockerd is not on the machine: add "docker.io" '
                "to the target's setup (or use an image that has it)",
            )
        if os.geteuid() != 0:
            raise BuildFailed(self.target, f"{self.purpose} needs a worker running as root to start its dockerd")
        sweep(self.daemon.folder)  # a killed build's leftovers
        try:
            self.daemon.start()
        except DropshipError as exc:
            raise BuildFailed(self.target, f"could not start a dockerd for {self.purpose}: {exc}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self.daemon.stop()
        sweep(self.daemon.folder)


def short_folder(folder: Path) -> Path:
    """Where the daemon of `folder` keeps its socket and exec root: `/tmp/dsd-<hash>` (socket paths cap at 108 bytes)."""
    tag = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:10]
    return Path(f"/tmp/dsd-{tag}")


def sweep(folder: Path) -> None:
    """What a daemon of `folder` killed without `stop()` leaves (shims and their containers, mounts, its
    /tmp folder, the data root). Call it once dockerd and containerd are gone."""
    short = short_folder(folder)
    _kill_leftovers(folder.resolve(), short)
    _unmount_under((folder.resolve(), short))
    shutil.rmtree(short, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)


def _kill_leftovers(folder: Path, short: Path) -> None:
    """SIGKILL what outlives a dead dockerd and containerd: every containerd shim working under `short`
    (the exec root; a shim outlives containerd by design) and every process of the daemon's containers
    (found by the container ids of its data root in their cgroups: a container outlives its shim)."""
    try:
        ids = {p.name for p in (folder / "data" / "containers").iterdir() if len(p.name) == 64}
    except OSError:
        ids = set()
    prefix = f"{short}/"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            shim = os.readlink(entry / "cwd").startswith(prefix)
            groups = (entry / "cgroup").read_text() if ids else ""
        except OSError:
            continue
        if shim or any(container in groups for container in ids):  # cgroupfs /docker/<id>, systemd docker-<id>.scope
            _kill(int(entry.name))


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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
