"""Stages that run before any machine exists: plan, key and repository-server checks, tests."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.repo_server import RepoServer
from blocks.signing_key import SigningKey
from dropship.deploy.preflight import check_local_root, check_ssh_root
from dropship.errors import ConfigError, SigningKeyError
from dropship.manifest import Manifest
from dropship.plan import ReleasePlan, make_plan
from dropship.ssh import Endpoint
from dropship.testing import run_tests


@task(name="plan", cache_policy=NO_CACHE)
def plan_release(
    manifest_path: str,
    tag: str | None,
    ref: str | None,
    targets: list[str] | None,
    workdir: str,
    run_id: str,
    started: datetime,
    dry_run: bool,
    provider: str | None = None,
) -> tuple[Manifest, ReleasePlan]:
    manifest, plan = make_plan(
        manifest_path, tag=tag, ref=ref, targets=targets, workdir=Path(workdir),
        run_id=run_id, started=started, dry_run=dry_run, provider=provider,
    )
    get_run_logger().info(
        "%s %s is a %s release of commit %s, version %s, into suites %s; targets: %s",
        plan.project, plan.name, plan.release_class, plan.commit[:12], plan.version,
        ", ".join(plan.suites), ", ".join(plan.targets),
    )
    return manifest, plan


@task(name="check-signing-key", cache_policy=NO_CACHE)
def check_signing_key(block_name: str) -> list[str]:
    """Load and open the key before any machine exists; return its fingerprints."""
    try:
        block = SigningKey.load(block_name)
    except ValueError as exc:
        raise SigningKeyError(f"signing key block {block_name!r} not found: create it (see `dropship --help`)") from exc
    with block.signer() as signer:
        fingerprints = signer.fingerprints
    get_run_logger().info("signing with %s", ", ".join(fingerprints))
    return fingerprints


@task(name="check-repo-server", cache_policy=NO_CACHE)
def check_repo_server(block_name: str) -> str:
    """Reach the repository server (pinned host key, writable root, tools) before any machine exists."""
    label = f"RepoServer block {block_name!r}"
    try:
        block = RepoServer.load(block_name)
    except ValueError as exc:
        raise ConfigError(f"{label} not found: create it (see docs/architecture.md, publication)") from exc
    if not block.host:
        where = check_local_root(Path(block.path), label)
    elif block.ssh_private_key is None or not block.host_public_key:
        raise ConfigError(f"{label}: host {block.host} needs ssh_private_key and host_public_key")
    else:
        endpoint = Endpoint(block.host, block.port, block.user, block.host_public_key)
        where = check_ssh_root(endpoint, block.ssh_private_key.get_secret_value(), block.path, label)
    get_run_logger().info("repository server %s is reachable and writable", where)
    return where


@task(name="test", cache_policy=NO_CACHE)
def test_source(plan: ReleasePlan, command: list[str] | None) -> None:
    logger = get_run_logger()
    if not command:
        logger.warning("the manifest has no test command: nothing was tested")
        return
    output = run_tests(Path(plan.archive), command, version=plan.version, source_date_epoch=plan.source_date_epoch)
    logger.info("tests passed:\n%s", "\n".join(output.strip().splitlines()[-20:]))
