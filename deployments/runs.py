"""Starting and listing release runs through the Prefect API (the webhook, `release --submit`, `status`)."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowFilter, FlowFilterName
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound

from dropship.errors import ConfigError
from dropship.webhook import TagPush
from tasks.api import PATIENCE, call

RELEASE_TAG = "release/release-tag"
WEBHOOK_PATIENCE = 6.0


def submit(
    deployment: str,
    parameters: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    tags: list[str] | None = None,
    patience: float = PATIENCE,
) -> str:
    """Create a flow run of `deployment`; with the same idempotency key, return the first run instead."""
    try:
        target = call(
            lambda client: client.read_deployment_by_name(deployment),
            f"reading deployment {deployment}",
            patience=patience,
        )
    except ObjectNotFound as exc:
        raise ConfigError(
            f"deployment {deployment} does not exist on the Prefect server: run `dropship deployments apply`"
        ) from exc
    # A retried create is safe with an idempotency key; without one, make one
    # per call so a retry after a lost answer returns the same run.
    key = idempotency_key or f"dropship-submit-{uuid4()}"
    run = call(
        lambda client: client.create_flow_run_from_deployment(
            target.id,
            parameters=parameters,
            idempotency_key=key,
            tags=tags or [],
        ),
        f"creating a run of {deployment}",
        patience=patience,
    )
    return str(run.id)


def release_starter(deployment: str = RELEASE_TAG) -> Any:
    """The webhook's `start`: one run of `deployment` per (project, tag, commit)."""

    def start(push: TagPush) -> str:
        return submit(
            deployment,
            {"tag": push.tag},
            idempotency_key=push.idempotency_key,
            tags=[f"forge:{push.forge}", f"tag:{push.tag}"],
            # Forges give up on a delivery after about 10 s: answer 503 before
            # then, and let the forge redeliver (the idempotency key makes that safe).
            patience=WEBHOOK_PATIENCE,
        )

    return start


def recent_releases(limit: int = 20) -> list[dict[str, Any]]:
    """The latest runs of the release, promote and rollback flows, newest first."""

    def read(client: SyncPrefectClient) -> tuple[list[Any], dict[Any, str]]:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["release", "promote", "rollback"])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=limit,
        )
        deployments = {
            d.id: d.name
            for d in client.read_deployments(
                deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=["release-tag", "release-weekly", "promote", "rollback"])
                )
            )
        }
        return runs, deployments

    runs, deployments = call(read, "listing recent releases")
    rows = []
    for run in runs:
        params = run.parameters
        what = params.get("tag") or params.get("ref") or params.get("as_tag") or params.get("to") or ""
        rows.append(
            {
                "id": str(run.id),
                "name": run.name,
                "deployment": deployments.get(run.deployment_id, "-") if run.deployment_id else "-",
                "what": what,
                "state": run.state.name if run.state else "-",
                "start": run.start_time.strftime("%Y-%m-%d %H:%M") if run.start_time else "-",
                "seconds": round(run.total_run_time.total_seconds(), 1),
            }
        )
    return rows
