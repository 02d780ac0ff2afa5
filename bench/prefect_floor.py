"""What Prefect alone costs per target: the floor under dropship's orchestration CPU (issue 18).

    python -m bench.scale --cases 16x1,32x1 --prefect-floor

dropship gives each target one deployment run, executed by a Prefect worker on
the target's machine, started by a task of the release flow that then waits
for it. This does only that, with nothing of dropship: a parent flow whose N
tasks each create a run of a flow that does nothing, on a queue of its own,
start a plain `prefect worker start --run-once` for that queue (a droplet's:
not counted) and read the run's end state when the worker exits; at most as
many at once as dropship's default machines limit. The parent's CPU and the
server's, per run, is what a design with a Prefect worker and a deployment
run per target pays on this server before dropship does anything;
`bench.scale --prefect-floor` prints dropship's CPU per target against it,
measured in the same run on the same server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectAlreadyExists
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.types.entrypoint import EntrypointType
from prefect.workers.process import ProcessWorker

POOL = "bench-floor"
DEPLOYMENT = "floor-noop/floor"
REPO = Path(__file__).resolve().parent.parent
WORKER_SECONDS = 600


@flow(name="floor-noop")
def noop(index: int) -> int:
    """The deployment's flow: nothing to build, so what is left is Prefect's own cost of a run."""
    return index


@task(task_run_name="run {index}")
def run_one(index: int, case: str, logs: Path) -> bool:
    """One target's share: create its run on a queue of its own, give that queue a worker (a
    droplet's, not counted), and read the run's end state once the worker is done with it."""
    run = run_deployment(DEPLOYMENT, parameters={"index": index}, work_queue_name=f"{case}-q{index}", timeout=0)
    assert isinstance(run, FlowRun), "called from synchronous code"
    with (logs / f"worker-{index}.log").open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process"]
            + ["--work-queue", f"{case}-q{index}", "--run-once", "--limit", "1"],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            worker.wait(timeout=WORKER_SECONDS)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
            return False
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
    return state is not None and state.is_completed()


@flow(name="floor-parent")
def parent(runs: int, case: str, logs: Path) -> int:
    """`runs` targets' runs, at most `at_once` at a time (the task runner's, set by `main`); the number
    that completed."""
    logs.mkdir(parents=True, exist_ok=True)
    futures = [run_one.submit(i, case, logs) for i in range(runs)]
    return sum(1 for future in futures if future.result())


def prepare() -> None:
    """The pool and the deployment (module path, so the workers import it from this checkout)."""
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(
                WorkPoolCreate(
                    name=POOL, type="process", base_job_template=ProcessWorker.get_default_base_job_template()
                )
            )
        except ObjectAlreadyExists:
            pass
    from bench.prefect_floor import noop as importable  # not __main__'s: the workers import it by module path

    importable.deploy(
        name="floor",
        work_pool_name=POOL,
        entrypoint_type=EntrypointType.MODULE_PATH,
        build=False,
        push=False,
        print_next_steps=False,
        ignore_warnings=True,
    )


def main(argv: list[str]) -> int:
    """`python -m bench.prefect_floor RUNS CASE LOGS AT_ONCE`: exit 0 when every run completed.
    AT_ONCE is dropship's default machines limit, given by `bench.scale` so that nothing of dropship
    is imported here (all 32 at once wedged the embedded server for 25 minutes on a 2-core host)."""
    runs, case, logs, at_once = int(argv[0]), argv[1], Path(argv[2]), int(argv[3])
    prepare()
    completed = parent.with_options(task_runner=ThreadPoolTaskRunner(max_workers=at_once))(runs, case, logs)
    print(f"{completed} of {runs} completed", flush=True)
    return 0 if completed == runs else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
