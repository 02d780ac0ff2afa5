"""A container droplet's network: a namespace of its own, and the emulator playing the wire.

A container droplet runs `--network none`: its network namespace holds only a
loopback interface, so nothing on the orchestrator's 127.0.0.1 (Prefect, an
image registry, the emulator's API) is there. The emulator connects it to the
world in two directions, and to nothing else:

- **Inbound** (the droplet's address as the API reports it): a listener on
  the host at the droplet's own loopback address and SSH port relays each
  connection into the droplet's namespace, to 127.0.0.1:22 there (its sshd).
- **Outbound** ("the internet" as the droplet sees it): an `Internet` maps
  public names and ports to where they really are. The emulator plays DNS
  (`hosts_file`, the droplet's `/etc/hosts`: each name on an address of the
  droplet's own loopback, 127.0.2.N) and listens inside the namespace on each
  name's ports, relaying each connection to the real endpoint from the host.
  TLS stays end to end (the droplet's client sends its own SNI). A name the
  map lacks does not resolve, and a port it lacks refuses.

A socket is made inside another namespace by a short thread that enters it
(`setns(2)` on `/proc/<pid>/ns/net`, through libc: Python 3.11 has no
`os.setns`) and creates the socket there; the socket keeps its namespace
after the thread ends, and the thread never serves anything else. Needs
CAP_SYS_ADMIN (root). Every listener is on a loopback address, on the host or
inside the droplet; relays are threads, a connection's two directions each
close on their own (half-close passed on), and all of a droplet's relays
close with it (`DropletNetwork.close`).

This module is the boundary where the namespace's `OSError`s become
`MachineError`s.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

from dropship.errors import ConfigError, MachineError

ORCHESTRATOR = "orchestrator.dropship.test"
"""The orchestrator's public name as droplets see it (a reserved `.test` name, RFC 6761): tests publish the
ports of it the droplets may reach (the Prefect API...) and give workers URLs on it."""
PYPI_NAMES = ("pypi.org", "files.pythonhosted.org")
"""What pip on a droplet reaches for the default package index (HTTPS)."""
DROPLET_SSH_PORT = 22
"""Where a droplet's sshd listens inside its namespace (the default, as on a real droplet)."""
NAME_NET = "127.0.2."
"""Published names live on 127.0.2.1, .2, ... of the droplet's loopback (127.0.1.1 is its own hostname)."""
CLONE_NEWNET = 0x40000000
BUFFER = 65536


@dataclass(frozen=True)
class Target:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} {text!r} is not host:port: write it as name:443")
    return host.lower(), int(port)


class Internet:
    """Public name and port -> where it really is; what droplets reach beyond themselves. Thread-safe."""

    def __init__(self, published: Mapping[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._routes: dict[tuple[str, int], Target] = {}
        for public, real in (published or {}).items():
            self.publish(public, real)

    def publish(self, public: str, real: str) -> None:
        """`public` ("name:port", as droplets connect) relays to `real` ("host:port", as this host connects);
        droplets booted (or powered on) afterwards see it."""
        name, port = _host_port(public, "a published name")
        if name.replace(".", "").isdigit() or ":" in name:
            raise ConfigError(f"publish a name, not an address ({public!r}): droplets find it in /etc/hosts")
        host, real_port = _host_port(real, "a published endpoint")
        with self._lock:
            self._routes[(name, port)] = Target(host, real_port)

    def publish_url(self, url: str) -> None:
        """Publish a URL's host and port (80/443 by its scheme) as itself: a public service the host reaches."""
        parsed = urlparse(url)
        if not parsed.hostname:
            raise ConfigError(f"{url!r} has no host: give a URL such as https://pypi.org/simple")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.publish(f"{parsed.hostname}:{port}", f"{parsed.hostname}:{port}")

    def publish_orchestrator(self, url: str) -> str:
        """Publish the port of `url` (a service of this host, e.g. the Prefect API on 127.0.0.1) under the
        orchestrator's public name; returns the URL as droplets use it."""
        parsed = urlparse(url)
        if not parsed.hostname or not parsed.port:
            raise ConfigError(f"{url!r} names no host and port: give the URL this host reaches the service at")
        self.publish(f"{ORCHESTRATOR}:{parsed.port}", f"{parsed.hostname}:{parsed.port}")
        return parsed._replace(netloc=f"{ORCHESTRATOR}:{parsed.port}").geturl()

    def routes(self) -> dict[tuple[str, int], Target]:
        with self._lock:
            return dict(self._routes)

    def names(self) -> dict[str, str]:
        """Each published name -> its address on a droplet's loopback (the same on every droplet)."""
        names = sorted({name for name, _ in self.routes()})
        if len(names) > 250:
            raise ConfigError("more than 250 published names: the emulator has 127.0.2.1-250 for them")
        return {name: f"{NAME_NET}{i + 1}" for i, name in enumerate(names)}


def stock_internet(mirrors: Iterable[str], package_index: str = "https://pypi.org/simple") -> Internet:
    """What a droplet of the stock image needs from outside: its apt mirrors and the package index (with
    pypi.org's file host when the index is PyPI)."""
    internet = Internet()
    for url in mirrors:
        internet.publish_url(url)
    internet.publish_url(package_index)
    if urlparse(package_index).hostname == "pypi.org":
        for name in PYPI_NAMES:
            internet.publish(f"{name}:443", f"{name}:443")
    return internet


def hosts_file(hostname: str, names: Mapping[str, str]) -> str:
    """The droplet's `/etc/hosts`: loopback, its own name (Debian's 127.0.1.1), and the published names."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", f"127.0.1.1\t{hostname}"]
    lines += [f"{address}\t{name}" for name, address in names.items()]
    return "\n".join(lines) + "\n"


# --- sockets in another namespace ------------------------------------------------

_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def socket_in(netns: int) -> socket.socket:
    """A TCP socket in the network namespace open as fd `netns`, made by a thread that enters it and ends."""
    made: list[socket.socket] = []
    failed: list[OSError] = []

    def enter() -> None:
        try:
            _setns(netns)
            made.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except OSError as exc:
            failed.append(exc)

    thread = threading.Thread(target=enter, name="netns-socket", daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


# --- relays ------------------------------------------------------------------------


def _pump(src: socket.socket, dst: socket.socket, done: Callable[[], None]) -> None:
    """Copy `src` to `dst` until `src` ends, then pass the half-close on."""
    try:
        while data := src.recv(BUFFER):
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    done()


class Relay:
    """A listening socket whose every connection is joined to one `connect()` makes (refused: closed)."""

    def __init__(self, listener: socket.socket, connect: Callable[[], socket.socket], name: str) -> None:
        self.listener = listener
        self.connect = connect
        self.name = name
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=f"relay {name}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                if self._closed:
                    return
                time.sleep(0.05)  # out of file descriptors, say: the listener stays
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    return
                self._open.add(client)
            threading.Thread(target=self._join, args=(client,), name=f"relay {self.name}", daemon=True).start()

    def _join(self, client: socket.socket) -> None:
        try:
            upstream = self.connect()
        except OSError:
            self._drop(client)
            return
        with self._lock:
            if self._closed:
                upstream.close()
                self._drop(client)
                return
            self._open.add(upstream)
        left = [2]

        def done() -> None:
            with self._lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                self._drop(client)
                self._drop(upstream)

        threading.Thread(target=_pump, args=(upstream, client, done), name=f"relay {self.name}", daemon=True).start()
        _pump(client, upstream, done)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        sock.close()

    def open_connections(self) -> int:
        with self._lock:
            return len(self._open) // 2

    def close(self) -> None:
        """Stop listening and cut every connection (both ways)."""
        with self._lock:
            self._closed = True
            socks = list(self._open)
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
        except OSError:
            pass
        self.listener.close()
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)


def _listen(sock: socket.socket, address: str, port: int) -> socket.socket:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


def _connect_host(target: Target) -> socket.socket:
    sock = socket.create_connection((target.host, target.port), timeout=30)
    sock.settimeout(None)
    return sock


class DropletNetwork:
    """One droplet's relays: inbound at `address:port` on the host, outbound per `internet` in its namespace.

    `attach(pid)` when the droplet's container runs (its namespace is that of `pid`), `detach()` when it
    stops (a power-off: the next start gets a new namespace), `close()` when it is destroyed."""

    def __init__(self, droplet: str, address: str, port: int, internet: Internet) -> None:
        if not address.startswith("127."):
            raise ConfigError(f"a droplet's address must be loopback, not {address}: the emulator listens there")
        self.droplet = droplet
        self.address = address
        self.port = port
        self.internet = internet
        self._lock = threading.Lock()
        self._netns: int | None = None
        self._closed = False
        self.inbound: Relay | None = None
        self.outbound: dict[tuple[str, int], Relay] = {}

    def hosts_file(self, hostname: str) -> str:
        return hosts_file(hostname, self.internet.names())

    def attach(self, pid: int) -> None:
        """Enter the namespace of `pid` (the container's PID 1): relays in, and out per the published names.

        The namespace's fd is used and closed only under the lock: a fd closed by a concurrent `detach` and
        reused by another droplet's `attach` would otherwise put sockets in that droplet's namespace."""
        self.detach()
        try:
            with self._lock:
                if self._closed:
                    raise MachineError(f"droplet {self.droplet} was destroyed while it started")
                try:
                    self._netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                except OSError as exc:
                    raise MachineError(
                        f"droplet {self.droplet}: its network namespace is gone ({exc.strerror})"
                    ) from exc
                if os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net"):
                    raise MachineError(
                        f"droplet {self.droplet} shares the host's network namespace: run its container --network none"
                    )
                addresses = self.internet.names()
                for (name, port), target in sorted(self.internet.routes().items()):
                    listener = _listen(socket_in(self._netns), addresses[name], port)
                    self.outbound[(name, port)] = Relay(
                        listener, functools.partial(_connect_host, target), f"{self.droplet} {name}:{port} -> {target}"
                    )
                inbound = _listen(socket.socket(socket.AF_INET, socket.SOCK_STREAM), self.address, self.port)
                self.inbound = Relay(inbound, self._connect_in, f"{self.address}:{self.port} -> {self.droplet}:22")
        except OSError as exc:
            self.detach()
            raise MachineError(
                f"droplet {self.droplet}: could not set up its network relays ({exc}): the emulator needs root "
                "(CAP_SYS_ADMIN) and free loopback ports"
            ) from exc
        except MachineError:
            self.detach()
            raise

    def _connect_in(self) -> socket.socket:
        with self._lock:
            if self._netns is None:
                raise ConnectionRefusedError("the droplet is off")
            sock = socket_in(self._netns)
        try:
            sock.settimeout(30)
            sock.connect(("127.0.0.1", DROPLET_SSH_PORT))
            sock.settimeout(None)
        except OSError:
            sock.close()
            raise
        return sock

    def in_namespace(self) -> socket.socket:
        """A socket inside the droplet's namespace (tests probe from there)."""
        with self._lock:
            if self._netns is None:
                raise MachineError(f"droplet {self.droplet} is not running: power it on first")
            return socket_in(self._netns)

    def detach(self) -> None:
        """Close every relay and let go of the namespace."""
        with self._lock:
            relays = [*self.outbound.values(), *([self.inbound] if self.inbound else [])]
            self.outbound, self.inbound = {}, None
            if self._netns is not None:
                os.close(self._netns)
                self._netns = None
        for relay in relays:
            relay.close()

    def close(self) -> None:
        """For good (the droplet is destroyed): a later `attach` fails, one under way undoes itself."""
        with self._lock:
            self._closed = True
        self.detach()
