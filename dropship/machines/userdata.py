"""The user_data script every build machine runs at first boot.

On DigitalOcean it is cloud-init user_data; a local machine runs the very
same script with `DROPSHIP_MACHINE_ROOT` pointing at its folder. It writes
the host key the orchestrator chose (so the orchestrator can pin it), the key
the orchestrator logs in with, and starts a Prefect worker that serves only
this machine's work queue. Every value is quoted with `shlex.quote` or sits
in a quoted here-document: nothing in it is interpreted by the shell.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dropship.orchestrator import CLIENT_RETRY_ENV

DELIMITER = "DROPSHIP_END_OF_FILE"


@dataclass(frozen=True)
class WorkerSpec:
    api_url: str
    pool: str
    queue: str
    prefect: Sequence[str]
    """The command that runs the Prefect CLI on the machine, e.g. ["prefect"]."""
    env: Mapping[str, str]
    """Extra, non-secret environment for the worker and its flow runs."""


def _heredoc(path: str, content: str) -> str:
    if DELIMITER in content:
        raise ValueError("content contains the here-document delimiter")
    body = content if content.endswith("\n") else content + "\n"
    return f'cat > "$ROOT"{shlex.quote(path)} <<\'{DELIMITER}\'\n{body}{DELIMITER}\n'


def render(
    *,
    host_private_key: str,
    host_public_key: str,
    authorized_key: str,
    work_dir: str,
    worker: WorkerSpec,
) -> str:
    """The user_data script for one machine."""
    for value in (host_public_key, authorized_key):
        if "\n" in value.strip():
            raise ValueError("public keys must be single lines")
    env = {
        "PREFECT_API_URL": worker.api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        # the worker and its build runs ride out a busy or restarting API server
        **CLIENT_RETRY_ENV,
        **worker.env,
    }
    # The file is sourced where ROOT is set: PREFECT_HOME follows the machine root.
    env_lines = 'export PREFECT_HOME="$ROOT/var/lib/dropship/prefect"\n' + "".join(
        f"export {name}={shlex.quote(value)}\n" for name, value in sorted(env.items())
    )
    worker_argv = shlex.join(
        [*worker.prefect, "worker", "start", "--pool", worker.pool, "--work-queue", worker.queue,
         "--name", worker.queue, "--type", "process", "--limit", "1"]
    )
    return (
        "#!/bin/sh\n"
        "# dropship build machine bootstrap (cloud-init user_data), generated.\n"
        "set -eu\n"
        'ROOT="${DROPSHIP_MACHINE_ROOT:-}"\n'
        "umask 077\n"
        'mkdir -p "$ROOT/etc/ssh" "$ROOT/etc/dropship" "$ROOT/var/log/dropship" "$ROOT/var/lib/dropship/prefect"\n'
        f'mkdir -p "$ROOT"{shlex.quote(work_dir)}\n'
        + _heredoc("/etc/ssh/ssh_host_ed25519_key", host_private_key)
        + _heredoc("/etc/ssh/ssh_host_ed25519_key.pub", host_public_key)
        + _heredoc("/etc/dropship/authorized_keys", authorized_key)
        + 'if [ -z "$ROOT" ]; then\n'
        "  # A real machine: trust the orchestrator's key for root, drop other host keys.\n"
        "  mkdir -p /root/.ssh && cat /etc/dropship/authorized_keys >> /root/.ssh/authorized_keys\n"
        "  rm -f /etc/ssh/ssh_host_rsa_key* /etc/ssh/ssh_host_ecdsa_key*\n"
        "  systemctl restart ssh 2>/dev/null || service ssh restart 2>/dev/null || true\n"
        "fi\n"
        + _heredoc("/etc/dropship/worker.env", env_lines)
        + "(\n"
        "  umask 022  # 077 was for the keys; builds need ordinary permissions\n"
        '  . "$ROOT/etc/dropship/worker.env"\n'
        '  cd "$ROOT/var/lib/dropship"\n'
        f"  exec {worker_argv}\n"
        ') > "$ROOT/var/log/dropship/worker.log" 2>&1 < /dev/null &\n'
        'echo $! > "$ROOT/etc/dropship/worker.pid"\n'
    )
