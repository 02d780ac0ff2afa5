"""Handing a build run to a machine's worker: the one message the orchestrator sends it.

A machine's worker launcher (`tasks.machine_worker`) opens a named pipe,
HANDOVER under the machine's root, imports Prefect's worker and blocks reading
the pipe: no polling. Once the orchestrator has uploaded the source and
created the build's flow run, it writes that run's id into the pipe over SSH.
The launcher then runs the worker once: one poll, the build, exit. Before, a worker started at boot and polled the
server every 5 s until the machine was deleted (#18).
"""

from __future__ import annotations

from dropship.errors import MachineError
from dropship.machines import Machine
from dropship.ssh import SshSession

HANDOVER = "/etc/dropship/build-run"
"""The named pipe the launcher reads the build run's id from."""
WORKER_LOG = "/var/log/dropship/worker.log"
"""The launcher's and its worker's output, on every kind of machine."""
HANDOVER_SECONDS = 30

# `$0` is the pipe, `$1` the id: values travel as arguments, never inside the script.
_WRITE = (
    'if [ ! -p "$0" ]; then echo "no hand-over pipe at $0: the machine has no worker launcher" >&2; exit 3; fi\n'
    'printf "%s\\n" "$1" > "$0"\n'
)


def hand_over(ssh: SshSession, machine: Machine, flow_run_id: str, *, seconds: int = HANDOVER_SECONDS) -> None:
    """Give the machine's waiting launcher its build run; fail if nothing reads the pipe in `seconds`."""
    pipe = f"{machine.root}{HANDOVER}"
    try:
        # a pipe nobody reads blocks the writer: `timeout` ends it on the machine as well
        ssh.run(["timeout", str(seconds), "sh", "-c", _WRITE, pipe, flow_run_id], timeout=seconds + 15)
    except MachineError as exc:
        try:
            tail = one_line(worker_log(ssh, machine, 5))
        except MachineError:
            tail = "(unreadable)"
        raise MachineError(
            f"could not hand build run {flow_run_id} to the worker launcher on {machine.name} ({machine.id}) "
            f"(exit 124 means nothing was waiting on {HANDOVER}): {exc}; its worker log ends: {tail}"
        ) from exc


def one_line(log: str, limit: int = 400) -> str:
    """A log tail for a one-line error: its lines joined by " | ", the end kept, cut at a word."""
    flat = " | ".join(line.strip() for line in log.strip().splitlines() if line.strip())
    if len(flat) > limit:
        flat = "…" + flat[-limit:].split(" ", 1)[-1]
    return flat or "(empty)"


def worker_log(ssh: SshSession, machine: Machine, lines: int = 20) -> str:
    """The last lines of the machine's worker log, "" when there is none yet."""
    return ssh.run(["sh", "-c", 'tail -n "$1" "$0" 2>/dev/null || true', f"{machine.root}{WORKER_LOG}", str(lines)])
