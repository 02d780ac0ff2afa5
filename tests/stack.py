"""The replicated orchestrator's real components, from Debian's packages, in
temporary folders: PostgreSQL 15 (initdb as the `postgres` user), redis-server,
and `dropship server start` itself as a subprocess."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dropship.ports import free_port
from tests.support import parents_and_sessions

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run as the postgres user (initdb and postgres refuse root)."""
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class Postgres:
    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/prefect"

    def _ctl(self, *args: str) -> None:
        done = _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args], timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {done.stdout[-800:]} {done.stderr[-800:]}")

    def start(self) -> None:
        self._ctl(
            "-w",
            "-l",
            str(self.folder / "postgres.log"),
            "-o",
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=300",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-w", "-m", mode, "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def restart(self) -> None:
        self._ctl(
            "-w",
            "-m",
            "fast",
            "-l",
            str(self.folder / "postgres.log"),
            "-o",
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=300",
            "restart",
        )

    def psql(self, sql: str) -> str:
        done = _as_postgres(
            [
                str(PG_BIN.parent / "bin" / "psql") if (PG_BIN / "psql").exists() else "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-At",
                "-c",
                sql,
            ],
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return str(done.stdout)


def start_postgres() -> Postgres:
    """A fresh cluster in its own /tmp folder owned by `postgres` (not under
    pytest's basetemp: every pytest session resets pytest-of-USER to 0700,
    which would lock the postgres user out of its data mid-test)."""
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(f"PostgreSQL 15 is not installed ({PG_BIN}): apt-get install postgresql")
    folder = Path(tempfile.mkdtemp(prefix="dropship-pg-"))
    os.chmod(folder, 0o755)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    pg = Postgres(folder, free_port())
    done = _as_postgres([str(PG_BIN / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(pg.data)], timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed: {done.stderr[-800:]}")
    pg.start()
    pg.psql("CREATE DATABASE prefect")
    return pg


@dataclass
class Redis:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def start_redis(folder: Path) -> Redis:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with (folder / "redis.log").open("wb") as log:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    wait_port(port)
    return Redis(port, process)


@dataclass
class Stack:
    """`dropship server start` running in a subprocess."""

    home: Path
    port: int
    process: subprocess.Popen[bytes]
    output: Path

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def log(self) -> str:
        return (self.home / "logs" / "supervisor.log").read_text(errors="replace")

    def pids(self) -> dict[str, int]:
        """The newest pid of each child, from the supervisor's log."""
        found: dict[str, int] = {}
        for name, pid in re.findall(r"\b(api-\d+|services|nginx)(?: restarted)? \(pid (\d+)", self.log()):
            found[name] = int(pid)
        return found

    def wait_restart(self, name: str, old_pid: int, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.pids().get(name)
            if pid and pid != old_pid and f"{name} restarted" in self.log():
                return pid
            time.sleep(0.5)
        raise AssertionError(f"{name} was not restarted:\n{self.log()[-2000:]}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=3) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)


def start_stack(home: Path, *args: str, timeout: float = 300) -> Stack:
    """`dropship server start --home HOME --port P ARGS…`, waited for until it prints the UI URL."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    output = home.parent / f"{home.name}-stdout.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "server", "start", "--home", str(home), "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "Prefect UI:" in output.read_text(errors="replace"):
            return Stack(home, port, process, output)
        if process.poll() is not None:
            break
        time.sleep(0.5)
    text = output.read_text(errors="replace")[-3000:]
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    raise RuntimeError(f"dropship server start did not come up:\n{text}")


def descendants(pid: int) -> list[int]:
    """Every process whose ancestry (by session or parent) leads to `pid`."""
    parents = {child: parent for child, (parent, _) in parents_and_sessions().items()}
    found = []
    for child in parents:
        walk = child
        while walk > 1 and walk in parents:
            walk = parents[walk]
            if walk == pid:
                found.append(child)
                break
    return found
