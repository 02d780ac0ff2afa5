"""A build machine's worker, for the one build run it is handed: `python -m tasks.machine_worker`.

A machine used to start `prefect worker start` at boot and poll its queue every
5 s until it was deleted. Each poll is a write on the server, and at 32 targets
those polls were the largest cost per target left on the orchestrator (#18).
Now this launcher starts at boot, opens the machine's hand-over pipe, imports
Prefect's worker, and then waits without polling, blocked reading the pipe, until the
orchestrator has uploaded the source, created the build's flow run and written
that run's id into the pipe (`dropship.machines.handover`). Then it runs the
worker once, in this process: one poll, the build, wait for it, exit. Prefect is
imported before the wait, so the hand-over costs no interpreter start.

A single poll can miss the run: the API restarting, a replica killed. So while
the run is still Scheduled the worker runs again, every RETRY_SECONDS for up to
PICKUP_SECONDS (less than the orchestrator's own pickup timeout, which then
reads this log to say why). The state is read once per try, not polled.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from uuid import UUID

RETRY_SECONDS = 5.0
PICKUP_SECONDS = 150.0


def run_worker_once(pool: str, queue: str) -> None:
    """Prefect's process worker for this machine's queue alone, one run at a time, one poll
    (`prefect worker start --run-once`, without a second interpreter)."""
    from prefect.workers.process import ProcessWorker

    worker = ProcessWorker(work_pool_name=pool, work_queues=[queue], name=queue, limit=1)
    asyncio.run(worker.start(run_once=True, printer=lambda *line: print(*line, flush=True)))


def waiting_for_a_worker(flow_run_id: UUID) -> bool:
    """True while the run is still Scheduled (or unreadable: the API may be restarting)."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)
    except ObjectNotFound:
        return False  # deleted: nothing to run
    except (httpx.HTTPError, PrefectHTTPStatusError, OSError) as exc:
        print(f"dropship: could not read build run {flow_run_id} ({type(exc).__name__}); trying again", flush=True)
        return True
    return run.state is not None and run.state.is_scheduled()


def serve(
    flow_run_id: UUID, pool: str, queue: str, retry: float = RETRY_SECONDS, patience: float = PICKUP_SECONDS
) -> int:
    """Run the worker until it has taken the run; 0 once it has, 1 if it never did in `patience` s."""
    deadline = time.monotonic() + patience
    while True:
        print(f"dropship: running the worker for build run {flow_run_id}", flush=True)
        try:
            run_worker_once(pool, queue)
        except Exception as exc:  # noqa: BLE001 - the log says what, the state decides whether to try again
            print(f"dropship: the worker stopped: {type(exc).__name__}: {exc}", flush=True)
        if not waiting_for_a_worker(flow_run_id):
            return 0
        if time.monotonic() >= deadline:
            print(f"dropship: no worker took build run {flow_run_id} in {patience:.0f} s; giving up", flush=True)
            return 1
        time.sleep(retry)


def _children() -> list[int]:
    """This process's live children (the worker's build process), from /proc."""
    me = os.getpid()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[1]) == me:  # state, then the parent's pid
            found.append(int(entry.name))
    return found


def _outlive_the_build(signum: int, frame: FrameType | None) -> None:
    """SIGTERM: the machine is being deleted, right after its build completed, and the build's
    process got the same signal while it was still ending. Its last log lines go into a pipe this
    process reads: dying first broke it, and the completed build logged an ERROR in the UI. So
    stay until it has ended (the deletion's SIGKILL, 3 s later, ends any that linger)."""
    if not _children():
        raise SystemExit(128 + signum)


def handed_over(pipe: int) -> UUID:
    """The build run's id, once the orchestrator writes it into the pipe (blocks until then)."""
    with os.fdopen(pipe, encoding="utf-8") as handover:
        return UUID(handover.readline().strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.machine_worker", description=__doc__.splitlines()[0])
    parser.add_argument("--pool", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--handover", required=True, help="the named pipe the build run's id arrives on")
    parser.add_argument("--retry-seconds", type=float, default=RETRY_SECONDS, help=argparse.SUPPRESS)
    parser.add_argument("--pickup-seconds", type=float, default=PICKUP_SECONDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # Open before anything slow: with a reader (this process, read and write, so it never sees
    # EOF) the orchestrator's write does not wait for Prefect's import, only for this process.
    pipe = os.open(args.handover, os.O_RDWR)
    import prefect.workers.process  # noqa: F401 - imported while waiting, so the hand-over starts no import

    signal.signal(signal.SIGTERM, _outlive_the_build)

    status = serve(handed_over(pipe), args.pool, args.queue, args.retry_seconds, args.pickup_seconds)
    # The worker returns once the run's state is final; the build's process may still be writing
    # its last log lines into the pipe this process holds. Exiting then broke that pipe and the
    # build logged an ERROR after "Completed" (a long-lived worker kept the pipe open). Every child
    # of this process is the worker's.
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return status


if __name__ == "__main__":
    sys.exit(main())
