"""The orchestrator's Prefect: `dropship server start`.

Two shapes, one supervisor:

- embedded (no options): the SQLite server of `dropship.prefect_server`, as the demo
  uses it, on --host/--port, told its own UI API URL;
- replicated (`--database postgresql+asyncpg://…` and `--redis redis://…`):
  configured as Prefect's self-hosted scaling guide says. Migrations run
  once, then N API servers without services start one after the other (they
  race on block type registration when started together), one process runs
  the background services, and Debian's nginx balances the replicas on
  --host/--port.

Every child runs in its own session with its output in HOME/logs; a child
that dies is restarted (with a back-off when it keeps dying) and the restart
logged; SIGTERM or SIGINT stops every child. Also here: the Prefect client
settings dropship gives every process it starts, so a transient API error
(429/502/503/504, a dropped connection) is retried rather than failing a
release.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dropship.errors import ConfigError, DropshipError
from dropship.ports import free_port
from dropship.prefect_server import LocalPrefectServer

# Prefect's client retries 408/429/502/503 and dropped connections with an
# exponential back-off of 2**attempt seconds. Seven retries wait up to
# 2+4+…+128 = 254 s (with jitter): longer than an API replica's restart or a
# PostgreSQL restart, shorter than any build timeout. 504 is what nginx
# answers when a replica hangs; 500 is what a replica answers when its
# database pool times out under load (sqlalchemy's TimeoutError is not among
# the errors Prefect maps to 503), seen at 32 targets on a loaded machine. A
# 500 is never a target's own fault; a real server bug now fails after the
# retries instead of at once.
HEARTBEAT_SECONDS = 30
"""How often a flow run dropship starts says it is alive; the zombie-run automation
(`dropship deployments apply`) crashes a run silent for 3 periods."""

# The heartbeat rides along: Prefect's default (180 s) is longer than the
# automation's window (90 s), so a `dropship release` run from the CLI on a
# server with the automation would be marked Crashed mid-release.
CLIENT_RETRY_ENV: Mapping[str, str] = {
    "PREFECT_CLIENT_MAX_RETRIES": "7",
    "PREFECT_CLIENT_RETRY_EXTRA_CODES": "500,504",
    "PREFECT_CLIENT_RETRY_JITTER_FACTOR": "0.3",
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
}

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

# Each replica's (and the services') SQLAlchemy pool: Prefect's default, 5 + 10
# overflow with a 30 s wait, ran out at 32 targets and answered 500. 10 + 20
# with a 60 s wait needs max_connections >= 30 per process (Debian's default
# 100 covers two replicas and the services).
DATABASE_POOL_ENV: Mapping[str, str] = {
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "10",
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": "20",
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_TIMEOUT": "60",
}


def client_retry_env() -> dict[str, str]:
    """The retry settings, for a process dropship starts (user-set values win)."""
    return {name: os.environ.get(name, value) for name, value in CLIENT_RETRY_ENV.items()}


def apply_client_retry_env() -> None:
    """Set the retry (and heartbeat) settings in this process; call before Prefect is imported."""
    for name, value in CLIENT_RETRY_ENV.items():
        os.environ.setdefault(name, value)


def read_auth_string(path: Path) -> str:
    """The API auth string (`user:password`) from a file only its owner can read.

    Refused when group or others may read or write it, or when it belongs to
    another user than the one running the server: the string is the key to
    every block and secret on the server.
    """
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot read the auth string file {path}: {exc.strerror}") from exc
    if info.st_mode & 0o077:
        raise ConfigError(
            f"{path} is readable or writable by others (mode {stat.filemode(info.st_mode)}): "
            f"run `chmod 600 {path}` (and chown it to the user running the server)"
        )
    if info.st_uid != os.geteuid():
        raise ConfigError(f"{path} belongs to uid {info.st_uid}, not to this user ({os.geteuid()}): chown it")
    value = path.read_text().strip()
    if ":" not in value or "\n" in value:
        raise ConfigError(f"{path} must hold one line `user:password` (Prefect's basic auth string)")
    return value


def health(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """The probe follows no redirect: a proxy's login page is not the API, and the request carries
    the API's credentials, which must not travel to another host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_CSRF_DISABLED = b"CSRF protection is disabled."
"""Prefect's answer to a token request when its CSRF protection is off (prefect/server/api/csrf_token.py)."""

_csrf_answers: dict[tuple[str, str], bool | None] = {}
_csrf_lock = threading.Lock()


def csrf_enforced(api_url: str, auth_string: str | None = None, timeout: float = 5.0) -> bool | None:
    """Whether the Prefect server at `api_url` wants CSRF tokens on writes: True (it gave one), False
    (Prefect's 422 "CSRF protection is disabled."), None (no answer of either kind: an error, a
    redirect, a timeout, something that is not Prefect).

    Every new Prefect client asks for a token before its first write, one
    request per client: with a worker, a build run and their clients per
    target, that is several requests per target. A server without CSRF
    protection (Prefect's default, and `dropship server start`) says so, and
    the processes dropship starts may then skip asking.
    """
    request = urllib.request.Request(f"{api_url.rstrip('/')}/csrf-token?client=dropship-probe")
    if auth_string:
        token = base64.b64encode(auth_string.encode()).decode()
        request.add_unredirected_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(request, timeout=timeout):
            return True
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read(4096)
        except Exception:  # noqa: BLE001 - a cut answer is no answer
            return None
        return False if exc.code == 422 and _CSRF_DISABLED in body else None
    except Exception:  # noqa: BLE001 - an optimisation: any failure (URLError, HTTPException, TLS) is no answer
        return None


def client_env(api_url: str, auth_string: str | None = None) -> dict[str, str]:
    """Prefect client settings for the processes dropship starts against `api_url`: no CSRF token
    round trip where the server said it wants none (`csrf_enforced`). The answer is kept per server and
    credentials for this process, no answer included (Prefect's default, ask for tokens, then stands):
    asking again per target would cost what skipping the tokens saves."""
    key = (api_url.rstrip("/"), hashlib.sha256((auth_string or "").encode()).hexdigest())
    with _csrf_lock:
        if key not in _csrf_answers:  # no answer is kept too: a probe per target would cost what it saves
            _csrf_answers[key] = csrf_enforced(api_url, auth_string)
        enforced = _csrf_answers[key]
    return {"PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "false"} if enforced is False else {}


def find_nginx() -> str:
    found = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if not found:
        raise ConfigError("nginx is not installed: `apt-get install nginx` (it balances the API replicas)")
    return found


def _redis_settings(url: str) -> dict[str, str]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in {"redis", "rediss"} or not parts.hostname:
        raise ConfigError(f"--redis must be a redis://HOST:PORT/DB URL, got {parts.scheme}://…")
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise ConfigError(f"--redis: the database is a number (redis://host:6379/0), got {db!r}")
    # the URL alone: prefect-redis ignores (and warns about) HOST/PORT/DB when it is set
    return {"PREFECT_REDIS_MESSAGING_URL": url}


@dataclass
class StackConfig:
    home: Path
    host: str = "127.0.0.1"
    port: int = 4200
    database: str | None = None
    """postgresql+asyncpg://… ; None: the embedded SQLite server."""
    redis: str | None = None
    api_replicas: int = 2
    auth_string_file: Path | None = None
    python: str = sys.executable
    startup_timeout: float = 180.0
    public_api_url: str | None = None
    """The API URL browsers use when a TLS proxy is in front (default: api_url)."""

    def __post_init__(self) -> None:
        if (self.database is None) != (self.redis is None):
            raise ConfigError(
                "give both --database and --redis for the replicated server, or neither for the embedded one"
            )
        if self.database is not None and not self.database.startswith("postgresql+asyncpg://"):
            raise ConfigError("--database must be a postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB URL")
        if self.api_replicas < 1:
            raise ConfigError("--api-replicas must be at least 1")

    @property
    def replicated(self) -> bool:
        return self.database is not None

    @property
    def public_host(self) -> str:
        return "127.0.0.1" if self.host in {"0.0.0.0", "::", ""} else self.host

    @property
    def api_url(self) -> str:
        return f"http://{self.public_host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.public_host}:{self.port}"


def server_env(config: StackConfig, auth: str | None) -> dict[str, str]:
    """The replicated server's settings, as the scaling guide gives them."""
    assert config.database is not None and config.redis is not None
    env = {
        "PREFECT_HOME": str(config.home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": config.database,
        # migrations run once, by `prefect server database upgrade`, before any replica
        "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_SERVER_DOCKET_URL": config.redis,
        **DATABASE_POOL_ENV,
        **_redis_settings(config.redis),
        # The UI in a browser talks to nginx, not to the replica that served it.
        "PREFECT_UI_API_URL": config.public_api_url or config.api_url,
        "PREFECT_API_URL": config.api_url,
    }
    if auth is not None:
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth
        env["PREFECT_API_AUTH_STRING"] = auth
    return env


def nginx_config(config: StackConfig, upstream_ports: list[int], run_dir: Path, user: str | None) -> str:
    """nginx in front of the replicas: /api and the UI proxied, websockets for
    the event and log streams, a refused connection retried on the next replica."""
    # max_fails=0: never mark a replica down. With marking, a loaded replica's
    # timeouts took both out and nginx answered "no live upstreams" (502); a
    # killed replica refuses connections at once and the next one is tried.
    servers = "".join(f"        server 127.0.0.1:{port} max_fails=0;\n" for port in upstream_ports)
    temp = "".join(
        f"    {name}_temp_path {run_dir / name};\n" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    proxy = (
        "            proxy_pass http://prefect_api;\n"
        "            proxy_http_version 1.1;\n"
        "            proxy_set_header Host $http_host;\n"
        "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
        "            proxy_set_header X-Forwarded-Proto $scheme;\n"
        "            proxy_next_upstream error timeout http_502 http_504;\n"
    )
    websocket = (
        "            proxy_set_header Upgrade $http_upgrade;\n"
        "            proxy_set_header Connection $connection_upgrade;\n"
        "            proxy_read_timeout 3600s;\n"
    )
    return (
        "# generated by `dropship server start`; rewritten at every start\n"
        + (f"user {user};\n" if user else "")
        + "worker_processes 1;\n"
        "daemon off;\n"
        f"pid {run_dir / 'nginx.pid'};\n"
        f"error_log {config.home / 'logs' / 'nginx-error.log'} warn;\n"
        "events { worker_connections 4096; }\n"
        "http {\n"
        f"    access_log {config.home / 'logs' / 'nginx-access.log'};\n" + temp + "    client_max_body_size 64m;\n"
        "    map $http_upgrade $connection_upgrade { default upgrade; '' close; }\n"
        "    upstream prefect_api {\n" + servers + "        keepalive 32;\n"
        # shorter than uvicorn's 5 s, so nginx never reuses a connection the replica is closing
        "        keepalive_timeout 3s;\n"
        "    }\n"
        "    server {\n"
        f"        listen {config.host}:{config.port};\n"
        "        location ~ ^/api/(events/in|logs/out|events/out|task_runs/subscriptions/) {\n"
        + proxy
        + websocket
        + "        }\n"
        "        location / {\n"
        + proxy
        + "            proxy_read_timeout 300s;\n"
        + '            proxy_set_header Connection "";\n'
        "        }\n"
        "    }\n"
        "}\n"
    )


@dataclass
class Child:
    """One supervised process: started in its own session, output to its log."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    ready: Callable[[], bool] | None = None
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def exit_code(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exit_code() is not None:
                break
            if self.ready is None or self.ready():
                return
            time.sleep(0.3)
        tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
        raise DropshipError(f"{self.name} did not come up (log {self.log}):\n{tail}")

    def stop(self, grace: float = 20.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # stragglers of the group (uvicorn workers, services)
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


class Orchestrator:
    """`dropship server start`: start the stack, keep it up, stop it on a signal."""

    def __init__(self, config: StackConfig, echo: Callable[[str], None] = print) -> None:
        self.config = config
        self.echo = echo
        self.children: list[Child] = []
        self.embedded: LocalPrefectServer | None = None
        self._stop = threading.Event()
        self.log_file = config.home / "logs" / "supervisor.log"

    def log(self, line: str) -> None:
        stamped = f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {line}"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("a") as out:
            out.write(stamped + "\n")
        self.echo(stamped)

    # --- starting -------------------------------------------------------
    def _auth(self) -> str | None:
        path = self.config.auth_string_file
        return read_auth_string(path) if path is not None else None

    def _prefect(self, *args: str) -> list[str]:
        return [self.config.python, "-m", "prefect", *args]

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        return {**env, **client_retry_env()}

    def start(self) -> None:
        home = self.config.home
        for folder in (home, home / "logs", home / "run"):
            folder.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)  # the database URL and auth string are in the children's environments
        auth = self._auth()
        if not self.config.replicated:
            self._start_embedded(auth)
            return
        if self.config.python == sys.executable and importlib.util.find_spec("prefect_redis") is None:
            raise ConfigError("the replicated server needs prefect-redis: pip install 'dropship[scale]'")
        env = {**self._base_env(), **server_env(self.config, auth)}
        self.log("applying database migrations (prefect server database upgrade -y)")
        upgrade_log = home / "logs" / "database-upgrade.log"
        with upgrade_log.open("ab") as out:
            done = subprocess.run(
                self._prefect("server", "database", "upgrade", "-y"),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=600,
                check=False,
            )
        if done.returncode != 0:
            tail = upgrade_log.read_text(errors="replace")[-1200:]
            raise DropshipError(f"the database migrations failed (exit {done.returncode}; log {upgrade_log}):\n{tail}")
        ports = self._replica_ports()
        for index, port in enumerate(ports):
            url = f"http://127.0.0.1:{port}/api"
            child = Child(
                name=f"api-{index + 1}",
                argv=self._prefect("server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-services"),
                env=env,
                log=home / "logs" / f"api-{index + 1}.log",
                ready=functools.partial(health, url),
            )
            self.children.append(child)
            # one after the other: replicas started together race on block type registration
            self._check_stop()
            child.start()
            child.wait_ready(self.config.startup_timeout)
            self.log(f"{child.name} (pid {child.pid}) serves http://127.0.0.1:{port}/api")
        self._check_stop()
        services = Child(
            name="services",
            argv=self._prefect("server", "services", "start"),
            env=env,
            log=home / "logs" / "services.log",
        )
        self.children.append(services)
        services.start()
        self.log(f"services (pid {services.pid}) started: scheduler, automations, …")
        nginx = find_nginx()
        conf = home / "nginx.conf"
        user = "root" if os.geteuid() == 0 else None
        conf.write_text(nginx_config(self.config, ports, home / "run", user))
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (home / "run" / name).mkdir(exist_ok=True)
        check = subprocess.run(
            [nginx, "-t", "-q", "-c", str(conf), "-p", str(home)], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise DropshipError(f"the generated nginx config {conf} is refused: {check.stderr.strip()}")
        balancer = Child(
            name="nginx",
            argv=[nginx, "-c", str(conf), "-p", str(home)],
            env=self._base_env(),
            log=home / "logs" / "nginx.log",
            ready=lambda: health(self.config.api_url),
        )
        self.children.append(balancer)
        balancer.start()
        balancer.wait_ready(30)
        self.log(
            f"nginx (pid {balancer.pid}) balances {len(ports)} API replicas on {self.config.host}:{self.config.port}"
        )

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise DropshipError("stopped by a signal while starting")

    def _replica_ports(self) -> list[int]:
        """Loopback ports of the replicas, kept across restarts of the command."""
        record = self.config.home / "run" / "replica-ports"
        wanted = self.config.api_replicas
        ports: list[int] = []
        if record.exists():
            ports = [int(p) for p in record.read_text().split()][:wanted]
        while len(ports) < wanted:
            port = free_port()
            if port not in ports and port != self.config.port:
                ports.append(port)
        record.write_text(" ".join(map(str, ports)) + "\n")
        return ports

    def _start_embedded(self, auth: str | None) -> None:
        extra = {"PREFECT_UI_API_URL": self.config.public_api_url or self.config.api_url}
        if auth is not None:
            extra["PREFECT_SERVER_API_AUTH_STRING"] = auth
        server = LocalPrefectServer(
            self.config.home / "prefect",
            host=self.config.host,
            port=self.config.port,
            startup_timeout=self.config.startup_timeout,
            extra_env=extra,
        )
        server.start()
        self.embedded = server
        self.log(f"embedded Prefect server (SQLite, pid {server.pid}) on {self.config.host}:{self.config.port}")

    # --- running --------------------------------------------------------
    def check(self) -> None:
        """Restart whatever died; called every second by `run`."""
        now = time.monotonic()
        if self.embedded is not None:
            code = self.embedded.exit_code()
            if code is not None:
                self.log(f"embedded server (pid {self.embedded.pid}) exited with code {code}; restarting")
                self.embedded.stop()
                self.embedded.start()
                self.log(f"embedded server restarted (pid {self.embedded.pid})")
            return
        for child in self.children:
            code = child.exit_code()
            if child.process is not None and code is None:
                if now - child.started_at > 60:
                    child.restarts = 0  # it held a minute: the next death restarts at once
                continue
            if child.process is not None:
                pid = child.pid
                child.stop(grace=1)
                child.next_start = now + min(2.0**child.restarts - 1, 30.0)
                self.log(
                    f"{child.name} (pid {pid}) exited with code {code}; restarting"
                    + (f" in {child.next_start - now:.0f} s" if child.next_start > now else "")
                )
            if now >= child.next_start:
                child.restarts += 1
                child.start()
                self.log(f"{child.name} restarted (pid {child.pid}, restart {child.restarts})")

    def urls(self) -> str:
        return f"Prefect API: {self.config.api_url}\nPrefect UI:  {self.config.ui_url}"

    def run(self) -> None:
        """Start, print the URLs, supervise until SIGTERM/SIGINT, stop everything."""
        previous = {sig: signal.signal(sig, lambda *_: self._stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            self.echo(self.urls())
            self.echo(f"logs: {self.config.home / 'logs'}; SIGTERM or Ctrl-C stops the server")
            while not self._stop.wait(1.0):
                self.check()
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()
        # nginx first (no new requests), then services, then the replicas
        for child in reversed(self.children):
            child.stop()
        self.log("stopped")


def systemd_units(
    *,
    dropship: str,
    home: Path,
    env_file: Path,
    host: str,
    port: int,
    api_replicas: int,
    auth_string_file: Path | None,
    user: str = "root",
) -> dict[str, str]:
    """Unit files for the orchestrator machine: the Prefect stack and the
    worker that runs releases. PostgreSQL and Redis come from Debian's own
    units; the database and Redis URLs (with their passwords) are read from
    `env_file` (DROPSHIP_DATABASE_URL, DROPSHIP_REDIS_URL; mode 0600), not
    from the command line, where `ps` would show them."""
    auth = f" --auth-string-file {auth_string_file}" if auth_string_file else ""
    server = (
        "[Unit]\n"
        "Description=dropship orchestrator: Prefect API replicas, services and nginx\n"
        "Documentation=file:///usr/share/doc/dropship/orchestrator.md\n"
        "Wants=network-online.target postgresql.service redis-server.service\n"
        "After=network-online.target postgresql.service redis-server.service\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"User={user}\n"
        f"EnvironmentFile={env_file}\n"
        f"ExecStart={dropship} server start --home {home} --host {host} --port {port} "
        f"--api-replicas {api_replicas}{auth}\n"
        # SIGTERM to the supervisor, which stops its children; SIGKILL for what is left after the timeout
        "KillMode=mixed\n"
        "TimeoutStopSec=90\n"
        "Restart=always\n"
        "RestartSec=5\n"
        "LimitNOFILE=65536\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
    retry = "".join(f"Environment={name}={value}\n" for name, value in CLIENT_RETRY_ENV.items())
    worker = (
        "[Unit]\n"
        "Description=dropship orchestrator worker: runs release, promote, rollback and reap flow runs\n"
        "Wants=dropship-server.service\n"
        "After=dropship-server.service\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"User={user}\n"
        f"Environment=PREFECT_API_URL=http://{'127.0.0.1' if host in {'0.0.0.0', '::'} else host}:{port}/api\n"
        f"Environment=DROPSHIP_HOME={home / 'dropship'}\n"
        "Environment=PREFECT_SERVER_ANALYTICS_ENABLED=false\n"
        + retry
        + f"EnvironmentFile=-{env_file.with_name('worker.env')}\n"
        f"ExecStart={Path(dropship).with_name('prefect')} worker start --pool dropship-orchestrator --type process\n"
        "KillMode=mixed\n"
        "TimeoutStopSec=120\n"
        "Restart=always\n"
        "RestartSec=5\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
    return {"dropship-server.service": server, "dropship-worker.service": worker}
