"""A real image registry for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1
with htpasswd (bcrypt) authentication, and the stock Debian image pushed to it.

Registered as a plugin in `tests/conftest.py`. `registry` is one server for the
session (each test uses its own repository name, so none depends on another's
tags); `registry_base_image` pushes the emulator's cached debootstrap image
(`tests/droplets.py`'s `stock_image`, never a second debootstrap) from the
session dockerd: nothing is pulled from a public registry.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dropship.emulator.dockerd import DockerDaemon
from dropship.machines.local import free_port
from dropship.oci import RegistryAuth, Skopeo

USERNAME = "dropship-ci"

CONFIG = """\
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: {address}
  secret: {secret}
auth:
  htpasswd:
    realm: dropship-tests
    path: {htpasswd}
"""


@dataclass
class LocalRegistry:
    host: str
    """127.0.0.1:PORT, as in image references."""
    username: str
    password: str = field(repr=False)
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def auth(self) -> RegistryAuth:
        return RegistryAuth(self.host, self.username, self.password)

    @property
    def log(self) -> Path:
        return self.folder / "registry.log"

    def repository(self, name: str) -> str:
        return f"{self.host}/{name}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_registry(folder: Path, password: str | None = None) -> LocalRegistry:
    """`docker-registry serve` on a free loopback port, htpasswd users from `htpasswd -B`; waits for /v2/."""
    program = shutil.which("docker-registry")
    if program is None or shutil.which("htpasswd") is None:
        pytest.skip("Debian's docker-registry and apache2-utils (htpasswd) are needed for the registry tests")
    password = password or secrets.token_urlsafe(18)
    folder.mkdir(parents=True, exist_ok=True)
    htpasswd = folder / "htpasswd"
    subprocess.run(
        ["htpasswd", "-B", "-i", "-c", str(htpasswd), USERNAME],
        input=password.encode(),
        check=True,
        capture_output=True,
    )
    port = free_port()
    config = folder / "config.yml"
    config.write_text(
        CONFIG.format(
            root=folder / "data", address=f"127.0.0.1:{port}", secret=secrets.token_hex(16), htpasswd=htpasswd
        )
    )
    registry = LocalRegistry(f"127.0.0.1:{port}", USERNAME, password, folder)
    with registry.log.open("ab") as log:
        registry.process = subprocess.Popen(
            [program, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            break
        try:
            urllib.request.urlopen(f"http://{registry.host}/v2/", timeout=2)  # noqa: S310 - loopback
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # up, and asking for credentials
                return registry
        except OSError:
            pass
        time.sleep(0.1)
    registry.stop()
    raise RuntimeError(f"docker-registry did not start: {registry.log.read_text()[-600:]}")


@pytest.fixture(scope="session")
def registry() -> Iterator[LocalRegistry]:
    folder = Path(tempfile.mkdtemp(prefix="dropship-registry-"))
    started = time.monotonic()
    server = start_registry(folder)
    print(f"\n[registry] {server.host} up in {time.monotonic() - started:.1f} s", flush=True)
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def registry_base_image(registry: LocalRegistry, dockerd: DockerDaemon, stock_image: str) -> str:
    """The stock Debian 12 image (made locally with debootstrap, cached) in the registry: `host/base/debian:12`."""
    reference = f"{registry.host}/base/debian:12"
    started = time.monotonic()
    with Skopeo(registry.auth) as skopeo:
        skopeo.run(
            [
                "copy",
                "--quiet",
                "--src-daemon-host",
                dockerd.host,
                "--dest-tls-verify=false",
                f"docker-daemon:{stock_image}",
                f"docker://{reference}",
            ],
            f"pushing {stock_image}",
        )
    print(f"\n[registry] {stock_image} pushed as {reference} in {time.monotonic() - started:.1f} s", flush=True)
    return reference
