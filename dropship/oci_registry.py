"""A local image registry: Debian's `docker-registry` (distribution 2.8) on a loopback address,
with htpasswd (bcrypt) authentication, for `dropship demo --image` and the tests.

The password goes to `htpasswd -B -i` on its stdin, never on a command line;
the registry logs requests, never credentials. A production registry is the
release engineer's, not this.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from dropship import local_server
from dropship.errors import ConfigError, ImageError
from dropship.oci import RegistryAuth

USERNAME = "dropship"

CONFIG = """\
version: 0.1
log:
  level: info
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
    realm: dropship
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

    @property
    def config(self) -> Path:
        return self.folder / "config.yml"

    def repository(self, name: str) -> str:
        return f"{self.host}/{name}"

    def stop(self) -> None:
        if self.process is not None:
            local_server.stop(self.process, grace=10)


def start_registry(
    folder: Path, *, port: int, password: str | None = None, username: str = USERNAME, timeout: float = 30.0
) -> LocalRegistry:
    """`docker-registry serve` on 127.0.0.1:`port` with data in `folder/data`; waits until /v2/ asks for credentials."""
    program = shutil.which("docker-registry")
    if program is None or shutil.which("htpasswd") is None:
        raise ConfigError("a local registry needs Debian's docker-registry and apache2-utils (htpasswd): install them")
    password = password or secrets.token_urlsafe(18)
    folder.mkdir(parents=True, exist_ok=True)
    htpasswd = folder / "htpasswd"
    done = subprocess.run(
        ["htpasswd", "-B", "-i", "-c", str(htpasswd), username], input=password.encode(), capture_output=True
    )
    if done.returncode != 0:
        raise ImageError(f"htpasswd failed: {done.stderr.decode(errors='replace').strip()[:200]}")
    registry = LocalRegistry(f"127.0.0.1:{port}", username, password, folder)
    registry.config.write_text(
        CONFIG.format(root=folder / "data", address=registry.host, secret=secrets.token_hex(16), htpasswd=htpasswd)
    )
    registry.process = local_server.spawn([program, "serve", str(registry.config)], registry.log)
    # Up when /v2/ asks for credentials.
    if local_server.wait_until_up(
        registry.process,
        lambda: local_server.http_status(f"http://{registry.host}/v2/") == 401,
        timeout=timeout,
        interval=0.1,
    ):
        return registry
    registry.stop()
    tail = registry.log.read_text(errors="replace")[-300:].replace("\n", " | ")
    raise ImageError(f"docker-registry did not start on {registry.host} (log {registry.log}): {tail}")
