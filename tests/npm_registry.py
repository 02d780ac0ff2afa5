"""A real npm registry for the tests: verdaccio, installed once from the npm
registry into a cache outside the repository, started on 127.0.0.1 with its
storage, config and htpasswd file in the test's folder.

The config allows no registration (`max_users: -1`), reading and publishing
to authenticated users only, and has no uplinks: nothing is ever proxied to
the public npm registry. Without node and npm this module fails with a
message saying what to install, rather than skipping.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from dropship.ports import free_port
from tests.servers import stop_group

VERDACCIO = "5.33.0"
# The npm registry this machine reaches lacks the `node-fetch@cjs` dist-tag
# that one of verdaccio 5's dependencies asks for; pinning node-fetch 2.7.0
# (the version behind that tag) lets it install.
INSTALLER = {
    "name": "dropship-test-verdaccio",
    "private": True,
    "dependencies": {"verdaccio": VERDACCIO},
    "overrides": {"node-fetch": "2.7.0"},
}
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dropship" / "verdaccio"
# Debian 12's npm 9.2 fails on that override ("Invalid comparator: cjs"); with
# an npm older than 10, npm 10 is installed into the cache first (it runs on
# Debian's Node.js 18) and installs verdaccio.
INSTALLER_NPM = "10.9.2"


def need_node() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise RuntimeError(
            "the npm registry tests need Node.js and npm on PATH (node: "
            f"{node or 'missing'}, npm: {npm or 'missing'}): run scripts/setup.sh --test, "
            "or apt-get install nodejs npm"
        )
    return node, npm


def _npm_install(npm: list[str], folder: Path, *specs: str) -> None:
    done = subprocess.run(
        [*npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--no-update-notifier", *specs],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"npm install {' '.join(specs)} in {folder} failed: {done.stdout[-1500:]}{done.stderr[-1500:]}"
        )


def _installer(node: str, npm: str) -> list[str]:
    """An npm that can install verdaccio: the system's if it is 10 or newer, else npm 10 in the cache."""
    version = subprocess.run([npm, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.split(".")[0]) >= 10:
        return [npm]
    home = CACHE / f"npm-{INSTALLER_NPM}"
    cli = home / "node_modules" / "npm" / "bin" / "npm-cli.js"
    if not cli.exists():
        home.mkdir(parents=True, exist_ok=True)
        (home / "package.json").write_text('{"private": true}\n')
        _npm_install([npm], home, f"npm@{INSTALLER_NPM}")
    return [node, str(cli)]


def verdaccio_binary() -> Path:
    """node_modules/.bin/verdaccio of the pinned version, installed once (under a lock) into the cache."""
    node, npm = need_node()
    home = CACHE / VERDACCIO
    binary = home / "node_modules" / ".bin" / "verdaccio"
    if (home / ".installed").exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{VERDACCIO}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (home / ".installed").exists():
            return binary
        staging = CACHE / f"{VERDACCIO}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        (staging / "package.json").write_text(json.dumps(INSTALLER, indent=2))
        _npm_install(_installer(node, npm), staging)
        shutil.rmtree(home, ignore_errors=True)
        staging.rename(home)
        (home / ".installed").write_text(VERDACCIO + "\n")
    return binary


CONFIG = """\
storage: {storage}
auth:
  htpasswd:
    file: {htpasswd}
    max_users: -1
uplinks: {{}}
packages:
  '**':
    access: $authenticated
    publish: $authenticated
    unpublish: $authenticated
listen: 127.0.0.1:{port}
web:
  enable: false
log: {{ type: stdout, format: pretty, level: http }}
"""


@dataclass
class Verdaccio:
    folder: Path
    url: str
    user: str
    password: str
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> Path:
        return self.folder / "verdaccio.log"

    def login_token(self) -> str:
        """A token for `user` (what `npm login` gets), asked for with basic auth."""
        request = urllib.request.Request(
            f"{self.url}-/user/org.couchdb.user:{self.user}",
            data=json.dumps({"name": self.user, "password": self.password}).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        basic = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {basic}")
        with urllib.request.urlopen(request, timeout=30) as answer:
            return str(json.load(answer)["token"])

    def view(self, spec: str, *fields: str) -> object:
        """What `npm view --json` reads from the registry, as the test's own user (the registry wants auth)."""
        _, npm = need_node()
        config = self.folder / "view-npmrc"
        config.write_text(f"//{self.url.removeprefix('http://')}:_authToken={self.login_token()}\n")
        done = subprocess.run(
            [npm, "view", spec, *fields, "--json", "--registry", self.url, "--userconfig", str(config)]
            + ["--logs-max=0", "--cache", str(self.folder / "view-cache")],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(done.stdout)


@contextmanager
def running_verdaccio(folder: Path, user: str, password: str) -> Iterator[Verdaccio]:
    """verdaccio on a free 127.0.0.1 port, with `user`/`password` its only account."""
    binary = verdaccio_binary()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "storage").mkdir(exist_ok=True)
    htpasswd = folder / "htpasswd"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()  # $2b$, which verdaccio accepts
    htpasswd.write_text(f"{user}:{hashed}\n")
    port = free_port()
    config = folder / "config.yaml"
    config.write_text(CONFIG.format(storage=folder / "storage", htpasswd=htpasswd, port=port))
    log = folder / "verdaccio.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(binary), "--config", str(config)],
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Verdaccio(folder, f"http://127.0.0.1:{port}/", user, password, process)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{server.url}-/ping", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"verdaccio did not come up: {log.read_text(errors='replace')[-1500:]}"
                    ) from None
                time.sleep(0.2)
        yield server
    finally:
        stop_group(process, grace=10)
