"""A real image registry for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1
with htpasswd (bcrypt) authentication, started as `dropship demo --image` starts it.

Registered as a plugin in `tests/conftest.py`. `registry` is one server for the
session (each test uses its own repository name, so none depends on another's
tags). Nothing is pulled from a public registry: the images pushed are built
`FROM scratch` or from the emulator's cached debootstrap image by the tests
(`push_image`).
"""

from __future__ import annotations

import http.client
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dropship.emulator.dockerd import DockerDaemon
from dropship.oci_registry import LocalRegistry, start_registry
from dropship.ports import free_port

__all__ = ["LocalRegistry", "RefusingProxy", "push_image", "registry"]


@pytest.fixture(scope="session")
def registry() -> Iterator[LocalRegistry]:
    """One registry for the session (`dropship.oci_registry`, as `dropship demo --image` starts it), user
    dropship-ci with a fresh random password."""
    if shutil.which("docker-registry") is None or shutil.which("htpasswd") is None:
        pytest.skip("Debian's docker-registry and apache2-utils (htpasswd) are needed for the registry tests")
    folder = Path(tempfile.mkdtemp(prefix="dropship-registry-"))
    started = time.monotonic()
    server = start_registry(folder, port=free_port(), username="dropship-ci")
    print(f"\n[registry] {server.host} up in {time.monotonic() - started:.1f} s", flush=True)
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


def push_image(
    daemon: DockerDaemon,
    registry: LocalRegistry,
    repository: str,
    tag: str,
    files: dict[str, str | bytes],
    base: str = "scratch",
) -> str:
    """Build `FROM base` plus `files` ({path in the image: text or bytes}, executable) in `daemon`, without
    network, push it to `repository:tag` with the registry's credentials; returns the pushed digest."""
    with tempfile.TemporaryDirectory(prefix="dropship-image-") as scratch:
        context = Path(scratch)
        lines = [f"FROM {base}"]
        for index, (path, text) in enumerate(sorted(files.items())):
            data = text.encode() if isinstance(text, str) else text
            (context / f"f{index}").write_bytes(data)
            (context / f"f{index}").chmod(0o755)
            lines.append(f"COPY f{index} {path}")
        (context / "Dockerfile").write_text("\n".join(lines) + "\n")
        image, _log = daemon.client.images.build(path=str(context), tag=f"{repository}:{tag}", network_mode="none")
    auth = {"username": registry.username, "password": registry.password}
    for line in daemon.client.images.push(repository, tag=tag, auth_config=auth, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(f"push of {repository}:{tag} failed: {line['error']}")
    image.reload()
    return next(d.split("@", 1)[1] for d in image.attrs["RepoDigests"] if d.startswith(f"{repository}@"))


class RefusingProxy:
    """An HTTP proxy in front of the registry that answers 503 to the requests `refuse` picks and passes
    every other request through unchanged (Host header included, so the registry's upload Locations
    point back at the proxy). A registry fault at one step: e.g. tag PUTs refused after the pushes by
    digest went through. Bodies are small in tests, so each is read whole."""

    def __init__(self, upstream: str, refuse: Callable[[str, str], bool]) -> None:
        self.upstream = upstream
        self.refuse = refuse
        self.refused: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        data += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return data
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _relay(self) -> None:
                body = self._body()
                if proxy.refuse(self.command, self.path):
                    proxy.refused.append(f"{self.command} {self.path}")
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                try:  # header by header: clients repeat some (Accept), which a dict would collapse
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for key, value in self.headers.items():
                        if key.lower() not in ("transfer-encoding", "content-length"):
                            conn.putheader(key, value)
                    conn.putheader("Content-Length", str(len(body)))
                    conn.endheaders(body)
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                length = answer.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.host = f"127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
