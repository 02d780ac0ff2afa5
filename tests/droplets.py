"""Container droplets for tests: one dockerd for the session, the cached stock image,
and emulators whose droplets are containers of it.

Registered as a plugin in `tests/conftest.py`, so any test can ask for
`dockerd`, `stock_image` or `container_emulator`. The stock image's tarball is
cached across sessions (`$DROPSHIP_CACHE` or `~/.cache/dropship/images/`);
only the first session on a machine pays for debootstrap.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydo
import pytest
from azure.core.pipeline.policies import RetryPolicy

from dropship.emulator.dockerd import DockerDaemon
from dropship.emulator.image import BuildLog, ensure_image
from dropship.emulator.server import EmulatorServer
from dropship.emulator.state import Emulator
from dropship.ports import free_port

TOKEN = "dop_v1_emulator_token"


@pytest.fixture(scope="session")
def dockerd() -> Iterator[DockerDaemon]:
    """A dockerd of our own for the session (never the system's), stopped with every container at the end."""
    folder = Path(tempfile.mkdtemp(prefix="dropship-dockerd-"))
    started = time.monotonic()
    daemon = DockerDaemon(folder).start()
    print(f"\n[droplets] dockerd up in {time.monotonic() - started:.1f} s", flush=True)
    yield daemon
    started = time.monotonic()
    daemon.stop()
    print(f"\n[droplets] dockerd stopped in {time.monotonic() - started:.1f} s", flush=True)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def stock_image(dockerd: DockerDaemon) -> str:
    """The stock `debian-12-x64` image in the session's dockerd (debootstrap only if not cached)."""
    log = BuildLog()
    started = time.monotonic()
    ref = ensure_image(dockerd, log=log)
    built = (
        f"debootstrap+customise {log.debootstrap_seconds:.0f} s (cold)" if log.debootstrap_seconds else "tarball cached"
    )
    print(
        f"\n[droplets] stock image {ref}: {built}; docker import {log.import_seconds or 0:.1f} s; "
        f"total {time.monotonic() - started:.1f} s",
        flush=True,
    )
    return ref


@dataclass
class EmulatorUnderTest:
    emulator: Emulator
    url: str
    client: pydo.Client

    def call(self, operation: Callable[..., object], **kwargs: object) -> dict[str, object]:
        """A pydo call over the emulator's plain-HTTP loopback (azure-core wants HTTPS for bearer tokens)."""
        answer = operation(**kwargs, enforce_https=False)
        assert isinstance(answer, dict) or answer is None
        return answer or {}


def pydo_client(url: str, token: str = TOKEN) -> pydo.Client:
    return pydo.Client(token=token, endpoint=url, retry_policy=RetryPolicy(retry_total=0), timeout=60)


@pytest.fixture
def container_emulator(dockerd: DockerDaemon, stock_image: str, tmp_path: Path) -> Iterator[EmulatorUnderTest]:
    """An emulator whose droplets are containers in the session's dockerd. SSH is on a free port of each
    droplet's address rather than 22: any process of the shared host listening on 0.0.0.0:22 holds 22 on
    every loopback address (`emulator.ssh_port` says which)."""
    emulator = Emulator(tmp_path / "emulator", token=TOKEN, machines="containers", docker=dockerd, ssh_port=free_port())
    server = EmulatorServer(emulator).start()
    yield EmulatorUnderTest(emulator, server.url, pydo_client(server.url))
    server.stop()
    assert emulator.alive() == []
    assert dockerd.client.containers.list(all=True, filters={"label": f"dropship.emulator={emulator.instance}"}) == []
