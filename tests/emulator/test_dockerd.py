"""The emulator's own dockerd: starts under a folder, converts Docker's errors, and
stops with every container and its containerd."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dropship.emulator.dockerd import DockerDaemon
from dropship.emulator.image import ensure_image
from dropship.errors import MachineError


def _processes_under(folder: Path) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(folder) in cmdline:
                found.append(f"{entry.name} {cmdline[:120]}")
    return found


def test_daemon_stops_with_its_containers(tmp_path: Path, stock_image: str) -> None:
    daemon = DockerDaemon(tmp_path / "dockerd").start()
    try:
        assert daemon.client.ping() and daemon.socket.exists()
        ref = ensure_image(daemon)  # the cached tarball, imported into this daemon
        daemon.run(ref, ["sleep", "infinity"], name="sleeper", mounts={}, hostname="sleeper", labels={})
        container = daemon.container("sleeper")
        assert container is not None and container.status == "running"
        pid = int(container.attrs["State"]["Pid"])
        assert os.path.exists(f"/proc/{pid}")
    finally:
        daemon.stop()
    assert not os.path.exists(f"/proc/{pid}")
    assert _processes_under(tmp_path) == []
    assert not daemon.socket.exists()


def test_docker_errors_become_machine_errors(dockerd: DockerDaemon) -> None:
    dockerd.remove("no-such-container")  # already gone: fine
    assert dockerd.container("no-such-container") is None
    with pytest.raises(MachineError, match="start container no-such-container"):
        dockerd.start_container("no-such-container")
    with pytest.raises(MachineError, match="start container bad"):
        dockerd.run("no-such-image:1", ["true"], name="bad", mounts={}, hostname="bad", labels={})
