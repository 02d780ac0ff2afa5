"""A local Prefect server (SQLite) for the embedded default.

Started as a subprocess in its own session, listening on 127.0.0.1 only,
with its database and home under the demo's folder, and stopped with its
whole process group so nothing of it outlives the command. If the command
is killed (SIGKILL runs no cleanup), the server gets SIGTERM from the kernel
(parent-death signal), and its process group is recorded in
`<home>/server.pid`: the next start in the same home finds a survivor and
stops it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from dropship import local_server
from dropship.errors import DropshipError
from dropship.ports import free_port

PIDFILE = "server.pid"


def _is_our_server(pid: int, home: Path) -> bool:
    """`pid` runs `prefect server start` with PREFECT_HOME=`home` (not some reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"server\0start" in cmdline and f"PREFECT_HOME={home}".encode() in environ


def stop_stale_server(home: Path) -> int | None:
    """Stop the server a killed command left running in `home`; return its pid, if there was one."""
    try:
        pid = int((home / PIDFILE).read_text().strip())
    except (OSError, ValueError):
        return None
    (home / PIDFILE).unlink(missing_ok=True)
    if pid <= 0 or not _is_our_server(pid, home):
        return None
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return pid
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _is_our_server(pid, home):
            time.sleep(0.2)
        if not _is_our_server(pid, home):
            return pid
    return pid


class LocalPrefectServer:
    def __init__(
        self,
        home: Path,
        *,
        startup_timeout: float = 120.0,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.home = home
        self.startup_timeout = startup_timeout
        self.host = host
        self.port = port
        """0: a free port, chosen at each start."""
        self._fixed_port = port
        self.extra_env = dict(extra_env or {})
        self.stale_pid: int | None = None
        """The pid of a server a killed demo left in `home`, stopped by `start()`."""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def exit_code(self) -> int | None:
        """None while the server runs (or was never started)."""
        return self._process.poll() if self._process is not None else None

    def env(self) -> dict[str, str]:
        return {
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": self.host,
            # The UI otherwise asks for port 4200 whatever port the server has.
            "PREFECT_UI_API_URL": self.api_url,
            **self.extra_env,
        }

    def export_env(self) -> None:
        """Point this process (and the machines it starts) at the server.

        Call before anything imports Prefect: its settings are read from the
        environment when it loads.
        """
        os.environ.update(self.env())
        os.environ["PREFECT_API_URL"] = self.api_url

    def __enter__(self) -> LocalPrefectServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, port: int | None = None) -> None:
        """Start the server (on `port`, e.g. the one it had before a restart; a free one by default).

        The server is stopped when the calling thread ends (see `process.die_with_parent`).
        """
        self.home.mkdir(parents=True, exist_ok=True)
        self.stale_pid = stop_stale_server(self.home)
        self.port = port or self._fixed_port or free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(self.env())
        self._process = process = local_server.spawn(
            [sys.executable, "-m", "prefect", "server", "start", "--host", self.host, "--port", str(self.port)],
            self.home / "server.log",
            env=env,
            new_session=True,
        )
        (self.home / PIDFILE).write_text(f"{process.pid}\n")
        if local_server.wait_until_up(process, self._healthy, timeout=self.startup_timeout, interval=0.5):
            return
        tail = (self.home / "server.log").read_text(errors="replace")[-1500:]
        self.stop()
        raise DropshipError(f"the local Prefect server did not start:\n{tail}")

    def _healthy(self) -> bool:
        return local_server.http_status(f"{self.api_url}/health") == 200

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        (self.home / PIDFILE).unlink(missing_ok=True)
        local_server.stop(process, grace=20, group=True)
