"""The user_data script every build machine runs at first boot.

Two scripts. A droplet's (`render_bootstrap`, cloud-init user_data on a stock
image) only installs the host key the orchestrator chose, removing the
image's others, turns password login off and makes sshd reload: nothing
secret and no worker. The orchestrator then reaches the machine over SSH with
that key pinned and installs the worker launcher itself
(`dropship.machines.bootstrap`). A local machine (`render`) runs its script
with `DROPSHIP_MACHINE_ROOT` pointing at its folder; it writes the host key,
the key the orchestrator logs in with, and starts the worker launcher from the
orchestrator's own interpreter. Either launcher waits for the build run the
orchestrator hands over, then runs a worker for this machine's queue that
polls once (`dropship.machines.handover`).
Every value is quoted with `shlex.quote` or sits in a quoted here-document:
nothing in it is interpreted by the shell.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dropship.errors import MachineError
from dropship.machines.handover import HANDOVER, WORKER_LOG
from dropship.orchestrator import CLIENT_RETRY_ENV

DELIMITER = "DROPSHIP_END_OF_FILE"


@dataclass(frozen=True)
class WorkerSpec:
    api_url: str
    pool: str
    queue: str
    launcher: Sequence[str]
    """The command that starts the machine's worker launcher, given `--pool`, `--queue` and
    `--handover PIPE`, e.g. [python, "-m", "tasks.machine_worker"] (see `dropship.machines.handover`)."""
    env: Mapping[str, str]
    """Extra, non-secret environment for the worker and its flow runs."""


def heredoc(path: str, content: str) -> str:
    """Shell that writes `content` to `$ROOT/path`, uninterpreted (a quoted here-document)."""
    if DELIMITER in content:
        raise MachineError(f"the user_data file {path} contains the line {DELIMITER}: remove it from its content")
    body = content if content.endswith("\n") else content + "\n"
    return f"cat > \"$ROOT\"{shlex.quote(path)} <<'{DELIMITER}'\n{body}{DELIMITER}\n"


def check_public_keys(*keys: str) -> None:
    """Each of `keys` is one line, as authorized_keys and the .pub file need."""
    if any("\n" in key.strip() for key in keys):
        raise MachineError("public keys in a machine's user_data must be single lines: give one OpenSSH key line each")


def worker_env(api_url: str) -> dict[str, str]:
    """The Prefect settings of a build machine's worker, local machine or droplet alike."""
    return {
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # A machine runs the orchestrator's own Prefect version (pinned), and the orchestrator has
        # checked the server's: the worker and each build run need not ask `/admin/version` again.
        "PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED": "false",
        # the worker and its build runs ride out a busy or restarting API server, and beat
        # within the zombie automation's window
        **CLIENT_RETRY_ENV,
    }


def render(
    *,
    host_private_key: str,
    host_public_key: str,
    authorized_key: str,
    work_dir: str,
    worker: WorkerSpec,
) -> str:
    """The user_data script for one machine."""
    check_public_keys(host_public_key, authorized_key)
    env = {**worker_env(worker.api_url), **worker.env}
    # The file is sourced where ROOT is set: PREFECT_HOME follows the machine root.
    env_lines = 'export PREFECT_HOME="$ROOT/var/lib/dropship/prefect"\n' + "".join(
        f"export {name}={shlex.quote(value)}\n" for name, value in sorted(env.items())
    )
    launcher = shlex.join([*worker.launcher, "--pool", worker.pool, "--queue", worker.queue, "--handover"])
    return (
        "#!/bin/sh\n"
        "# dropship build machine bootstrap (cloud-init user_data), generated.\n"
        "set -eu\n"
        'ROOT="${DROPSHIP_MACHINE_ROOT:-}"\n'
        "umask 077\n"
        'mkdir -p "$ROOT/etc/ssh" "$ROOT/etc/dropship" "$ROOT/var/log/dropship" "$ROOT/var/lib/dropship/prefect"\n'
        f'mkdir -p "$ROOT"{shlex.quote(work_dir)}\n'
        + heredoc("/etc/ssh/ssh_host_ed25519_key", host_private_key)
        + heredoc("/etc/ssh/ssh_host_ed25519_key.pub", host_public_key)
        + heredoc("/etc/dropship/authorized_keys", authorized_key)
        + 'if [ -z "$ROOT" ]; then\n'
        "  # A real machine: trust the orchestrator's key for root, drop other host keys.\n"
        "  mkdir -p /root/.ssh && cat /etc/dropship/authorized_keys >> /root/.ssh/authorized_keys\n"
        "  rm -f /etc/ssh/ssh_host_rsa_key* /etc/ssh/ssh_host_ecdsa_key*\n"
        "  systemctl restart ssh 2>/dev/null || service ssh restart 2>/dev/null || true\n"
        "fi\n" + heredoc("/etc/dropship/worker.env", env_lines) + f'mkfifo "$ROOT"{HANDOVER}\n'
        "(\n"
        "  umask 022  # 077 was for the keys; builds need ordinary permissions\n"
        '  . "$ROOT/etc/dropship/worker.env"\n'
        '  cd "$ROOT/var/lib/dropship"\n'
        "  # waits, polling nothing, until the orchestrator hands over the build run (dropship.machines.handover)\n"
        "  status=0\n"
        f'  {launcher} "$ROOT"{HANDOVER} || status=$?\n'
        '  echo "$status" > "$ROOT/etc/dropship/worker.exit"\n'
        f') >> "$ROOT"{WORKER_LOG} 2>&1 < /dev/null &\n'
        'echo $! > "$ROOT/etc/dropship/worker.pid"\n'
    )


def render_bootstrap(*, host_private_key: str, host_public_key: str) -> str:
    """The user_data of a droplet: the pinned host key, no passwords, sshd reloaded.

    sshd reloads through systemd where PID 1 is systemd, else by HUP to the
    pid in /run/sshd.pid (a HUP makes sshd re-exec and read the keys again).
    The orchestrator's login key comes from the droplet's `ssh_keys`.
    """
    check_public_keys(host_public_key)
    return (
        "#!/bin/sh\n"
        "# dropship build machine: pin the orchestrator's host key (cloud-init user_data), generated.\n"
        "set -eu\n"
        'if [ -n "${DROPSHIP_MACHINE_ROOT:-}" ]; then\n'
        '  echo "a droplet script: it rewrites /etc/ssh, not for a local machine" >&2; exit 1\n'
        "fi\n"
        "umask 077\n"
        "mkdir -p /etc/ssh/sshd_config.d\n"
        "rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub\n"
        + heredoc("/etc/ssh/ssh_host_ed25519_key", host_private_key).replace('"$ROOT"', "")
        + heredoc("/etc/ssh/ssh_host_ed25519_key.pub", host_public_key).replace('"$ROOT"', "")
        + heredoc(
            "/etc/ssh/sshd_config.d/00-dropship.conf",
            "HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n",
        ).replace('"$ROOT"', "")
        + "chmod 0644 /etc/ssh/ssh_host_ed25519_key.pub /etc/ssh/sshd_config.d/00-dropship.conf\n"
        'if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then\n'
        "  systemctl reload ssh 2>/dev/null || systemctl restart ssh\n"
        "elif [ -s /run/sshd.pid ]; then\n"
        '  kill -HUP "$(cat /run/sshd.pid)"\n'
        "fi\n"
    )
