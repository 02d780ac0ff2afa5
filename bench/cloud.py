"""The emulated cloud the droplet benches run in, set up and torn down in one place.

A Prefect server that requires an auth string (as a production orchestrator
does), a dockerd of the bench's own, the DigitalOcean emulator with container
droplets of the stock Debian 12 image, and the DigitalOceanCredentials block
pointing at it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dropship.emulator.dockerd import DockerDaemon
from dropship.emulator.image import ensure_image
from dropship.emulator.server import EmulatorServer
from dropship.emulator.state import Emulator
from dropship.ports import free_port
from dropship.prefect_server import LocalPrefectServer


@dataclass(frozen=True)
class Cloud:
    work: Path
    """The bench's folder (removed at the end)."""
    emulator: Emulator
    api: EmulatorServer


@contextmanager
def emulated_cloud(name: str, *, token: str, auth: str) -> Iterator[Cloud]:
    """Everything a droplet bench needs, stopped and removed when the block ends."""
    work = Path(tempfile.mkdtemp(prefix=f"dropship-bench-{name}-"))
    server = LocalPrefectServer(
        work / "prefect", startup_timeout=300, extra_env={"PREFECT_SERVER_API_AUTH_STRING": auth}
    )
    server.start()
    server.export_env()
    os.environ["PREFECT_API_AUTH_STRING"] = auth
    docker_dir = Path(tempfile.mkdtemp(prefix="dsb-", dir="/tmp"))  # short: the daemon's socket path
    daemon = DockerDaemon(docker_dir).start()
    api: EmulatorServer | None = None
    try:
        ensure_image(daemon)
        emulator = Emulator(work / "emulator", token=token, machines="containers", docker=daemon, ssh_port=free_port())
        api = EmulatorServer(emulator).start()
        from blocks.digitalocean import DigitalOceanCredentials

        DigitalOceanCredentials(
            token=token,
            endpoint=api.url,
            ssh_port=emulator.ssh_port,
            api_auth_string=auth,
            poll_interval=0.5,
            worker_api_url=emulator.publish_orchestrator(server.api_url),  # droplets have their own network
        ).save("dropship-digitalocean", overwrite=True)
        yield Cloud(work, emulator, api)
    finally:
        if api is not None:
            api.stop()
        daemon.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(docker_dir, ignore_errors=True)
