"""The DigitalOcean provider, through pydo over real HTTP, against the emulator."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropship.emulator.server import EmulatorServer
from dropship.emulator.state import Emulator
from dropship.errors import ConfigError, MachineError, NotFound
from dropship.machines import MachineRequest
from dropship.machines.digitalocean import DigitalOceanProvider, DigitalOceanSettings
from dropship.machines.local import _pids_with_marker
from dropship.ports import free_port
from dropship.ssh import Endpoint, SshSession, generate_keypair
from tests.support import idle_user_data

TOKEN = "dop_v1_emulator_token"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[tuple[Emulator, str]]:
    emu = Emulator(tmp_path / "emulator", token=TOKEN, ssh_port=free_port(), machines="processes")
    server = EmulatorServer(emu).start()
    yield emu, server.url
    server.stop()
    assert emu.alive() == []


def provider(url: str, emu: Emulator, **overrides: object) -> DigitalOceanProvider:
    settings = {
        "token": TOKEN,
        "endpoint": url,
        "ssh_port": emu.ssh_port,
        "ssh_user": getpass.getuser(),
        "ready_timeout": 30.0,
        "poll_interval": 0.2,
        **overrides,
    }
    return DigitalOceanProvider(DigitalOceanSettings(**settings))  # type: ignore[arg-type]


def request(size: str = "s-2vcpu-4gb", name: str = "hello-amd64-deb-1") -> tuple[MachineRequest, str]:
    host, client = generate_keypair("host"), generate_keypair("client")
    user_data = idle_user_data(host, client)
    return MachineRequest(
        name,
        ("dropship-run-abc", "dropship-target-amd64-deb"),
        size,
        "debian-12-x64",
        "nyc1",
        user_data,
        host.public_line,
    ), client.private_openssh


def test_create_reach_list_delete(emulator: tuple[Emulator, str]) -> None:
    emu, url = emulator
    do = provider(url, emu)
    req, key = request()
    machine = do.create(req)
    assert machine.host.startswith("127.0.") and machine.host != "127.0.0.1" and machine.port == emu.ssh_port
    assert machine.price_hourly == 0.03571 and machine.details["size"] == "s-2vcpu-4gb"
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
        (
            {"fault": "server-error:20", "max_attempts": 3},
            "after 3 attempts: last answer 500 Server Error",
            MachineError,
        ),
        ({"fault": "stuck-new", "ready_timeout": 1.0}, "was still 'new' after 1 s; deleted it", MachineError),
    ],
)
def test_refusals_are_clear_and_leave_no_droplet(
    emulator: tuple[Emulator, str], setup: dict[str, object], expected: str, error: type[Exception]
) -> None:
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


def test_a_404_that_pydo_returns_instead_of_raising_is_not_found(emulator: tuple[Emulator, str]) -> None:
    emu, url = emulator
    do = provider(url, emu)
    # pydo's droplets.get and destroy accept 404 and hand back the error body
    assert do.client.droplets.get(droplet_id=999999, enforce_https=False)["id"] == "not_found"
    with pytest.raises(NotFound):
        do._once("read droplet 999999", do.client.droplets.get, droplet_id=999999)
    do.delete("999999")  # already gone: not an error


@pytest.mark.parametrize(
    ("machines", "limit", "expected"),
    [
        (
            [("s-2vcpu-4gb", "debian-12-x64", "nyc1")] * 3,
            2,
            "needs 3 droplet(s) but the account's droplet limit is 2 with 0 alive",
        ),
        ([("s-2vcpu-4gb", "debian-13-x64", "nyc1")], 25, "DigitalOcean has no image debian-13-x64"),
        ([("s-64vcpu-9tb", "debian-12-x64", "nyc1")], 25, "no droplet size s-64vcpu-9tb"),
        ([("s-2vcpu-4gb", "debian-12-x64", "mars1")], 25, "no region mars1"),
        ([("c2-16vcpu-32gb", "debian-12-x64", "ams3")], 25, "size c2-16vcpu-32gb is not available in region ams3"),
    ],
)
def test_preflight_refuses_before_any_droplet(
    tmp_path: Path, machines: list[tuple[str, str, str]], limit: int, expected: str
) -> None:
    emu = Emulator(tmp_path / "emulator", token=TOKEN, ssh_port=free_port(), droplet_limit=limit)
    server = EmulatorServer(emu).start()
    try:
        with pytest.raises(ConfigError) as info:
            provider(server.url, emu).preflight(machines)
        assert expected in str(info.value)
        assert emu.lifetimes() == []
    finally:
        server.stop()


def test_preflight_finds_the_images(emulator: tuple[Emulator, str]) -> None:
    emu, url = emulator
    images = provider(url, emu).preflight(
        [("s-2vcpu-4gb", "debian-12-x64", "nyc1"), ("s-1vcpu-1gb", "debian-12-x64", "ams3")]
    )
    assert images["debian-12-x64"]["slug"] == "debian-12-x64"


def test_booting_droplets_of_a_run_share_one_list_per_poll(emulator: tuple[Emulator, str]) -> None:
    """Three droplets booting together: each poll is one list-by-tag request for all of them."""
    import threading

    emu, url = emulator
    emu.faults.apply("slow-boot:3")
    do = provider(url, emu, poll_interval=0.5, max_poll_interval=0.5)
    made: list[str] = []

    def create(index: int) -> None:
        req, _ = request(name=f"hello-t{index}-1")
        made.append(do.create(req).id)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 3
    polls = do.poll_requests("dropship-run-abc")
    # about 3 s of boot at one poll per 0.5 s for all three; per-droplet polling would be three times as many
    assert 3 <= polls <= 12, polls
    for machine_id in made:
        do.delete(machine_id)


def test_a_create_answered_500_after_it_happened_is_found_not_repeated(emulator: tuple[Emulator, str]) -> None:
    emu, url = emulator
    emu.faults.apply("create-then-5xx:1")
    do = provider(url, emu)
    machine = do.create(request()[0])
    (life,) = emu.lifetimes()
    assert str(life["id"]) == machine.id
    do.delete(machine.id)


def test_404_after_create_and_pending_event_on_delete(emulator: tuple[Emulator, str]) -> None:
    emu, url = emulator
    emu.faults.apply("404-after-create:3")
    do = provider(url, emu)
    machine = do.create(request()[0])
    assert len(emu.lifetimes()) == 1
    emu.faults.apply("pending-event-on-delete:2")
    do.delete(machine.id)
    assert emu.alive() == []


def test_one_ssh_key_per_run_sent_at_create_and_deleted_with_the_run(emulator: tuple[Emulator, str]) -> None:
    from datetime import timedelta

    from dropship.reaper import reap

    emu, url = emulator
    do = provider(url, emu)
    client = generate_keypair("run-client")
    machines = []
    for name in ("hello-a-1", "hello-b-1"):
        req, _ = request(name=name)
        machines.append(do.create(MachineRequest(**{**req.__dict__, "authorized_key": client.public_line})))
    (key,) = emu.ssh_keys()
    assert key.name == "dropship-run-abc" and key.public_key.split()[:2] == client.public_line.split()[:2]
    assert all(emu.droplet(int(m.id)).ssh_keys == [key.public_key] for m in machines)  # type: ignore[union-attr]
    assert do.run_leftovers() == ["abc"]
    reap(do, run_finished=lambda run: True, ttl=timedelta(hours=2))  # the reaper: droplets, then the key
    assert emu.alive() == [] and emu.ssh_keys() == []


def test_droplets_join_the_vpc_named_for_their_region(emulator: tuple[Emulator, str]) -> None:
    from dropship.emulator.state import vpc_id

    emu, url = emulator
    do = provider(url, emu, vpcs={"nyc1": vpc_id("nyc1")})
    machine = do.create(request()[0])
    assert emu.droplet(int(machine.id)).vpc_uuid == vpc_id("nyc1")  # type: ignore[union-attr]
    do.delete(machine.id)
    with pytest.raises(ConfigError, match="is in region ams3, not nyc1"):
        provider(url, emu, vpcs={"nyc1": vpc_id("ams3")}).create(request()[0])


def test_an_endpoint_where_nothing_answers_says_so_not_that_the_token_is_wrong() -> None:
    """The emulator not started yet (or a wrong endpoint) read as 'could not read the account ... last
    answer no answer (<a paragraph of urllib3>)'; it is a configuration error naming the endpoint."""
    from dropship.ports import free_port

    url = f"http://127.0.0.1:{free_port()}"
    do = DigitalOceanProvider(DigitalOceanSettings(token=TOKEN, endpoint=url, max_attempts=2), sleep=lambda s: None)
    with pytest.raises(ConfigError) as info:
        do.preflight([("s-1vcpu-1gb", "debian-12-x64", "nyc1")])
    message = str(info.value)
    assert message.startswith(f"nothing answers at the DigitalOcean endpoint {url} ([Errno 111] Connection refused")
    assert "dropship emulator" in message and "\n" not in message and TOKEN not in message
