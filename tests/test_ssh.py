"""paramiko against a real sshd on 127.0.0.1 (a local machine)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropship.errors import ChecksumMismatch, HostKeyMismatch, MachineError
from dropship.machines import Machine, MachineRequest
from dropship.machines.local import LocalProvider
from dropship.machines.userdata import WorkerSpec, render
from dropship.ssh import Endpoint, KeyPair, SshSession, generate_keypair

IDLE_WORKER = WorkerSpec(
    api_url="http://127.0.0.1:9/api", pool="p", queue="q",
    prefect=[sys.executable, "-c", "import time; time.sleep(300)"], env={},
)


def boot(provider: LocalProvider, client: KeyPair, name: str = "m", tags: tuple[str, ...] = ()) -> Machine:
    host = generate_keypair("host")
    user_data = render(
        host_private_key=host.private_openssh, host_public_key=host.public_line,
        authorized_key=client.public_line, work_dir="/var/lib/dropship/work", worker=IDLE_WORKER,
    )
    return provider.create(MachineRequest(name, tags, "s", "i", "r", user_data, host.public_line))


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[tuple[Machine, KeyPair]]:
    provider = LocalProvider(tmp_path / "state")
    client = generate_keypair("client")
    made = boot(provider, client)
    yield made, client
    provider.delete(made.id)


def _endpoint(machine: Machine, host_key: str | None = None) -> Endpoint:
    return Endpoint(machine.host, machine.port, machine.user, host_key or machine.host_public_key)


def test_run_quotes_arguments(machine: tuple[Machine, KeyPair]) -> None:
    made, client = machine
    with SshSession(_endpoint(made), client.private_openssh) as session:
        assert session.run(["echo", "a; rm -rf /", "$HOME"]).strip() == "a; rm -rf / $HOME"
        with pytest.raises(MachineError, match="exited 3"):
            session.run(["sh", "-c", "exit 3"])


def test_put_get_verify_sha256(machine: tuple[Machine, KeyPair], tmp_path: Path) -> None:
    made, client = machine
    payload = tmp_path / "payload.bin"
    payload.write_bytes(bytes(range(256)) * 8192)
    with SshSession(_endpoint(made), client.private_openssh) as session:
        digest = session.put(payload, f"{made.work_dir}/sub/payload.bin")
        session.get(f"{made.work_dir}/sub/payload.bin", tmp_path / "back.bin", sha256=digest)
        assert (tmp_path / "back.bin").read_bytes() == payload.read_bytes()
        with pytest.raises(ChecksumMismatch, match="does not match the build report"):
            session.get(f"{made.work_dir}/sub/payload.bin", tmp_path / "bad.bin", sha256="0" * 64)
    assert not (tmp_path / "bad.bin").exists() and not (tmp_path / "bad.bin.part").exists()


def test_other_host_key_is_refused(machine: tuple[Machine, KeyPair]) -> None:
    made, client = machine
    impostor = generate_keypair("impostor").public_line
    with pytest.raises(HostKeyMismatch, match="instead of the pinned"):
        SshSession(_endpoint(made, impostor), client.private_openssh).connect()


def test_other_client_key_is_refused(machine: tuple[Machine, KeyPair]) -> None:
    made, _ = machine
    with pytest.raises(MachineError, match="refused our SSH key"):
        SshSession(_endpoint(made), generate_keypair("stranger").private_openssh).connect()


def test_unreachable_port_times_out_clearly(tmp_path: Path) -> None:
    ep = Endpoint("127.0.0.1", 9, "root", generate_keypair().public_line)
    with pytest.raises(MachineError, match="could not reach 127.0.0.1:9 over SSH within 1 s"):
        SshSession(ep, generate_keypair().private_openssh, connect_timeout=1).connect()
