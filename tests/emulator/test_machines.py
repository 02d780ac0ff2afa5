"""Container droplets: separate machines from the stock image, booted by real cloud-init
in DigitalOcean's order, reached with real sshd; power off, snapshot, boot from it.

Everything goes through pydo over HTTP, as a client of DigitalOcean would.
"""

from __future__ import annotations

import http.server
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import paramiko
import pytest

from dropship.emulator.dockerd import DockerDaemon
from dropship.emulator.network import ORCHESTRATOR
from dropship.ssh import Endpoint, KeyPair, SshSession, generate_keypair
from tests.droplets import EmulatorUnderTest

RECORD_USER_DATA = "#!/bin/sh\ndate +%s.%N > /root/user-data-ran\n"


def create(
    emu: EmulatorUnderTest,
    key: KeyPair,
    *,
    user_data: str = RECORD_USER_DATA,
    image: object = "debian-12-x64",
    name: str = "droplet-1",
) -> dict[str, Any]:
    """Register `key` (once) and create a droplet with it; return the droplet as the create answered."""
    fingerprints = [
        k["fingerprint"]
        for k in emu.call(emu.client.ssh_keys.list)["ssh_keys"]  # type: ignore[index, union-attr]
        if k["public_key"] == key.public_line
    ]
    if not fingerprints:
        fingerprints = [
            emu.call(emu.client.ssh_keys.create, body={"name": "tests", "public_key": key.public_line})["ssh_key"][
                "fingerprint"
            ]
        ]  # type: ignore[index]
    body = {
        "name": name,
        "region": "nyc1",
        "size": "s-1vcpu-1gb",
        "image": image,
        "ssh_keys": fingerprints,
        "user_data": user_data,
        "tags": ["emulator-tests"],
    }
    droplet: dict[str, Any] = emu.call(emu.client.droplets.create, body=body)["droplet"]  # type: ignore[assignment]
    return droplet


def wait_status(
    emu: EmulatorUnderTest, droplet_id: int, status: str = "active", timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        droplet: dict[str, Any] = emu.call(emu.client.droplets.get, droplet_id=droplet_id)["droplet"]  # type: ignore[assignment]
        if droplet["status"] == status or time.monotonic() > deadline:
            assert droplet["status"] == status
            return droplet
        time.sleep(0.05)


def wait_action(
    emu: EmulatorUnderTest, droplet_id: int, action: dict[str, Any], timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer: dict[str, Any] = emu.call(
            emu.client.droplet_actions.get, droplet_id=droplet_id, action_id=action["id"]
        )["action"]  # type: ignore[assignment]
        if answer["status"] != "in-progress" or time.monotonic() > deadline:
            assert answer["status"] == "completed"
            return answer
        time.sleep(0.1)


def address(droplet: dict[str, Any]) -> str:
    (public,) = [n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == "public"]
    return str(public)


def host_key(host: str, port: int) -> str:
    """The ed25519 host key the droplet's sshd presents, as an OpenSSH public line."""
    transport = paramiko.Transport((host, port))
    try:
        transport.get_security_options().key_types = ["ssh-ed25519"]
        transport.start_client(timeout=10)
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"
    finally:
        transport.close()


def image_host_key(dockerd: DockerDaemon, image: str) -> str:
    output: bytes = dockerd.client.containers.run(
        image, ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"], remove=True, network_mode="none"
    )
    return " ".join(output.decode().split()[:2])


def ssh(emu: EmulatorUnderTest, droplet: dict[str, Any], key: KeyPair, pinned: str) -> SshSession:
    return SshSession(Endpoint(address(droplet), emu.emulator.ssh_port, "root", pinned), key.private_openssh)


def wait_file(session: SshSession, path: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        found = session.run(["sh", "-c", f"cat {path} 2>/dev/null || true"]).strip()
        if found or time.monotonic() > deadline:
            assert found, f"{path} never appeared on the droplet"
            return found
        time.sleep(0.2)


def test_droplet_is_a_separate_machine_booted_as_digitalocean_boots(
    container_emulator: EmulatorUnderTest, dockerd: DockerDaemon, stock_image: str
) -> None:
    emu = container_emulator
    key = generate_keypair("root-login")
    host_only = Path(f"/tmp/dropship-host-only-{secrets.token_hex(4)}")
    host_only.write_text("on the host only\n")
    try:
        started = time.monotonic()
        created = create(emu, key)
        assert created["status"] == "new" and "dropship_emulator" not in created
        droplet = wait_status(emu, created["id"])
        active_after = time.monotonic() - started
        presented = host_key(address(droplet), emu.emulator.ssh_port)
        print(f"\n[droplets] create -> active {active_after:.1f} s", flush=True)
        assert presented != image_host_key(dockerd, stock_image)  # cloud-init made fresh keys, not the image's
        with pytest.raises(paramiko.SSHException, match="Connection refused"):
            host_key("127.0.0.1", emu.emulator.ssh_port)  # sshd is on the droplet's own address only
        with ssh(emu, droplet, key, presented) as session:  # root login with the key given in ssh_keys
            assert session.run(["id", "-un"]).strip() == "root"
            assert " ".join(session.read_text("/etc/ssh/ssh_host_ed25519_key.pub").split()[:2]) == presented
            ran_at = float(wait_file(session, "/root/user-data-ran"))
            record = emu.emulator.droplet(created["id"])
            assert record is not None and record.active_at is not None
            assert ran_at > record.active_at  # user_data ran after the API said active
            for module in ("prefect", "dropship"):
                probe = session.run(["sh", "-c", f"python3 -c 'import {module}' 2>&1 || true"])
                assert "ModuleNotFoundError" in probe
            assert session.run(["sh", "-c", f"test -e {host_only} && echo present || echo absent"]).strip() == "absent"
            assert session.run(
                ["sh", "-c", "for c in gcc cc cloud-init apt-get python3; do command -v $c; done; true"]
            ).split() == ["/usr/bin/cloud-init", "/usr/bin/apt-get", "/usr/bin/python3"]
            assert session.run(["hostname"]).strip() == "droplet-1"
            # what the emulator hands the droplet is read-only to it, as DigitalOcean's metadata is
            refused = session.run(["sh", "-c", "touch /.hypervisor/active 2>&1 && echo written || true"])
            assert "Read-only file system" in refused, refused
            status = session.run(["sh", "-c", "cloud-init status --wait >/dev/null; cloud-init status"])
            assert "status: done" in status
    finally:
        host_only.unlink()


def test_failing_user_data_leaves_the_droplet_active_and_delete_removes_its_container(
    container_emulator: EmulatorUnderTest, dockerd: DockerDaemon
) -> None:
    emu = container_emulator
    key = generate_keypair("root-login")
    droplet = wait_status(emu, create(emu, key, user_data="#!/bin/sh\necho failing on purpose\nexit 3\n")["id"])
    with ssh(emu, droplet, key, host_key(address(droplet), emu.emulator.ssh_port)) as session:
        status = session.run(["sh", "-c", "cloud-init status --wait >/dev/null; cloud-init status --long || true"])
    assert "status: error" in status and "scripts-user" in status  # the user_data really failed
    assert wait_status(emu, droplet["id"])["status"] == "active"

    name = emu.emulator.backend.name(droplet["id"])  # type: ignore[attr-defined]
    assert dockerd.container(name) is not None
    emu.call(emu.client.droplets.destroy, droplet_id=droplet["id"])
    assert dockerd.container(name) is None
    gone = emu.call(emu.client.droplets.get, droplet_id=droplet["id"])  # pydo returns a documented 404's body
    assert gone["id"] == "not_found" and gone["request_id"]
    (listed,) = emu.call(emu.client.droplets.list)["droplets"]  # type: ignore[misc]
    assert listed["id"] == droplet["id"] and listed["status"] == "archive"  # listed for a while after DELETE
    with pytest.raises(paramiko.SSHException, match="Connection refused"):
        host_key(address(droplet), emu.emulator.ssh_port)


def test_power_off_snapshot_and_a_droplet_from_the_snapshot(container_emulator: EmulatorUnderTest) -> None:
    emu = container_emulator
    key = generate_keypair("root-login")
    first = wait_status(emu, create(emu, key, user_data="#!/bin/sh\necho kept > /root/in-the-snapshot\n")["id"])
    first_key = host_key(address(first), emu.emulator.ssh_port)
    with ssh(emu, first, key, first_key) as session:
        wait_file(session, "/root/in-the-snapshot")
    off = emu.call(emu.client.droplet_actions.post, droplet_id=first["id"], body={"type": "power_off"})["action"]
    assert off["status"] == "in-progress" and off["type"] == "power_off"  # type: ignore[index]
    wait_action(emu, first["id"], off)  # type: ignore[arg-type]
    assert wait_status(emu, first["id"], "off")["status"] == "off"
    shot = emu.call(
        emu.client.droplet_actions.post, droplet_id=first["id"], body={"type": "snapshot", "name": "build-base"}
    )["action"]
    done = wait_action(emu, first["id"], shot)  # type: ignore[arg-type]
    assert (
        done["completed_at"]
        and emu.call(emu.client.actions.get, action_id=done["id"])["action"]["status"] == "completed"
    )  # type: ignore[index]
    (image,) = emu.call(emu.client.images.list, private=True)["images"]  # type: ignore[misc]
    assert image["name"] == "build-base" and image["type"] == "snapshot" and image["regions"] == ["nyc1"]
    assert image["status"] == "available" and image["min_disk_size"] == 25 and image["size_gigabytes"] > 0
    assert emu.call(emu.client.images.get, image_id=image["id"])["image"] == image
    assert emu.call(emu.client.droplets.get, droplet_id=first["id"])["droplet"]["snapshot_ids"] == [image["id"]]  # type: ignore[index]
    (listed,) = emu.call(emu.client.snapshots.list, resource_type="droplet")["snapshots"]  # type: ignore[misc]
    assert listed["id"] == str(image["id"]) and listed["resource_id"] == str(first["id"])
    kinds = [a["type"] for a in emu.call(emu.client.actions.list)["actions"]]  # type: ignore[attr-defined]
    assert kinds == ["power_off", "snapshot"]

    second = wait_status(emu, create(emu, key, image=image["id"], user_data="", name="droplet-2")["id"])
    assert second["image"]["id"] == image["id"]
    second_key = host_key(address(second), emu.emulator.ssh_port)
    assert second_key != first_key  # a new instance: cloud-init made new host keys
    with ssh(emu, second, key, second_key) as session:
        assert session.read_text("/root/in-the-snapshot").strip() == "kept"
        assert session.run(["hostname"]).strip() == "droplet-2"

    on = emu.call(emu.client.droplet_actions.post, droplet_id=first["id"], body={"type": "power_on"})["action"]
    wait_action(emu, first["id"], on)  # type: ignore[arg-type]
    assert (
        host_key(address(wait_status(emu, first["id"])), emu.emulator.ssh_port) == first_key
    )  # same instance, same keys
    with ssh(emu, first, key, first_key) as session:  # a new namespace at each start: the relays followed it
        hosts = session.read_text("/etc/hosts")
        assert "pypi.org" in hosts and session.run(["ip", "-o", "link"]).count("\n") == 1
    assert emu.emulator.backend.networks[first["id"]].outbound  # type: ignore[attr-defined]

    emu.call(emu.client.images.delete, image_id=image["id"])
    assert emu.call(emu.client.images.list, private=True)["images"] == []


def test_host_keys_from_cloud_config_are_the_ones_sshd_presents_when_active(
    container_emulator: EmulatorUnderTest,
) -> None:
    """A client can pin the host key from the start: cloud-config `ssh_keys` are installed by the init
    stage, before sshd starts (how a provider avoids trusting the first key it sees)."""
    emu = container_emulator
    key = generate_keypair("root-login")
    pinned = generate_keypair("host")
    indented = "\n".join(f"    {line}" for line in pinned.private_openssh.strip().splitlines())
    user_data = (
        f"#cloud-config\nssh_deletekeys: true\nssh_genkeytypes: []\nssh_keys:\n  ed25519_private: |\n{indented}\n"
        f"  ed25519_public: {pinned.public_line}\n"
    )
    droplet = wait_status(emu, create(emu, key, user_data=user_data)["id"])
    presented = host_key(address(droplet), emu.emulator.ssh_port)
    assert presented == " ".join(pinned.public_line.split()[:2])
    with ssh(emu, droplet, key, pinned.public_line) as session:  # SshSession refuses any other host key
        assert session.run(["id", "-un"]).strip() == "root"


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = b"served on the host's 127.0.0.1\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_droplet_reaches_published_names_only_and_its_relays_close_with_it(
    container_emulator: EmulatorUnderTest,
) -> None:
    """The droplet's network is its own: the orchestrator's service is there by its public name (the
    emulator's DNS and relay), the host's 127.0.0.1 is not, an unpublished name does not resolve; deleting
    the droplet closes its relays."""
    emu = container_emulator
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        url = emu.emulator.publish_orchestrator(f"http://127.0.0.1:{port}/")
        assert url == f"http://{ORCHESTRATOR}:{port}/"
        key = generate_keypair("root-login")
        droplet = wait_status(emu, create(emu, key, user_data="")["id"])
        with ssh(emu, droplet, key, host_key(address(droplet), emu.emulator.ssh_port)) as session:

            def curl(target: str) -> str:
                return session.run(["sh", "-c", f"curl -sS --max-time 10 {target} 2>&1; echo exit=$?"])

            assert curl(url).splitlines() == ["served on the host's 127.0.0.1", "exit=0"]
            assert "exit=7" in curl(f"http://127.0.0.1:{port}/")  # refused: the host's loopback is not here
            assert "exit=7" in curl(f"http://{ORCHESTRATOR}:{port + 1}/")  # a port not published
            assert "exit=7" in curl(f"http://{address(droplet)}:{emu.emulator.ssh_port}/")  # the host side of it
            assert "exit=6" in curl("http://example.com/")  # no such name for the droplet: not resolved
            hosts = session.read_text("/etc/hosts")
            assert f"\t{ORCHESTRATOR}" in hosts and "pypi.org" in hosts and "deb.debian.org" in hosts
            assert session.run(["ip", "-o", "link"]).split(":")[1].strip() == "lo"  # loopback only
            assert len(session.run(["ip", "-o", "link"]).splitlines()) == 1
        network = emu.emulator.backend.networks[droplet["id"]]  # type: ignore[attr-defined]
        relays = [network.inbound, *network.outbound.values()]
        assert (ORCHESTRATOR, port) in network.outbound and all(r is not None for r in relays)
        emu.call(emu.client.droplets.destroy, droplet_id=droplet["id"])
        assert network.inbound is None and network.outbound == {}
        assert all(r._closed and r.listener.fileno() == -1 for r in relays)  # type: ignore[union-attr]

        def relay_threads() -> list[str]:
            return [
                t.name for t in threading.enumerate() if t.name.startswith("relay") and str(droplet["id"]) in t.name
            ]

        deadline = time.monotonic() + 10
        while relay_threads() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert relay_threads() == []
        with pytest.raises(paramiko.SSHException, match="Connection refused"):
            host_key(address(droplet), emu.emulator.ssh_port)
    finally:
        server.shutdown()
        server.server_close()
