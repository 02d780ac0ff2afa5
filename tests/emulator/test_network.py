"""A droplet's network: relays into and out of a real network namespace (made here with
`unshare --net`, loopback only, as `docker run --network none` makes a droplet's), the
published names as its /etc/hosts, and nothing of the host's loopback reachable."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropship.emulator.network import (
    ORCHESTRATOR,
    DropletNetwork,
    Internet,
    hosts_file,
    socket_in,
    stock_internet,
)
from dropship.errors import ConfigError, MachineError
from dropship.ports import free_port

# Inside the namespace, as its sshd would be: a server on 127.0.0.1:22 that reads a whole request (up to the
# client's half-close), then answers how much it got and closes.
COUNTER = """
import socket, subprocess
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
server = socket.create_server(("127.0.0.1", 22))
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    got = b""
    while chunk := conn.recv(65536):
        got += chunk
    conn.sendall(b"got %d bytes" % len(got))
    conn.close()
"""


@pytest.fixture
def namespace() -> Iterator[int]:
    """The pid of a process in a new network namespace (loopback only, up), serving COUNTER on 127.0.0.1:22."""
    proc = subprocess.Popen(
        ["unshare", "--net", "--", sys.executable, "-c", COUNTER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


class Upper:
    """A server on the host's 127.0.0.1 that answers each connection with what it got, upper-cased."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                conn.sendall(data.upper())

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def upper() -> Iterator[Upper]:
    server = Upper()
    yield server
    server.close()


def free_address() -> tuple[str, int]:
    port = free_port()
    return f"127.0.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}", port


def ask(sock: socket.socket, request: bytes) -> bytes:
    """Send `request`, half-close, read the answer to its end."""
    with sock:
        sock.settimeout(10)
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def relay_threads(droplet: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("relay ") and droplet in t.name]


def test_inbound_relay_reaches_the_namespaces_port_22_with_half_close(namespace: int) -> None:
    address, port = free_address()
    network = DropletNetwork("d-in", address, port, Internet())
    network.attach(namespace)
    try:
        payload = os.urandom(300_000)  # several buffers each way
        assert ask(socket.create_connection((address, port)), payload) == b"got 300000 bytes"
        assert ask(socket.create_connection((address, port)), b"") == b"got 0 bytes"
        with pytest.raises(ConnectionRefusedError):  # on the droplet's address only, as its sshd was
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        network.close()


def test_published_names_are_reachable_from_the_namespace_and_the_hosts_loopback_is_not(
    namespace: int, upper: Upper
) -> None:
    internet = Internet({f"{ORCHESTRATOR}:{upper.port}": f"127.0.0.1:{upper.port}"})
    address, port = free_address()
    network = DropletNetwork("d-out", address, port, internet)
    network.attach(namespace)
    try:
        names = internet.names()
        assert names == {ORCHESTRATOR: "127.0.2.1"}
        assert f"127.0.2.1\t{ORCHESTRATOR}" in network.hosts_file("droplet-1").splitlines()
        inside = network.in_namespace()
        inside.connect((names[ORCHESTRATOR], upper.port))
        assert ask(inside, b"hello prefect") == b"HELLO PREFECT"
        for where in [("127.0.0.1", upper.port), (names[ORCHESTRATOR], upper.port + 1), (address, port)]:
            probe = network.in_namespace()
            with probe, pytest.raises(ConnectionRefusedError):
                probe.connect(where)  # the host's server, an unpublished port, the droplet's own host-side address
        with socket.create_connection(("127.0.0.1", upper.port)) as direct:  # the server is there for the host
            assert ask(direct, b"x") == b"X"
    finally:
        network.close()


def test_close_cuts_open_connections_and_removes_every_listener(namespace: int, upper: Upper) -> None:
    internet = Internet({f"{ORCHESTRATOR}:{upper.port}": f"127.0.0.1:{upper.port}"})
    address, port = free_address()
    network = DropletNetwork("d-close", address, port, internet)
    network.attach(namespace)
    held = socket.create_connection((address, port))  # a connection left open (its request never ends)
    held.sendall(b"partial")
    deadline = time.monotonic() + 10
    while network.inbound is not None and network.inbound.open_connections() < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert network.inbound is not None and network.inbound.open_connections() == 1
    assert relay_threads("d-close")

    network.close()
    held.settimeout(10)
    assert held.recv(100) == b""  # cut, not left hanging
    held.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, port), timeout=5).close()
    fd = os.open(f"/proc/{namespace}/ns/net", os.O_RDONLY)
    try:
        probe = socket_in(fd)
    finally:
        os.close(fd)
    with probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.2.1", upper.port))  # the name's listener in the namespace is gone too
    deadline = time.monotonic() + 10
    while relay_threads("d-close") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert relay_threads("d-close") == []
    with pytest.raises(MachineError, match="destroyed"):
        network.attach(namespace)


def test_a_process_in_the_hosts_namespace_is_refused() -> None:
    address, port = free_address()
    network = DropletNetwork("d-host", address, port, Internet())
    with pytest.raises(MachineError, match="shares the host's network namespace"):
        network.attach(os.getpid())
    with pytest.raises(ConnectionRefusedError):  # nothing was left listening
        socket.create_connection((address, port), timeout=5).close()


def test_the_internet_map_and_the_hosts_file(tmp_path: Path) -> None:
    internet = stock_internet(["http://deb.debian.org/debian"], "https://pypi.org/simple")
    assert set(internet.routes()) == {("deb.debian.org", 80), ("pypi.org", 443), ("files.pythonhosted.org", 443)}
    assert str(internet.routes()[("pypi.org", 443)]) == "pypi.org:443"  # TLS end to end: the same name
    own = stock_internet(["https://mirror.example.org/debian"], "http://index.example.org:8080/simple/")
    assert set(own.routes()) == {("mirror.example.org", 443), ("index.example.org", 8080)}
    own.publish(f"{ORCHESTRATOR}:4200", "127.0.0.1:4200")
    assert own.names() == {
        "index.example.org": "127.0.2.1",
        "mirror.example.org": "127.0.2.2",
        ORCHESTRATOR: "127.0.2.3",
    }
    assert hosts_file("build-1", own.names()).splitlines() == [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "127.0.1.1\tbuild-1",
        "127.0.2.1\tindex.example.org",
        "127.0.2.2\tmirror.example.org",
        f"127.0.2.3\t{ORCHESTRATOR}",
    ]
    for public, real, message in [
        ("127.0.0.1:4200", "127.0.0.1:4200", "a name, not an address"),
        (ORCHESTRATOR, "127.0.0.1:4200", "not host:port"),
        (f"{ORCHESTRATOR}:4200", "127.0.0.1:http", "not host:port"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Internet().publish(public, real)
