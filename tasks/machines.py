"""Creating and deleting build machines, and the teardown that always runs."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.states import Cancelled

from blocks.digitalocean import DigitalOceanCredentials
from blocks.values import require_block
from dropship import ledger
from dropship.errors import ConfigError
from dropship.machines import Machine, Provider, run_tag
from dropship.machines.bootstrap import WorkerConfig
from dropship.machines.factory import make_provider
from dropship.machines.provision import machine_name, provision, provision_droplet
from dropship.manifest import Manifest
from dropship.plan import ReleasePlan
from dropship.progress import event
from dropship.run_folder import RunFolder
from tasks.api import call
from tasks.resources import BUILDERS_POOL
from tasks.settings import api_url, local_worker, machine_client_env


def do_credentials(manifest: Manifest) -> DigitalOceanCredentials:
    name = manifest.machines.credentials
    try:
        return require_block(DigitalOceanCredentials, name)
    except ValueError as exc:
        raise ConfigError(
            f"DigitalOceanCredentials block {name!r} not found: create it before releasing on droplets"
        ) from exc


def provider_for(manifest: Manifest, provider: str, workdir: str) -> Provider:
    settings = do_credentials(manifest).settings() if provider == "digitalocean" else None
    return make_provider(provider, Path(workdir), settings)


def droplet_worker(credentials: DigitalOceanCredentials, queue: str) -> WorkerConfig:
    """The worker a droplet runs: the block's API URL and credentials."""
    return WorkerConfig(
        api_url=credentials.worker_url(api_url()),
        pool=BUILDERS_POOL,
        queue=queue,
        auth_string=credentials.api_auth_string.get_secret_value() if credentials.api_auth_string else None,
        api_key=credentials.api_key.get_secret_value() if credentials.api_key else None,
        client_env=machine_client_env(),
    )


def client_key_path(plan: ReleasePlan) -> Path:
    return plan.folder.ssh_key


def _ensure_queue(name: str) -> None:
    def create(client: SyncPrefectClient) -> None:
        try:
            client.create_work_queue(name=name, work_pool_name=BUILDERS_POOL)
        except ObjectAlreadyExists:  # also when a retried create had gone through
            pass

    call(create, f"creating work queue {name}")


def provision_machine(manifest: Manifest, plan: ReleasePlan, target_name: str, workdir: str) -> Machine:
    """One machine for one target, its worker serving a queue named after it (a step of `build <target>`)."""
    provider = provider_for(manifest, plan.provider, workdir)
    name = machine_name(plan.project, target_name, plan.short_id)
    _ensure_queue(name)
    public_key = client_key_path(plan).with_suffix(".pub").read_text().strip()
    target = manifest.target(target_name)
    if plan.provider == "digitalocean":
        credentials = do_credentials(manifest)
        worker = droplet_worker(credentials, name)
        private_key = client_key_path(plan).read_text()
        machine = provision_droplet(
            provider,
            manifest,
            target,
            run_id=plan.run_id,
            short_run_id=plan.short_id,
            client_public_key=public_key,
            client_private_key=private_key,
            worker=worker,
            index_url=credentials.index_url(),
            ssh_timeout=credentials.ssh_timeout,
            say=lambda step: get_run_logger().info("%s", step, extra=event("provision", "running", name=target_name)),
        )
    else:
        machine = provision(
            provider,
            manifest,
            target,
            run_id=plan.run_id,
            client_public_key=public_key,
            worker=local_worker(name),  # this interpreter
        )
    ledger.record(
        plan.folder,
        "created",
        machine.id,
        machine.name,
        target_name,
        machine.created_at,
        price_hourly=machine.price_hourly,
    )
    get_run_logger().info("machine %s (%s) is up for %s", machine.name, machine.id, target_name)
    return machine


def delete_machine(manifest: Manifest, plan: ReleasePlan, workdir: str, machine: Machine) -> None:
    provider = provider_for(manifest, plan.provider, workdir)
    provider.delete(machine.id)
    ledger.record(plan.folder, "deleted", machine.id, machine.name)


def cancel_open_build_runs(run_id: str) -> None:
    """Build runs whose machine is gone would otherwise stay Running forever."""
    with get_client(sync_client=True) as client:
        open_runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[run_tag(run_id)]),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING])
                ),
            )
        )
        for open_run in open_runs:
            client.set_flow_run_state(
                open_run.id, Cancelled(message="its build machine was deleted by teardown or the reaper"), force=True
            )


def teardown(manifest: Manifest, provider_name: str, workdir: str, run_id: str, folder: RunFolder) -> list[str]:
    """Delete every machine tagged with this run, and the run's work queues.

    Called from the flow's `finally` and from its failure, crash and
    cancellation hooks; safe to call more than once.
    """
    provider = provider_for(manifest, provider_name, workdir)
    deleted = []
    for machine in provider.list(run_tag(run_id)):
        provider.delete(machine.id)
        ledger.record(folder, "deleted", machine.id, machine.name)
        deleted.append(machine.name)
    provider.release_run(run_id)
    cancel_open_build_runs(run_id)
    created = {life.name for life in ledger.lives(folder)}
    with get_client(sync_client=True) as client:
        for name in created:
            try:
                queue = client.read_work_queue_by_name(name, work_pool_name=BUILDERS_POOL)
                client.delete_work_queue_by_id(queue.id)
            except ObjectNotFound:
                pass
    return deleted


@task(name="teardown", task_run_name="teardown", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def teardown_run(manifest: Manifest, plan: ReleasePlan, workdir: str) -> list[str]:
    deleted = teardown(manifest, plan.provider, workdir, plan.run_id, plan.folder)
    if deleted:
        get_run_logger().info("teardown deleted %s", ", ".join(deleted))
    return deleted
