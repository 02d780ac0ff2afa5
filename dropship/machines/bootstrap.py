"""Turning a stock droplet into a build worker, over SSH with the host key pinned.

A droplet boots a stock image (Debian with cloud-init and python3, nothing of
dropship). Its user_data only installs the host key the orchestrator chose
(`userdata.render_bootstrap`); sshd may first answer with the image's own
fresh keys, so `connect_pinned` keeps trying until the pinned key answers and
never accepts another. Then, over that channel:

1. the target's `setup` Debian packages (and `python3-venv` when `python3 -m
   venv` can't work) from the machine's own mirror, and its root
   `setup_commands`;
2. a venv with exactly the orchestrator's dropship and Prefect: dropship as a
   wheel built once per orchestrator process from the installed distribution
   (or its checkout), its dependencies pinned by a constraints file made from
   the orchestrator's own installed versions (`importlib.metadata`), from the
   package index the block names;
3. the worker's API URL and credentials in `/etc/dropship/worker.env` (root,
   0600), written through the SSH channel's stdin: never in user_data, a
   command line or a log;
4. the worker launcher, as a systemd unit where PID 1 is systemd, else as a
   detached loop that starts it again if it fails, logging to
   /var/log/dropship/worker.log. It waits on the hand-over pipe for the build
   run, then runs a worker for the machine's own queue that polls once
   (`dropship.machines.handover`, `tasks.machine_worker`).

A snapshot made by `dropship image build` already holds 1 and 2 (`image_hash`
records what it holds); a machine booted from it only gets 3 and 4.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from dropship.errors import ConfigError, HostKeyMismatch, MachineError
from dropship.machines import Machine
from dropship.machines.handover import HANDOVER, WORKER_LOG, one_line
from dropship.machines.userdata import worker_env
from dropship.ssh import Endpoint, SshSession

PYPI = "https://pypi.org/simple"
VENV = "/opt/dropship/venv"
DIST = "/opt/dropship/dist"
ENV_FILE = "/etc/dropship/worker.env"
UNIT = "dropship-worker.service"
LAUNCHER = "/opt/dropship/bin/worker-launch"
SUPERVISOR = "/opt/dropship/bin/worker-supervise"
MARK = "/etc/dropship/image"
"""On a snapshot: the image hash it was built with."""


@dataclass(frozen=True)
class Setup:
    """What a target's machine needs installed, from the manifest."""

    packages: tuple[str, ...] = ()
    commands: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class WorkerConfig:
    api_url: str
    pool: str
    queue: str
    auth_string: str | None = None
    api_key: str | None = None
    client_env: tuple[tuple[str, str], ...] = ()
    """Non-secret Prefect client settings for the worker and its build runs (`orchestrator.client_env`)."""

    def __repr__(self) -> str:  # credentials never reach a log line
        return f"WorkerConfig(api_url={self.api_url!r}, queue={self.queue!r}, credentials=****)"

    def env_file(self) -> str:
        """`KEY=value` lines for systemd's EnvironmentFile and the supervisor alike."""
        env = {**worker_env(self.api_url), **dict(self.client_env), "PREFECT_HOME": "/var/lib/dropship/prefect"}
        if self.auth_string:
            env["PREFECT_API_AUTH_STRING"] = self.auth_string
        if self.api_key:
            env["PREFECT_API_KEY"] = self.api_key
        for name, value in env.items():
            if not value or value != value.strip() or any(c in value for c in "\n\r\"'\\"):
                raise ConfigError(
                    f"{name} for the build machines is empty or holds quotes, backslashes, newlines or edge spaces: "
                    "fix worker_api_url or the credentials in the DigitalOceanCredentials block"
                )
        return "".join(f"{name}={value}\n" for name, value in env.items())

    def launcher(self) -> str:
        """The launcher script: wait on the hand-over pipe for the build run, then the worker for it."""
        argv = [f"{VENV}/bin/python", "-m", "tasks.machine_worker", "--pool", self.pool, "--queue", self.queue]
        return (
            "#!/bin/sh\n# dropship build worker launcher, generated: waits for the build run, polling nothing\n"
            f"exec {shlex.join([*argv, '--handover', HANDOVER])}\n"
        )


# --- what this orchestrator runs ---------------------------------------------

_WHEEL_LOCK = threading.Lock()
_WHEEL: Path | None = None


def dropship_wheel() -> Path:
    """A wheel of the dropship this process runs, built once per process."""
    global _WHEEL
    with _WHEEL_LOCK:
        if _WHEEL is None or not _WHEEL.exists():
            out = Path(tempfile.mkdtemp(prefix="dropship-wheel-"))
            _WHEEL = _build_wheel(out)
        return _WHEEL


def _checkout() -> Path | None:
    """The source folder this dropship is imported from, when it is a checkout (editable install, tests)."""
    import dropship

    root = Path(dropship.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.exists() and 'name = "dropship"' in pyproject.read_text():
        return root
    return None


def _build_wheel(out: Path) -> Path:
    source = _checkout()
    if source is not None:
        had_build = (source / "build").exists()
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
            capture_output=True,
            text=True,
            check=False,
        )
        # setuptools leaves build/ and *.egg-info in the checkout; they are not ours to keep
        if not had_build:
            shutil.rmtree(source / "build", ignore_errors=True)
        if result.returncode != 0:
            raise MachineError(f"could not build the dropship wheel from {source}: {result.stderr.strip()[-300:]}")
        (wheel,) = out.glob("dropship-*.whl")
        return wheel
    return _wheel_from_record(out)


def _wheel_from_record(out: Path) -> Path:
    """Repack an installed (non-editable) distribution from its RECORD."""
    dist = metadata.distribution("dropship")
    files = [f for f in dist.files or [] if not str(f).startswith("..") and "__pycache__" not in str(f)]
    wheel = out / f"dropship-{dist.version}-py3-none-any.whl"
    record_lines = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        record_name = ""
        for item in files:
            name = str(item)
            if name.endswith(".dist-info/RECORD"):
                record_name = name
                continue
            data = Path(str(item.locate())).read_bytes()
            archive.writestr(name, data)
            digest = hashlib.sha256(data).digest()
            record_lines.append(f"{name},sha256={base64.urlsafe_b64encode(digest).rstrip(b'=').decode()},{len(data)}")
        if not record_name:
            raise MachineError("the installed dropship has no RECORD: reinstall it with pip")
        record_lines.append(f"{record_name},,")
        archive.writestr(record_name, "\n".join(record_lines) + "\n")
    return wheel


def wheel_identity(wheel: Path) -> str:
    """sha256 over the wheel's members (names and contents), not its zip bytes or RECORD."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            if name.endswith(".dist-info/RECORD"):
                continue
            digest.update(name.encode() + b"\0" + hashlib.sha256(archive.read(name)).digest())
    return digest.hexdigest()


def constraints() -> str:
    """`name==version` for dropship's installed dependency closure (not dropship itself)."""
    env = {k: str(v) for k, v in default_environment().items()}
    pinned: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [("dropship", frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        key = canonicalize_name(dist.metadata["Name"])
        if key != "dropship":
            pinned[key] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not any(
                req.marker.evaluate({**env, "extra": extra}) for extra in (extras or {""})
            ):
                continue
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return "".join(f"{name}=={version}\n" for name, version in sorted(pinned.items()))


def versions() -> dict[str, str]:
    """What this orchestrator runs, for image hashes and messages."""
    return {
        "dropship": metadata.version("dropship"),
        "prefect": metadata.version("prefect"),
        "python": ".".join(map(str, sys.version_info[:2])),
    }


def image_hash(base: str, setup: Setup) -> str:
    """The hash a snapshot of `base` with `setup` made by this orchestrator records."""
    record = {
        "base": base,
        "versions": versions(),
        "dropship_wheel": wheel_identity(dropship_wheel()),
        "constraints": hashlib.sha256(constraints().encode()).hexdigest(),
        "setup": {"packages": list(setup.packages), "commands": [list(c) for c in setup.commands]},
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


# --- on the machine ------------------------------------------------------------


def connect_pinned(
    machine: Machine,
    private_key: str,
    *,
    timeout: float,
    interval: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> SshSession:
    """An SSH session once the machine answers with its pinned host key.

    A freshly booted droplet answers with the image's own keys until its
    user_data has installed ours: such an answer is refused, and tried again
    until `timeout`; nothing is ever sent over a connection with another key.
    """
    endpoint = Endpoint(machine.host, machine.port, machine.user, machine.host_public_key)
    deadline = time.monotonic() + timeout
    mismatches = 0
    last = ""
    while True:
        session = SshSession(endpoint, private_key, connect_timeout=min(15.0, max(1.0, deadline - time.monotonic())))
        try:
            session.connect()
            return session
        except HostKeyMismatch as exc:
            mismatches += 1
            last = str(exc)
        except MachineError as exc:  # not listening yet, or our key not installed yet
            last = str(exc)
        if time.monotonic() >= deadline:
            raise MachineError(
                f"machine {machine.name} ({machine.id}) did not answer SSH with its pinned host key within "
                f"{timeout:.0f} s ({mismatches} answer(s) with another key refused); last: {last}"
            )
        sleep(interval)


def _apt(ssh: SshSession, packages: Sequence[str]) -> None:
    env = ["env", "DEBIAN_FRONTEND=noninteractive"]
    ssh.run([*env, "apt-get", "update", "-q"], timeout=900)
    ssh.run([*env, "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], timeout=1800)


def install(ssh: SshSession, setup: Setup, *, index_url: str = PYPI, image_mark: str = "") -> None:
    """Setup packages and commands, then dropship and Prefect in a venv (steps 1 and 2)."""
    packages = list(setup.packages)
    try:
        ssh.run(["python3", "-c", "import ensurepip, venv"])
    except MachineError:
        packages.append("python3-venv")
    if packages:
        _apt(ssh, packages)
    for command in setup.commands:
        ssh.run(list(command), timeout=1800)
    wheel = dropship_wheel()
    ssh.run(
        [
            "mkdir",
            "-p",
            DIST,
            "/etc/dropship",
            "/var/log/dropship",
            "/var/lib/dropship/prefect",
            "/var/lib/dropship/work",
            "/opt/dropship/bin",
        ]
    )
    ssh.put(wheel, f"{DIST}/{wheel.name}")
    ssh.run(["sh", "-c", f"cat > {DIST}/constraints.txt"], stdin=constraints().encode())
    ssh.run(["python3", "-m", "venv", VENV])
    ssh.run(
        [
            f"{VENV}/bin/pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-input",
            "--index-url",
            index_url,
            "--constraint",
            f"{DIST}/constraints.txt",
            f"{DIST}/{wheel.name}",
        ],
        timeout=1800,
    )
    if image_mark:
        ssh.run(["sh", "-c", f"cat > {MARK}"], stdin=(image_mark + "\n").encode())


def start_worker(ssh: SshSession, worker: WorkerConfig) -> str:
    """Credentials file, then the launcher (step 3 and 4); returns "systemd" or "supervised"."""
    ssh.run(["mkdir", "-p", "/etc/dropship", "/var/log/dropship", "/var/lib/dropship/prefect", "/opt/dropship/bin"])
    ssh.run(
        ["sh", "-c", f"umask 077 && cat > {ENV_FILE}.part && mv {ENV_FILE}.part {ENV_FILE}"],
        stdin=worker.env_file().encode(),
    )
    ssh.run(["sh", "-c", f"cat > {LAUNCHER} && chmod 0755 {LAUNCHER}"], stdin=worker.launcher().encode())
    ssh.run(["sh", "-c", f"[ -p {HANDOVER} ] || mkfifo -m 0600 {HANDOVER}"])  # there before anything writes to it
    if ssh.run(["cat", "/proc/1/comm"]).strip() == "systemd":
        unit = (
            "[Unit]\nDescription=dropship build worker\nAfter=network-online.target\n\n"
            f"[Service]\nEnvironmentFile={ENV_FILE}\nWorkingDirectory=/var/lib/dropship\n"
            f"ExecStart={LAUNCHER}\nRestart=on-failure\nRestartSec=2\n"
            f"StandardOutput=append:{WORKER_LOG}\nStandardError=append:{WORKER_LOG}\n\n"
            "[Install]\nWantedBy=multi-user.target\n"
        )
        ssh.run(["sh", "-c", f"cat > /etc/systemd/system/{UNIT}"], stdin=unit.encode())
        ssh.run(["systemctl", "daemon-reload"])
        ssh.run(["systemctl", "enable", "--now", UNIT])
        return "systemd"
    script = (
        "#!/bin/sh\n# dropship build worker launcher, started again when it fails (no systemd on this machine)\n"
        "echo $$ > /run/dropship-worker.pid\n"
        f'until ( while IFS= read -r line; do export "$line"; done < {ENV_FILE}\n'
        f"        cd /var/lib/dropship && exec {LAUNCHER} ); do\n"
        "  sleep 2\n"
        "done\n"
    )
    ssh.run(["sh", "-c", f"cat > {SUPERVISOR} && chmod 0755 {SUPERVISOR}"], stdin=script.encode())
    ssh.run(["sh", "-c", f"setsid {SUPERVISOR} >> {WORKER_LOG} 2>&1 < /dev/null &"])
    return "supervised"


def image_mark(ssh: SshSession) -> str:
    """The image hash a snapshot recorded, or "" on a stock image."""
    return ssh.run(["sh", "-c", f"cat {MARK} 2>/dev/null || true"]).strip()


_UNRESOLVED = re.compile(r"name resolution|Name or service not known|nodename nor servname|getaddrinfo failed", re.I)
_REFUSED = re.compile(r"Connection refused|No route to host|timed out", re.I)
_UNAUTHORIZED = re.compile(r"\b401\b|Unauthorized", re.I)


def worker_silence(api_url: str, log_tail: str) -> str:
    """Why a droplet's worker never took its build run, read from its log: the cause and what to change.
    The tail itself follows, cut at a word (a cut mid-word read like garbage)."""
    host = urllib.parse.urlsplit(api_url).hostname or api_url
    flat = one_line(log_tail)
    if _UNRESOLVED.search(log_tail):
        cause = (
            f"the droplet cannot resolve {host}, the host of worker_api_url {api_url}: give the "
            "DigitalOceanCredentials block a URL whose name droplets resolve (the emulator resolves only the names "
            f"it publishes: `dropship emulator --publish {host}:PORT=127.0.0.1:PORT`)"
        )
    elif _UNAUTHORIZED.search(log_tail):
        cause = (
            f"Prefect at {api_url} refused the worker's credentials: set api_auth_string (or api_key) in the "
            "DigitalOceanCredentials block to the server's"
        )
    elif _REFUSED.search(log_tail):
        cause = (
            f"nothing answers at {api_url} from the droplet: check worker_api_url in the DigitalOceanCredentials "
            "block, and that the server listens where droplets reach it"
        )
    else:
        cause = "check worker_api_url and the credentials in the DigitalOceanCredentials block"
    return f"{cause}; its log ends: {flat}"


def scrub_for_snapshot(ssh: SshSession) -> None:
    """Nothing of this machine's life in the snapshot: credentials, login keys, host keys, cloud-init state."""
    ssh.run(["rm", "-f", ENV_FILE, "/root/.ssh/authorized_keys", "/etc/ssh/sshd_config.d/00-dropship.conf"])
    ssh.run(["sh", "-c", "rm -f /etc/ssh/ssh_host_*; (cloud-init clean --logs >/dev/null 2>&1 || true); sync"])


def safe_names(names: Sequence[str]) -> None:
    """Debian package names only (they reach apt-get's command line)."""
    for name in names:
        if not re.fullmatch(r"[a-z0-9][a-z0-9+.:=~-]*", name):
            raise ConfigError(f"{name!r} is not a Debian package name: fix setup in dropship.toml")
