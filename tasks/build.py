"""Building a target on its machine through the `build` deployment."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL

from dropship.builder import BuildReport, build
from dropship.collect import endpoint, upload_source
from dropship.errors import BuildFailed, DropshipError
from dropship.jobs import build_globs
from dropship.machines import Machine, run_tag
from dropship.machines.bootstrap import worker_silence
from dropship.machines.handover import hand_over, one_line, worker_log
from dropship.manifest import Manifest, PackageFormat, Target
from dropship.plan import ReleasePlan
from dropship.ssh import SshSession
from tasks.machines import client_key_path, delete_machine, do_credentials, provider_for
from tasks.resources import BUILD, Applied, ensure_deployment, ensure_pool
from tasks.settings import api_url

PICKUP_TIMEOUT = 180.0
LIVENESS_SECONDS = 15.0
"""How often a running build's machine is checked (provider, then SSH)."""
API_OUTAGE_SECONDS = 120.0
"""How long the Prefect API may stay unreachable before the wait gives up."""
WAIT_POLL_SECONDS = 2.0
"""How often the build runs a release waits for are read: one query for all of them (see `_BuildRuns`)."""
BUILD_USER = "dropship-build"


@task(
    name="ensure-build-deployment",
    task_run_name="ensure build deployment",
    retries=2,
    retry_delay_seconds=2,
    cache_policy=NO_CACHE,
)
def ensure_build_deployment() -> None:
    """The builders' work pool and the `build` deployment, created if missing.

    The same spec `dropship deployments apply` uses, so the two never undo
    each other; a deployment already as wanted is left alone. Its entrypoint
    is a module path (`flows.build.build`): a machine's worker imports it from
    the installed dropship, so no pull step and no checkout path is involved.
    """
    applied = Applied()
    ensure_pool(BUILD.pool, applied)
    ensure_deployment(BUILD, applied)


_API_ERRORS = (httpx.HTTPError, PrefectHTTPStatusError, OSError)


class _BuildRuns:
    """The build runs this process waits for, read together.

    Each target's wait used to read its own run every second: N requests a
    second against the server for a release of N targets. Here whichever
    waiter finds the last read older than WAIT_POLL_SECONDS reads every
    watched run in one filtered query (under a lock, so only one reads), and
    the others use what it read. The read goes through the first caller's
    settings (one watcher per API URL) and one client, kept while any run is
    watched: a new client per read cost the release process its construction
    (an SSL context) and the server a CSRF token request, every 2 s. After a
    failed read the next one starts a fresh client.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: Counter[UUID] = Counter()
        self._runs: dict[UUID, FlowRun] = {}
        self._read_at = float("-inf")
        self._error: BaseException | None = None
        self._client: SyncPrefectClient | None = None

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.__exit__(None, None, None)
            except _API_ERRORS:
                pass

    @contextmanager
    def watching(self, flow_run_id: UUID) -> Iterator[None]:
        with self._lock:
            self._watched[flow_run_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._watched[flow_run_id] -= 1
                if self._watched[flow_run_id] <= 0:
                    del self._watched[flow_run_id]
                    self._runs.pop(flow_run_id, None)
                if not self._watched:
                    self._close()

    def read(self, flow_run_id: UUID) -> FlowRun | None:
        """The run as of the latest read, reading again if that is older than
        WAIT_POLL_SECONDS or predates the run; None if the server has no such
        run. Raises what the latest read raised (a transient API error)."""
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= 0.9 * WAIT_POLL_SECONDS or flow_run_id not in self._runs:
                self._read_at = now
                ids = sorted(self._watched | Counter([flow_run_id]), key=str)
                try:
                    if self._client is None:
                        self._client = get_client(sync_client=True).__enter__()
                    runs: dict[UUID, FlowRun] = {}
                    for start in range(0, len(ids), 200):  # the API's page limit
                        chunk = ids[start : start + 200]
                        for run in self._client.read_flow_runs(
                            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=len(chunk)
                        ):
                            runs[run.id] = run
                    self._runs, self._error = runs, None
                except _API_ERRORS as exc:
                    self._error = exc
                    self._close()
            if self._error is not None:
                raise self._error.with_traceback(None)  # shared by the waiters: keep its traceback short
            return self._runs.get(flow_run_id)


_BUILD_RUNS: dict[str, _BuildRuns] = {}
_BUILD_RUNS_LOCK = threading.Lock()


def _build_runs() -> _BuildRuns:
    """The watcher for the API this thread talks to (settings are per context)."""
    with _BUILD_RUNS_LOCK:
        return _BUILD_RUNS.setdefault(str(PREFECT_API_URL.value()), _BuildRuns())


def _wait(
    flow_run_id: UUID,
    target: str,
    queue: str,
    timeout: float,
    lost: Callable[[], str | None] | None = None,
    unclaimed: Callable[[], str] | None = None,
) -> FlowRun:
    """Wait for the child run to end; fail clearly if no worker picks it up
    (`unclaimed()` says why), if the machine dies (`lost()` names why, checked
    every LIVENESS_SECONDS), or if the Prefect API stays unreachable for
    API_OUTAGE_SECONDS (shorter outages are waited through). The run's state is
    read with every other build's (`_BuildRuns`)."""
    started = time.monotonic()
    checked = started
    unreachable_since: float | None = None
    runs = _build_runs()
    with runs.watching(flow_run_id):
        while True:
            now = time.monotonic()
            try:
                run = runs.read(flow_run_id)
                unreachable_since = None
            except _API_ERRORS as exc:
                if isinstance(exc, PrefectHTTPStatusError) and exc.response.status_code < 500:
                    raise
                unreachable_since = unreachable_since or now
                if now - unreachable_since > API_OUTAGE_SECONDS:
                    raise BuildFailed(
                        target,
                        f"the Prefect API at {PREFECT_API_URL.value()} was unreachable for "
                        f"{now - unreachable_since:.0f} s while waiting for the build ({type(exc).__name__})",
                    ) from exc
                time.sleep(WAIT_POLL_SECONDS)
                continue
            if run is None:
                raise BuildFailed(target, f"the build flow run {flow_run_id} is gone from the Prefect server")
            state = run.state
            if state is not None and state.is_final():
                return run
            waited = now - started
            if state is not None and state.is_scheduled() and waited > PICKUP_TIMEOUT:
                why = f": {unclaimed()}" if unclaimed is not None else ""
                raise BuildFailed(
                    target, f"no worker picked up the build on queue {queue} in {PICKUP_TIMEOUT:.0f} s{why}"
                )
            if waited > timeout:
                raise BuildFailed(target, f"build did not finish within {timeout:.0f} s")
            if lost is not None and now - checked >= LIVENESS_SECONDS:
                checked = now
                reason = lost()
                if reason:
                    raise BuildFailed(target, f"machine lost during the build after {waited:.0f} s: {reason}")
            time.sleep(WAIT_POLL_SECONDS)


def _liveness(
    manifest: Manifest, plan: ReleasePlan, workdir: str, machine: Machine, key: str
) -> Callable[[], str | None]:
    """What tells a dead machine from a slow build: the provider's view, then SSH (twice, to forgive a blip)."""
    provider = provider_for(manifest, plan.provider, workdir)
    misses = [0]

    def lost() -> str | None:
        try:
            if not provider.alive(machine.id):
                return f"{plan.provider} machine {machine.name} ({machine.id}) is gone or its worker is not running"
        except DropshipError:
            pass  # the provider's API hiccuped: SSH decides
        try:
            with SshSession(endpoint(machine), key, connect_timeout=10):
                misses[0] = 0
        except DropshipError as exc:
            misses[0] += 1
            if misses[0] >= 2:
                return f"machine {machine.name} ({machine.id}) does not answer SSH: {exc}"
        return None

    return lost


def _unclaimed(manifest: Manifest, plan: ReleasePlan, machine: Machine, key: str) -> Callable[[], str]:
    """Why the machine's worker never took its run, from the worker's log."""

    def why() -> str:
        try:
            with SshSession(endpoint(machine), key, connect_timeout=15) as ssh:
                tail = worker_log(ssh, machine, 8)
        except DropshipError as exc:
            return f"its worker log is unreadable ({exc})"
        if plan.provider == "digitalocean":
            return worker_silence(do_credentials(manifest).worker_url(api_url()), tail)  # the URL droplets use
        return "its worker log ends: " + one_line(tail)

    return why


def build_on_machine(
    manifest: Manifest, plan: ReleasePlan, target_name: str, machine: Machine, workdir: str
) -> dict[str, object]:
    """Upload the source, create the build run on the machine's queue, hand it to the
    machine's worker launcher (`dropship.machines.handover`), wait.

    On failure the machine is deleted at once rather than at teardown.
    """
    logger = get_run_logger()
    target = manifest.target(target_name)
    try:
        key = client_key_path(plan).read_text()
        with SshSession(endpoint(machine), key) as ssh:
            child = _start_build(ssh, manifest, plan, target, machine)
        started = time.monotonic()
        logger.info("build of %s is flow run %s on queue %s", target.name, child.name, machine.name)
        finished = _wait(
            child.id,
            target.name,
            machine.name,
            float(manifest.machines.build_timeout),
            _liveness(manifest, plan, workdir, machine, key),
            _unclaimed(manifest, plan, machine, key),
        )
        assert finished.state is not None
        if finished.state.is_crashed():
            raise BuildFailed(
                target.name,
                f"machine lost during the build: the flow run {finished.name} on {machine.name} "
                f"({machine.id}) crashed, its process or worker died: {finished.state.message}",
            )
        if not finished.state.is_completed():
            raise BuildFailed(
                target.name, f"build flow run {finished.name} ended {finished.state.name}: {finished.state.message}"
            )
        return {"flow_run": finished.name, "seconds": round(time.monotonic() - started, 3)}
    except BaseException:
        try:
            delete_machine(manifest, plan, workdir, machine)
        except Exception as exc:  # noqa: BLE001 - keep the build's error; teardown retries the delete
            logger.error("could not delete machine %s after the failed build: %s", machine.name, exc)
        raise


def _start_build(ssh: SshSession, manifest: Manifest, plan: ReleasePlan, target: Target, machine: Machine) -> FlowRun:
    """The source on the machine, the build run on its queue, the run's id handed to its worker."""
    remote_archive = upload_source(ssh, machine, Path(plan.archive))
    child = run_deployment(
        BUILD.full_name,
        parameters={
            "target": target.name,
            "workspace": machine.work_dir,
            "archive": remote_archive,
            "command": list(target.build),
            "artifacts": build_globs(target),  # deb/rpm artifacts and language packages
            "version": plan.version,
            # the commit's time, so a rebuild of the same commit can be byte-identical
            "env": {**target.env, "SOURCE_DATE_EPOCH": str(plan.source_date_epoch)},
            "timeout": float(manifest.machines.build_timeout),
            # droplets run their worker as root: the build runs as this unprivileged user
            "build_user": BUILD_USER if plan.provider == "digitalocean" else None,
            # format = "oci": the image from the built tree (dropship.oci_build)
            **_image_parameters(target),
            # container = "...": the build runs in that image, pinned by digest at plan time
            **_container_parameters(plan, target),
        },
        work_queue_name=machine.name,
        timeout=0,
        tags=[run_tag(plan.run_id), f"dropship-target-{target.name}"],
        flow_run_name=f"{plan.project}-{plan.name}-{target.name}".replace("/", "-"),
    )
    assert isinstance(child, FlowRun), "called from synchronous code"
    hand_over(ssh, machine, str(child.id))
    return child


def _image_parameters(target: Target) -> dict[str, object]:
    """The build flow's `image` parameter for an oci target; nothing for the others (older workers keep working)."""
    if target.format is not PackageFormat.OCI:
        return {}
    return {"image": {"dockerfile": target.dockerfile or "Dockerfile", "platform": f"linux/{target.arch.value}"}}


def _container_parameters(plan: ReleasePlan, target: Target) -> dict[str, object]:
    """The build flow's `container` parameter: the pinned image and the block's *name* (never a secret)."""
    if target.container is None:
        return {}
    return {"container": {"reference": plan.containers[target.name], "credentials": target.container_credentials}}


def run_build(
    target: str,
    workspace: str,
    archive: str,
    command: list[str],
    artifacts: list[str],
    version: str,
    env: dict[str, str],
    timeout: float,
    build_user: str | None = None,
    image: dict[str, str] | None = None,
    container: dict[str, str] | None = None,
) -> BuildReport:
    """On the machine: the build itself (see `dropship.builder`), in `container` when given.

    Called by the build flow itself, not as a task run: the flow run already
    is "the build of this target", and a task run inside it cost the server a
    creation and three state events per target for nothing a person reads."""
    runner = None
    if container is not None:
        from tasks.containers import ContainerRunner

        runner = ContainerRunner(
            target=target,
            workspace=Path(workspace),
            reference=container["reference"],
            credentials=container["credentials"],
        )
    report = build(
        target=target,
        workspace=Path(workspace),
        archive=Path(archive),
        command=command,
        artifacts=artifacts,
        version=version,
        env=env,
        timeout=timeout,
        run_as=build_user,
        image=image,
        runner=runner,
    )
    logger = get_run_logger()
    logger.info("build output (last lines):\n%s", report.output_tail)
    for artifact in report.artifacts:
        logger.info("artifact %s: %d bytes, sha256 %s", artifact.name, artifact.size, artifact.sha256)
    return report
