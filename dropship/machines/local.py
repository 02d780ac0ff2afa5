"""Local machines: an sshd on 127.0.0.1 plus a Prefect worker, per machine.

The embedded default and the base of the DigitalOcean emulator. A machine is
a folder (`<state>/machines/<id>/`) holding `machine.json`, its root (where
the user_data script writes host keys and the worker's home) and logs. The
machine is "booted" by running its user_data script exactly as cloud-init
would, with `DROPSHIP_MACHINE_ROOT` set, then starting a real OpenSSH server
on a free loopback port with the host key the script wrote. It works for an
ordinary user as well as root: an unprivileged sshd accepts logins as the user
that started it.

Every process of a machine carries `DROPSHIP_MACHINE_ID` in its environment,
so deletion finds the worker's flow-run children too, not only the process
groups it started; and since state is on disk, a reaper in another process
can list and delete machines an orchestrator left behind.
"""

from __future__ import annotations

import builtins
import getpass
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from dropship.dockerd import DOCKERD_FOLDER, sweep
from dropship.errors import MachineError
from dropship.machines import BASE_TAG, WORK_DIR, Machine, MachineRequest
from dropship.machines.sshd import find_sshd, sshd_config
from dropship.ports import free_port

MARKER = "DROPSHIP_MACHINE_ID"


API_CREDENTIALS = ("PREFECT_API_AUTH_STRING", "PREFECT_API_KEY")
"""Kept in a machine's environment: its worker talks to the orchestrator's Prefect
server, which may ask for them (`dropship server start --auth-string-file`), as a
droplet's worker gets them from its credentials block. Never written to a file."""


def _machine_env(machine_id: str, root: Path) -> dict[str, str]:
    """The orchestrator's environment minus its Prefect and dropship settings (but the API credentials)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DROPSHIP_")) or k in API_CREDENTIALS}
    env[MARKER] = machine_id
    env["DROPSHIP_MACHINE_ROOT"] = str(root)
    return env


def _pids_with_marker(machine_id: str) -> list[int]:
    needle = f"{MARKER}={machine_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False


def _signal_machine(machine_id: str, pgids: list[int], sig: signal.Signals) -> None:
    """Signal the machine's process groups and every process carrying its marker."""
    for pgid in pgids:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in _pids_with_marker(machine_id):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(machine_id: str, seconds: float) -> bool:
    """True once no process of the machine is left, False after `seconds`.

    The marker scan reads every process's environment; the wait checks only
    the pids it found, and scans again before it says gone (a process forked
    meanwhile is found then). Scanning at every check was 8 % of the release
    process's CPU in the 16-target benchmark (py-spy), the largest item of
    dropship's own code there.
    """
    deadline = time.monotonic() + seconds
    pids = _pids_with_marker(machine_id)
    while True:
        pids = [p for p in pids if _alive(p)]
        if not pids or time.monotonic() >= deadline:
            # the markers decide: a process forked meanwhile, or a pid found earlier now another's
            pids = [p for p in _pids_with_marker(machine_id) if _alive(p)]
            if not pids:
                return True
            if time.monotonic() >= deadline:
                return False
        time.sleep(0.05)


class LocalProvider:
    """Machines on this host; `state_dir` holds them."""

    name = "local"

    def __init__(self, state_dir: Path, *, boot_timeout: float = 60.0) -> None:
        self.state_dir = state_dir
        self.boot_timeout = boot_timeout
        self.user = getpass.getuser()

    @property
    def machines_dir(self) -> Path:
        return self.state_dir / "machines"

    def create(self, request: MachineRequest, *, address: str = "127.0.0.1", port: int | None = None) -> Machine:
        """Boot a machine; `address` (a loopback address) and `port` let the
        DigitalOcean emulator give each droplet its own IP with SSH on one port."""
        if not address.startswith("127."):
            raise MachineError(f"local machines listen on loopback addresses only, not {address}")
        machine_id = secrets.token_hex(6)
        folder = self.machines_dir / machine_id
        root = folder / "root"
        root.mkdir(parents=True)
        (root / "run").mkdir()
        port = port or free_port()
        machine = Machine(
            id=machine_id,
            name=request.name,
            provider=self.name,
            tags=tuple(dict.fromkeys((BASE_TAG, *request.tags))),
            host=address,
            port=port,
            user=self.user,
            work_dir=f"{root}{WORK_DIR}",
            created_at=datetime.now(UTC),
            host_public_key=request.host_public_key,
            details={"size": request.size, "image": request.image, "region": request.region},
            root=str(root),
        )
        self._save(folder, machine, {})
        try:
            pids = self._boot(folder, root, machine, request.user_data)
            self._save(folder, machine, pids)
            self._wait_ssh(machine, folder)
        except BaseException:
            self.delete(machine_id)
            raise
        return machine

    def _boot(self, folder: Path, root: Path, machine: Machine, user_data: str) -> dict[str, int]:
        script = folder / "user_data"
        script.write_text(user_data)
        env = _machine_env(machine.id, root)
        with (folder / "user_data.log").open("wb") as log:
            boot = subprocess.Popen(
                ["sh", str(script)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                status = boot.wait(timeout=self.boot_timeout)
            except subprocess.TimeoutExpired as exc:
                raise MachineError(
                    f"machine {machine.name}: user_data did not finish in {self.boot_timeout:.0f} s"
                ) from exc
        pids = {"user_data_pgid": boot.pid}
        if status != 0:
            tail = (folder / "user_data.log").read_text(errors="replace")[-500:]
            raise MachineError(f"machine {machine.name}: user_data exited {status}: {tail}")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        config = folder / "sshd_config"
        config.write_text(sshd_config(root, machine.host, machine.port, self.user))
        with (folder / "sshd.log").open("wb") as log:
            sshd = subprocess.Popen(
                [find_sshd(), "-D", "-e", "-f", str(config)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        pids["sshd_pgid"] = sshd.pid
        return pids

    def _wait_ssh(self, machine: Machine, folder: Path) -> None:
        deadline = time.monotonic() + self.boot_timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((machine.host, machine.port), timeout=2) as sock:
                    if sock.recv(8).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        tail = (folder / "sshd.log").read_text(errors="replace")[-500:]
        raise MachineError(f"machine {machine.name}: sshd did not come up on port {machine.port}: {tail}")

    def _save(self, folder: Path, machine: Machine, pids: dict[str, int]) -> None:
        record = asdict(machine)
        record["created_at"] = machine.created_at.isoformat()
        record["pids"] = pids
        tmp = folder / "machine.json.tmp"
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(folder / "machine.json")

    def _load(self, folder: Path) -> tuple[Machine, dict[str, int]] | None:
        try:
            record = json.loads((folder / "machine.json").read_text())
        except (OSError, ValueError):
            return None
        pids = record.pop("pids", {})
        record["created_at"] = datetime.fromisoformat(record["created_at"])
        record["tags"] = tuple(record["tags"])
        return Machine(**record), pids

    def list(self, tag: str = BASE_TAG) -> list[Machine]:
        if not self.machines_dir.exists():
            return []
        found = []
        for folder in sorted(self.machines_dir.iterdir()):
            loaded = self._load(folder)
            if loaded is not None and tag in loaded[0].tags:
                found.append(loaded[0])
        return sorted(found, key=lambda m: m.created_at)

    def alive(self, machine_id: str) -> bool:
        """The machine's folder exists, its sshd runs, and its worker launcher runs or ended
        on its own (it writes its exit status: 0 or 1, not a signal's 128+n)."""
        folder = self.machines_dir / machine_id
        loaded = self._load(folder)
        if loaded is None:
            return False
        dropship = Path(loaded[0].root) / "etc/dropship"
        try:
            worker = int((dropship / "worker.pid").read_text().strip())
        except (OSError, ValueError):
            return False
        sshd = loaded[1].get("sshd_pgid", 0)
        try:  # 0: the build ran; 1: no worker took the run (the pickup timeout says why); else it was killed
            ended = (dropship / "worker.exit").read_text().strip() in ("0", "1")
        except OSError:
            ended = False
        launcher = worker > 0 and (_alive(worker) or ended)
        return sshd > 0 and _alive(sshd) and launcher

    def delete(self, machine_id: str) -> None:
        """Stop every process of the machine, then remove its folder."""
        folder = self.machines_dir / machine_id
        loaded = self._load(folder)
        pgids = list((loaded[1] if loaded else {}).values())
        _signal_machine(machine_id, pgids, signal.SIGTERM)
        # A droplet is switched off, not shut down: a short grace, then SIGKILL.
        if not _wait_gone(machine_id, 3.0):
            _signal_machine(machine_id, pgids, signal.SIGKILL)
            if not _wait_gone(machine_id, 10.0):
                raise MachineError(f"machine {machine_id}: processes survived SIGKILL")
        if loaded is not None:  # a build's dockerd killed mid-build leaves shims and mounts (dropship.dockerd)
            daemon = Path(loaded[0].work_dir) / DOCKERD_FOLDER
            if daemon.exists():
                sweep(daemon)
        shutil.rmtree(folder, ignore_errors=True)

    def release_run(self, run_id: str) -> None:
        """Local machines register nothing beyond themselves."""

    def run_leftovers(self) -> builtins.list[str]:
        return []
