"""Start, wait for and stop the servers dropship runs on this machine.

The demo's package index (`package_index.py`), the local image registry
(`oci_registry.py`) and the local Prefect server (`prefect_server.py`) are
each a subprocess with its output in a log file, started with
`die_with_parent` so a killed command leaves none behind, polled over HTTP
until it answers, and stopped with SIGTERM, then SIGKILL after a grace
period. This module is the one place that does those three steps; each
server says only its command line, its health check and its error message.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from dropship.process import die_with_parent


def spawn(
    argv: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None, new_session: bool = False
) -> subprocess.Popen[bytes]:
    """Start `argv` with stdout and stderr appended to `log` (a restart keeps the crash before it).

    `new_session`: the server gets its own process group, so `stop(..., group=True)`
    reaches the workers it forks.
    """
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            env=None if env is None else dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=new_session,
            preexec_fn=die_with_parent,  # a killed command leaves no server on its port
        )


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status `url` answers with (4xx/5xx included), or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback servers only
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:  # URLError is one
        return None


def wait_until_up(
    process: subprocess.Popen[bytes], is_up: Callable[[], bool], *, timeout: float, interval: float
) -> bool:
    """Poll `is_up` until it holds (True), the process exits or `timeout` seconds pass (False).

    The caller tells the last two apart with `process.poll()`.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            return False
        if is_up():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def stop(process: subprocess.Popen[bytes], *, grace: float, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds.

    With `group`, the signals go to the process group `spawn(new_session=True)`
    made, and a last SIGKILL reaches stragglers (forked workers) after the leader exits.
    """
    if not group and process.poll() is not None:
        return

    def send(sig: signal.Signals) -> bool:
        try:
            if group:
                os.killpg(process.pid, sig)
            else:
                os.kill(process.pid, sig)
        except ProcessLookupError:
            return False
        return True

    if not send(signal.SIGTERM):
        return
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()
    if group:
        send(signal.SIGKILL)
