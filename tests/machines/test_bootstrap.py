"""The orchestrator's side of a droplet's bootstrap: pinned SSH, the wheel, the pins, the hash."""

from __future__ import annotations

import getpass
import os
import signal
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import pytest

from dropship.errors import ConfigError, MachineError
from dropship.machines import Machine
from dropship.machines.bootstrap import (
    Setup,
    WorkerConfig,
    _build_wheel,
    connect_pinned,
    constraints,
    dropship_wheel,
    image_hash,
    wheel_identity,
)
from dropship.machines.sshd import find_sshd, sshd_config
from dropship.ports import free_port
from dropship.ssh import KeyPair, generate_keypair


class Sshd:
    """An OpenSSH server on 127.0.0.1:`port` with a given host key; restartable with another."""

    def __init__(self, folder: Path, port: int, client: KeyPair) -> None:
        self.folder, self.port = folder, port
        (folder / "etc/ssh").mkdir(parents=True, exist_ok=True)
        (folder / "etc/dropship").mkdir(parents=True, exist_ok=True)
        (folder / "run").mkdir(exist_ok=True)
        (folder / "etc/dropship/authorized_keys").write_text(client.public_line + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, host: KeyPair, log: str) -> None:
        key = self.folder / "etc/ssh/ssh_host_ed25519_key"
        key.write_text(host.private_openssh)
        key.chmod(0o600)
        config = self.folder / "sshd_config"
        config.write_text(sshd_config(self.folder, "127.0.0.1", self.port, getpass.getuser()))
        self.log = self.folder / log
        self.process = subprocess.Popen(
            [find_sshd(), "-D", "-e", "-f", str(config)],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.process is not None:
            # the whole session: a connection the listener accepted just before is served by a child
            # that would re-read the host key file after `start` rewrote it, and log into this log
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(10)
            self.process = None


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[Sshd, KeyPair]]:
    if find_sshd() and not Path("/run/sshd").exists():
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    client = generate_keypair("client")
    server = Sshd(tmp_path / "machine", free_port(), client)
    yield server, client
    server.stop()


def machine(port: int, host_key: str) -> Machine:
    return Machine(
        id="4242",
        name="hello-amd64-deb-abc",
        provider="digitalocean",
        tags=(),
        host="127.0.0.1",
        port=port,
        user=getpass.getuser(),
        work_dir="/w",
        created_at=datetime.now(UTC),
        host_public_key=host_key,
    )


def test_waits_for_the_pinned_key_and_never_accepts_the_images(sshd: tuple[Sshd, KeyPair]) -> None:
    """Like a droplet: sshd first answers with the image's fresh key, then with ours."""
    server, client = sshd
    image_key, pinned = generate_keypair("image"), generate_keypair("pinned")
    server.start(image_key, "image-sshd.log")
    got: dict[str, object] = {}

    def connect() -> None:
        try:
            session = connect_pinned(
                machine(server.port, pinned.public_line), client.private_openssh, timeout=60, interval=0.3
            )
            got["echo"] = session.run(["echo", "pinned"]).strip()
            session.close()
        except Exception as exc:  # noqa: BLE001 - reported below
            got["error"] = exc

    thread = threading.Thread(target=connect)
    thread.start()
    time.sleep(3)  # several answers with the image's key
    assert thread.is_alive() and not got, "connected to a machine that showed another host key"
    server.stop()
    server.start(pinned, "pinned-sshd.log")
    thread.join(60)
    assert got == {"echo": "pinned"}
    image_log = (server.folder / "image-sshd.log").read_text()
    assert "Accepted publickey" not in image_log  # not even authenticated against the other key
    assert "Accepted publickey" in (server.folder / "pinned-sshd.log").read_text()


def test_gives_up_at_the_deadline_naming_the_droplet(sshd: tuple[Sshd, KeyPair]) -> None:
    server, client = sshd
    server.start(generate_keypair("image"), "image-sshd.log")
    with pytest.raises(MachineError) as info:
        connect_pinned(
            machine(server.port, generate_keypair("pinned").public_line),
            client.private_openssh,
            timeout=3,
            interval=0.3,
        )
    message = str(info.value)
    assert "hello-amd64-deb-abc (4242)" in message and "pinned host key" in message and "another key refused" in message


def test_constraints_pin_this_orchestrators_versions() -> None:
    lines = constraints().splitlines()
    assert f"prefect=={version('prefect')}" in lines
    assert f"pydo=={version('pydo')}" in lines and f"paramiko=={version('paramiko')}" in lines
    assert f"sqlalchemy=={version('sqlalchemy')}" in lines  # transitively, through prefect
    assert not any(line.startswith("dropship==") for line in lines)
    assert not any(line.startswith("pytest==") for line in lines)  # a test extra, not a dependency


def test_wheel_holds_the_flows_and_its_identity_is_its_content(tmp_path: Path) -> None:
    wheel = dropship_wheel()
    assert dropship_wheel() == wheel  # built once per process
    names = zipfile.ZipFile(wheel).namelist()
    assert {"flows/build.py", "dropship/machines/bootstrap.py", "deployments/__init__.py"} <= set(names)
    again = _build_wheel(tmp_path)
    assert wheel_identity(again) == wheel_identity(wheel)


def test_image_hash_covers_the_setup_and_base() -> None:
    setup = Setup(("gcc",), (("true",),))
    assert image_hash("debian-12-x64", setup) == image_hash("debian-12-x64", Setup(("gcc",), (("true",),)))
    assert image_hash("debian-12-x64", setup) != image_hash("debian-12-x64", Setup(("gcc", "rpm"), (("true",),)))
    assert image_hash("debian-12-x64", setup) != image_hash("ubuntu-24-04-x64", setup)


def test_worker_credentials_stay_out_of_reprs_and_refuse_newlines() -> None:
    worker = WorkerConfig(api_url="http://10.1.2.3:4200/api", pool="p", queue="q", auth_string="admin:s3cret")
    assert "PREFECT_API_AUTH_STRING=admin:s3cret\n" in worker.env_file()
    assert "s3cret" not in repr(worker)
    with pytest.raises(ConfigError) as info:
        WorkerConfig(api_url="http://x/api", pool="p", queue="q", auth_string="a\nb").env_file()
    assert "a\nb" not in str(info.value)


def test_droplet_and_local_workers_get_the_same_prefect_settings() -> None:
    """Droplet workers used to miss the retry and heartbeat settings local machines had: with
    Prefect's 180 s heartbeat, the zombie automation (90 s) would crash a long droplet build."""
    from dropship.machines.userdata import worker_env
    from dropship.orchestrator import HEARTBEAT_SECONDS

    lines = WorkerConfig(api_url="http://10.1.2.3:4200/api", pool="p", queue="q").env_file().splitlines()
    droplet = dict(line.split("=", 1) for line in lines)
    for name, value in worker_env("http://10.1.2.3:4200/api").items():
        assert droplet[name].strip("'\"") == value, name
    assert droplet["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"].strip("'\"") == str(HEARTBEAT_SECONDS)


def test_droplet_workers_get_the_orchestrators_client_settings_and_skip_the_version_handshake() -> None:
    """The orchestrator asks the server once (CSRF wanted or not) and checked its version; each
    droplet's worker and build runs would otherwise ask both again, per new client."""
    worker = WorkerConfig(
        api_url="http://10.1.2.3:4200/api",
        pool="p",
        queue="q",
        client_env=(("PREFECT_CLIENT_CSRF_SUPPORT_ENABLED", "false"),),
    )
    env = dict(line.split("=", 1) for line in worker.env_file().splitlines())
    assert env["PREFECT_CLIENT_CSRF_SUPPORT_ENABLED"] == "false"
    assert env["PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED"] == "false"
    plain = dict(
        line.split("=", 1) for line in WorkerConfig(api_url="http://x/api", pool="p", queue="q").env_file().splitlines()
    )
    assert "PREFECT_CLIENT_CSRF_SUPPORT_ENABLED" not in plain, "without the orchestrator's answer, Prefect's default"


@pytest.mark.parametrize(
    ("log", "says"),
    [
        (
            "httpx.ConnectError: [Errno -3] Temporary failure in name resolution",
            "the droplet cannot resolve orchestrator.example.test, the host of worker_api_url",
        ),
        (
            "prefect.exceptions.PrefectHTTPStatusError: Client error '401 Unauthorized'",
            "refused the worker's credentials",
        ),
        ("httpx.ConnectError: [Errno 111] Connection refused", "nothing answers at http://orchestrator.example.test"),
        ("something else entirely", "check worker_api_url and the credentials"),
    ],
)
def test_a_silent_worker_is_explained_by_its_log(log: str, says: str) -> None:
    from dropship.machines.bootstrap import worker_silence

    text = worker_silence("http://orchestrator.example.test:4200/api", "starting worker\n" + log + "\n")
    assert says in text and text.endswith(log.strip()) and "\n" not in text
    long = worker_silence("http://x:1/api", "word " * 200)
    assert long.split("its log ends: ", 1)[1].startswith("…word") and len(long) < 800
