"""A PyPI-compatible package index on this machine, for the demo's wheel.

The demo must publish the example's wheel somewhere real without an account
anywhere: a `pypiserver` on 127.0.0.1 with an htpasswd file, so the upload
goes through twine and the credentials path exactly as it would for a team's
index. Its port and password are kept in its folder, so a second demo in the
same folder finds the same index (the demo's manifest names its URL, and that
manifest is committed under the release tag).
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

from dropship import local_server
from dropship.errors import ConfigError, DropshipError
from dropship.ports import free_port

USER = "demo"


class PackageIndexError(DropshipError):
    """The local package index did not start."""


class LocalPackageIndex:
    """pypiserver serving `folder/packages`, uploads allowed for `USER` with the password in `folder/password`."""

    def __init__(self, folder: Path, host: str = "127.0.0.1") -> None:
        self.folder = folder
        self.host = host
        self.packages = folder / "packages"
        self.password_file = folder / "password"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """Chosen once per folder, so the URL the demo's manifest names stays right."""
        path = self.folder / "port"
        if not path.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{free_port()}\n")
        return int(path.read_text())

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def _credentials(self) -> None:
        from passlib.apache import HtpasswdFile

        if not self.password_file.exists():
            self.password_file.touch(mode=0o600)
            self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
        htpasswd = HtpasswdFile(str(self.folder / "htpasswd"), new=True, default_scheme="sha256_crypt")
        htpasswd.set_password(USER, self.password_file.read_text().strip())
        htpasswd.save()

    def start(self) -> None:
        self.packages.mkdir(parents=True, exist_ok=True)
        self._credentials()
        port = self.port
        log = self.folder / "pypiserver.log"
        argv = [sys.executable, "-m", "pypiserver", "run", "-i", self.host, "-p", str(port)]
        argv += ["-P", str(self.folder / "htpasswd"), "-a", "update", str(self.packages)]
        self._process = process = local_server.spawn(argv, log)
        if local_server.wait_until_up(process, self._answers, timeout=30, interval=0.2):
            return
        if process.poll() is None:
            self.stop()
            raise PackageIndexError(f"pypiserver did not answer on {self.url} within 30 s")
        tail = log.read_text(errors="replace").strip().splitlines()[-1:]
        if any("in use" in line for line in tail):
            raise ConfigError(
                f"the demo's package index port {port} is in use: stop what listens there, or use a new --workdir"
            )
        raise PackageIndexError(f"pypiserver exited at start: {' '.join(tail) or 'no output'}")

    def _answers(self) -> bool:
        status = local_server.http_status(f"{self.url}simple/")
        return status is not None and status < 400

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            local_server.stop(process, grace=10)
