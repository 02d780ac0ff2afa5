"""The DigitalOcean provider, through pydo over real HTTP, against the emulator."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropship.emulator.server import EmulatorServer
from dropship.emulator.state import Emulator
from dropship.errors import ConfigError, MachineError
from dropship.machines import MachineRequest
from dropship.machines.digitalocean import DigitalOceanProvider, DigitalOceanSettings
from dropship.machines.local import _pids_with_marker, free_port
from dropship.machines.userdata import render
from dropship.ssh import Endpoint, SshSession, generate_keypair
from tests.test_ssh import IDLE_WORKER

TOKEN = "dop_v1_emulator_token"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[tuple[Emulator, str]]:
    emu = Emulator(tmp_path / "emulator", token=TOKEN, ssh_port=free_port(), machines="processes")
    server = EmulatorServer(emu).start()
    yield emu, server.url
    server.stop()
    assert emu.alive() == []


def provider(url: str, emu: Emulator, **overrides: object) -> DigitalOceanProvider:
    settings = {"token": TOKEN, "endpoint": url, "ssh_port": emu.ssh_port, "ssh_user": getpass.getuser(),
                "ready_timeout": 30.0, "poll_interval": 0.2, **overrides}
    return DigitalOceanProvider(DigitalOceanSettings(**settings))  # type: ignore[arg-type]


def request(size: str = "s-2vcpu-4gb", name: str = "hello-amd64-deb-1") -> tuple[MachineRequest, str]:
    host, client = generate_keypair("host"), generate_keypair("client")
    user_data = render(host_private_key=host.private_openssh, host_public_key=host.public_line,
                       authorized_key=client.public_line, work_dir="/var/lib/dropship/work", worker=IDLE_WORKER)
    return MachineRequest(name, ("dropship-run-abc", "dropship-target-amd64-deb"), size, "debian-12-x64", "nyc1",
                          user_data, host.public_line), client.private_openssh


def test_create_reach_list_delete(emulator: tuple[Emulator, str]) -> None:
    emu, url = emulator
    do = provider(url, emu)
    req, key = request()
    machine = do.create(req)
    assert machine.host.startswith("127.0.") and machine.host != "127.0.0.1" and machine.port == emu.ssh_port
    assert machine.details["price_hourly"] == "0.03571" and machine.details["size"] == "s-2vcpu-4gb"
    assert set(machine.tags) == {"dropship", "dropship-run-abc", "dropship-target-amd64-deb"}
    with SshSession(Endpoint(machine.host, machine.port, machine.user, machine.host_public_key), key) as ssh:
        assert ssh.run(["echo", "on the droplet"]).strip() == "on the droplet"
        ssh.makedirs(machine.work_dir)
    assert [m.id for m in do.list("dropship-run-abc")] == [machine.id]
    assert do.list("dropship-run-other") == []
    do.delete(machine.id)
    do.delete(machine.id)  # already gone: fine
    assert emu.alive() == [] and do.list() == []
    (life,) = emu.lifetimes()
    assert life["deleted"] is not None and life["seconds"] > 0


@pytest.mark.parametrize(
    ("setup", "expected", "error"),
    [
        ({"token": "wrong"}, "refused the API token (401)", ConfigError),
        ({"size": "s-64vcpu-9tb"}, "invalid size for Droplet creation", ConfigError),
        ({"fault": "quota"}, "exceed your droplet limit", ConfigError),
        ({"fault": "server-error:20", "max_attempts": 3}, "after 3 attempts: last answer 500 Server Error", MachineError),
        ({"fault": "stuck-new", "ready_timeout": 1.0}, "was still 'new' after 1 s; deleted it", MachineError),
    ],
)
def test_refusals_are_clear_and_leave_no_droplet(emulator: tuple[Emulator, str], setup: dict[str, object], expected: str, error: type[Exception]) -> None:
    emu, url = emulator
    if "fault" in setup:
        emu.faults.apply(str(setup.pop("fault")))
    size = str(setup.pop("size", "s-2vcpu-4gb"))
    do = provider(url, emu, **setup)
    with pytest.raises(error) as info:
        do.create(request(size)[0])
    assert expected in str(info.value)
    assert TOKEN not in str(info.value)
    assert emu.alive() == []


@pytest.mark.parametrize("fault", ["rate-limit:2", "server-error:2", "slow-boot:2"])
def test_transient_faults_recover(emulator: tuple[Emulator, str], fault: str) -> None:
    emu, url = emulator
    emu.faults.apply(fault)
    do = provider(url, emu)
    machine = do.create(request()[0])
    assert machine.id
    do.delete(machine.id)
    assert emu.alive() == []


def test_delete_retries_server_errors(emulator: tuple[Emulator, str]) -> None:
    emu, url = emulator
    do = provider(url, emu)
    machine = do.create(request()[0])
    emu.faults.apply("delete-error:2")
    do.delete(machine.id)
    assert emu.alive() == []
    assert all(not _pids_with_marker(m.id) for m in emu.backend.local.list())  # type: ignore[attr-defined]


def test_settings_never_show_the_token() -> None:
    assert TOKEN not in repr(DigitalOceanSettings(token=TOKEN))
