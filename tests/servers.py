"""Real servers the publication tests need: an sshd playing the repository
server, and Debian's nginx serving its `current` on a loopback port."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dropship.machines.sshd import find_sshd, sshd_config
from dropship.ports import free_port
from dropship.prefect_server import LocalPrefectServer
from dropship.ssh import Endpoint, generate_keypair
from tests.support import parents_and_sessions


def _wait_port(port: int, log: Path, what: str, banner: bytes | None = None) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if banner is None or sock.recv(8).startswith(banner):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up on port {port}: {log.read_text(errors='replace')[-800:]}")


@dataclass
class RepoServerHost:
    """An sshd on 127.0.0.1 whose user may write under `root`."""

    folder: Path
    root: Path
    endpoint: Endpoint
    private_key: str
    process: subprocess.Popen[bytes]

    def scp(self, folder: Path) -> list[str]:
        """The start of an OpenSSH `scp` command logging in to this server as its user, with the host key pinned
        (the benches' baseline); the client key and known_hosts are written into `folder`."""
        key, known = folder / "client_key", folder / "known_hosts"
        if not key.exists():
            key.write_text(self.private_key)
            key.chmod(0o600)
        ep = self.endpoint
        known.write_text(f"[{ep.host}]:{ep.port} {ep.host_public_key}\n")
        return [
            "scp",
            "-q",
            "-P",
            str(ep.port),
            "-i",
            str(key),
            "-o",
            f"UserKnownHostsFile={known}",
            "-o",
            "BatchMode=yes",
        ]

    def connection_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        return [pid for pid, (parent, _) in parents_and_sessions().items() if parent == self.process.pid]

    def drop_connections(self) -> None:
        for pid in self.connection_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        self.drop_connections()
        self.process.terminate()
        self.process.wait(timeout=10)


def start_repo_server(folder: Path) -> RepoServerHost:
    machine_root = folder / "machine"
    (machine_root / "etc/ssh").mkdir(parents=True)
    (machine_root / "etc/dropship").mkdir(parents=True)
    (machine_root / "run").mkdir()
    host = generate_keypair("repo-host")
    client = generate_keypair("publisher")
    key_file = machine_root / "etc/ssh/ssh_host_ed25519_key"
    key_file.touch(mode=0o600)
    key_file.write_text(host.private_openssh)
    (machine_root / "etc/dropship/authorized_keys").write_text(client.public_line + "\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = free_port()
    user = getpass.getuser()
    config = folder / "sshd_config"
    config.write_text(sshd_config(machine_root, "127.0.0.1", port, user))
    log = folder / "sshd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [find_sshd(), "-D", "-e", "-f", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _wait_port(port, log, "sshd", b"SSH-")
    root = folder / "srv"
    root.mkdir()
    return RepoServerHost(
        folder, root, Endpoint("127.0.0.1", port, user, host.public_line), client.private_openssh, process
    )


@dataclass
class Nginx:
    url: str
    process: subprocess.Popen[bytes]
    folder: Path

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_nginx(folder: Path, document_root: Path) -> Nginx:
    """Debian's nginx, foreground, on a free loopback port, `root` = `document_root` (a symlink is fine)."""
    nginx = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin")
    if not nginx:
        raise RuntimeError("nginx not found: install Debian's nginx")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    user = "root" if os.geteuid() == 0 else getpass.getuser()
    (folder / "nginx.conf").write_text(
        f"""
daemon off;
worker_processes 2;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
{"user root;" if user == "root" else ""}
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {document_root};
        location ~ /\\.dropship/ {{ deny all; }}
    }}
}}
"""
    )
    log = folder / "stderr.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [nginx, "-p", str(folder), "-c", str(folder / "nginx.conf")],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _wait_port(port, log, "nginx")
    return Nginx(f"http://127.0.0.1:{port}", process, folder)


def stop_group(process: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGTERM the process group started with start_new_session; SIGKILL what outlives `grace`.

    A Prefect worker's graceful shutdown can take longer than a test wants to wait.
    """
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def forget_prefect_services() -> None:
    """Drain the process-wide Prefect services a flow run in this process started.

    Prefect keeps them as singletons, each bound to the API it first met: the
    concurrency-slot service is keyed by limit names alone. A fixture that ran
    flows against a server of its own and then stopped it left them bound to
    that dead server, and the next test's release in the same session failed
    with `ConcurrencySlotAcquisitionError` (and the session's teardown hung
    draining events into it). Call this before such a server stops.
    (Prefect keeps all four in one registry today, so the first call drains
    them all; each is named in case that changes.)
    """
    from prefect.concurrency.services import (
        ConcurrencySlotAcquisitionService,
        ConcurrencySlotAcquisitionWithLeaseService,
    )
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (
        APILogWorker,
        EventsWorker,
        ConcurrencySlotAcquisitionWithLeaseService,
        ConcurrencySlotAcquisitionService,
    ):
        service.drain_all(timeout=10)


@contextmanager
def own_prefect_server(folder: Path) -> Iterator[tuple[LocalPrefectServer, dict[str, str]]]:
    """A Prefect server of its own in `folder/prefect`, and the environment of a client
    process (the CLI, a worker) that talks to it alone, with its home in `folder/client`."""
    server = LocalPrefectServer(folder / "prefect")
    server.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_API_URL=server.api_url, PREFECT_HOME=str(folder / "client"), PREFECT_SERVER_ANALYTICS_ENABLED="false"
    )
    try:
        yield server, env
    finally:
        server.stop()
