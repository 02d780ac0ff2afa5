"""`dropship image build`: a snapshot with a target's setup, dropship and Prefect already installed.

Boots a stock droplet, bootstraps it exactly as a release would (setup
included) but starts no worker, removes credentials, login and host keys,
powers it off, snapshots it with DigitalOcean's snapshot action, waits for the
action and deletes the droplet. The snapshot is named
`dropship-<base image>-<hash>`, the hash covering the base image, this
orchestrator's dropship (wheel contents), Prefect and pinned dependency
versions, and the setup; a release refuses a snapshot whose hash differs
from what this orchestrator would build, before any build.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as current_run

from dropship.errors import ConfigError
from dropship.machines.bootstrap import connect_pinned, image_hash, scrub_for_snapshot
from dropship.machines.digitalocean import DigitalOceanProvider, image_hash_of, snapshot_name
from dropship.machines.provision import provision_droplet, target_setup
from dropship.manifest import Manifest, load_manifest
from dropship.progress import event
from dropship.ssh import write_keypair
from tasks.machines import do_credentials


def planned_image(manifest: Manifest, target_name: str) -> tuple[str, str, str]:
    """(base image, hash, snapshot name) `dropship image build` makes for a target."""
    target = manifest.target(target_name)
    image = manifest.machine_spec(target)["image"]
    recorded = image_hash_of(image)
    base = recorded[0] if recorded else image
    digest = image_hash(base, target_setup(manifest, target))
    return base, digest, snapshot_name(base, digest)


@task(name="build-image", task_run_name="build image", cache_policy=NO_CACHE)
def build_image(manifest: Manifest, target_name: str, run_id: str) -> dict[str, Any]:
    logger = get_run_logger()
    credentials = do_credentials(manifest)
    provider = DigitalOceanProvider(credentials.settings())
    target = manifest.target(target_name)
    spec = manifest.machine_spec(target)
    base, digest, name = planned_image(manifest, target_name)
    existing = provider.find_image(name)
    if existing is not None:
        logger.info("snapshot %s (%s) is already built", name, existing["id"])
        return {"target": target_name, "id": existing["id"], "name": name, "built": False}
    provider.preflight([(spec["size"], base, spec["region"])])
    with tempfile.TemporaryDirectory(prefix="dropship-image-") as tmp:
        pair = write_keypair(Path(tmp) / "id_ed25519", f"dropship-image-{target_name}")
        machine = provision_droplet(
            provider,
            manifest,
            target,
            run_id=run_id,
            short_run_id=run_id[:8],
            client_public_key=pair.public_line,
            client_private_key=pair.private_openssh,
            worker=None,
            image=base,
            index_url=credentials.index_url(),
            ssh_timeout=credentials.ssh_timeout,
            extra_tags=("dropship-image",),
            mark=digest[:20],
            say=lambda step: logger.info("%s", step, extra=event("image", "running", name=target_name)),
        )
        try:
            with connect_pinned(machine, pair.private_openssh, timeout=credentials.ssh_timeout) as ssh:
                scrub_for_snapshot(ssh)
            snapshot = provider.snapshot(machine.id, name)
        finally:
            provider.delete(machine.id)
            provider.release_run(run_id)
    logger.info("snapshot %s (%s) built from %s", name, snapshot["id"], base)
    return {"target": target_name, "id": snapshot["id"], "name": name, "built": True}


@flow(name="image-build", log_prints=True)
def image_build(manifest: str, target: str | None = None) -> list[dict[str, Any]]:
    """Snapshot(s) for `target` (default: every target; one per distinct base, setup and region)."""
    spec = load_manifest(manifest)
    if spec.machines.provider != "digitalocean" and not _credentials_exist(spec):
        raise ConfigError("dropship image build makes DigitalOcean snapshots: create the DigitalOceanCredentials block")
    names = [target] if target else [t.name for t in spec.targets]
    for name in names:
        try:
            spec.target(name)
        except ConfigError:
            raise ConfigError(f"{manifest} has no target {name!r}") from None
    run_id = str(current_run.id)
    made: dict[tuple[str, str], dict[str, Any]] = {}
    results = []
    for name in names:
        key = (planned_image(spec, name)[2], spec.machine_spec(spec.target(name))["region"])
        if key not in made:
            made[key] = build_image(spec, name, run_id)
        results.append({**made[key], "target": name})
    print("\n".join(f"{r['target']}: image {r['name']} (id {r['id']})" for r in results))
    return results


def _credentials_exist(manifest: Manifest) -> bool:
    try:
        do_credentials(manifest)
    except ConfigError:
        return False
    return True
