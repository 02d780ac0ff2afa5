"""What several commands share, declared once: argparse parent parsers for the
common options, and the one check that a Prefect server is configured."""

from __future__ import annotations

import argparse
import os
import signal
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dropship.errors import ConfigError

PROVIDERS = ["local", "digitalocean"]
"""Machine providers (`dropship.machines.factory.make_provider`), as the options offer them."""


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def manifest() -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument(
        "--manifest", type=Path, default=Path("dropship.toml"), help="path of dropship.toml (default: ./dropship.toml)"
    )
    return parent


def state_dir() -> argparse.ArgumentParser:
    """The orchestrator's state folder (runs, artifacts, logs) of the flows a command runs or deploys."""
    parent = _parent()
    parent.add_argument("--workdir", type=Path, help="orchestrator state folder (default: $DROPSHIP_HOME)")
    return parent


def demo_dir() -> argparse.ArgumentParser:
    """The folder of `dropship demo` (and its Prefect database, which `dropship ui` serves)."""
    parent = _parent()
    parent.add_argument(
        "--workdir",
        type=Path,
        default=Path("demo"),
        help="folder of the demo and its Prefect database (default: ./demo)",
    )
    return parent


def provider(
    default: str | None = None, text: str = "override the manifest's machine provider"
) -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument("--provider", choices=PROVIDERS, default=default, help=text)
    return parent


def verbose() -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument("--verbose", action="store_true", help="show Prefect's own log lines and tracebacks too")
    return parent


def server_stack() -> argparse.ArgumentParser:
    """Where the orchestrator's Prefect server listens and keeps its state (`server start` and `server units`)."""
    parent = _parent()
    parent.add_argument(
        "--home",
        type=Path,
        default=Path("/var/lib/dropship/server"),
        help="state and logs (default /var/lib/dropship/server)",
    )
    parent.add_argument("--host", default="127.0.0.1", help="address the API and UI listen on (default 127.0.0.1)")
    parent.add_argument("--port", type=int, default=4200, help="port of the API and UI (default 4200)")
    parent.add_argument("--api-replicas", type=int, default=2, help="API servers behind nginx (default 2)")
    parent.add_argument(
        "--auth-string-file", type=Path, help="file (mode 0600) holding the API's basic auth string user:password"
    )
    return parent


def actions(commands: Any, name: str, dest: str, **texts: str) -> Any:
    """A command with actions of its own (`dropship keys generate`): its parser's subparsers.

    `texts`: the `help` and `description` of the command.
    """
    command = commands.add_parser(name, **texts)
    return command.add_subparsers(dest=dest, required=True, metavar="ACTION")


def serve_until_stopped(lines: list[str], *stops: Callable[[], None]) -> None:
    """Print `lines`, wait for Ctrl-C or SIGTERM, then call `stops` in order (even after an error).

    SIGTERM is handled before the lines are printed, so whoever reads them may send it at once.
    """
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    for line in lines:
        print(line, flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for call in stops:
            call()


def api_url() -> str:
    """PREFECT_API_URL, or "" when it is not set."""
    return os.environ.get("PREFECT_API_URL", "")


def need_api(why: str, *, reachable: bool = False) -> str:
    """PREFECT_API_URL, set (and with `reachable`, answering), or a one-line error saying how to get there."""
    url = api_url()
    if not url:
        raise ConfigError(
            f"set PREFECT_API_URL to the Prefect server: {why} (`dropship ui --workdir DIR` starts one and prints it)"
        )
    if reachable:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=10):
                pass
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"the Prefect server at {url} can't be reached ({exc}): start it "
                "(`dropship ui --workdir DIR`) or fix PREFECT_API_URL"
            ) from exc
    return url
