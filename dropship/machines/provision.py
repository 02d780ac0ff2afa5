"""Creating one machine for one target: keys, user_data, tags, queue name."""

from __future__ import annotations

from dropship.machines import Machine, MachineRequest, Provider, run_tag
from dropship.machines.local import WORK_DIR
from dropship.machines.userdata import WorkerSpec, render
from dropship.manifest import Manifest, Target
from dropship.ssh import generate_keypair


def machine_name(project: str, target: str, short_run_id: str) -> str:
    """Droplet names allow letters, digits, dots and dashes; this is also the work queue."""
    return f"{project}-{target}-{short_run_id}"[:63].rstrip("-")


def provision(
    provider: Provider,
    manifest: Manifest,
    target: Target,
    *,
    run_id: str,
    short_run_id: str,
    client_public_key: str,
    worker: WorkerSpec,
) -> Machine:
    """Create the target's machine with a host key generated here (and so pinned)."""
    host_key = generate_keypair(f"dropship-host-{target.name}")
    user_data = render(
        host_private_key=host_key.private_openssh,
        host_public_key=host_key.public_line,
        authorized_key=client_public_key,
        work_dir=WORK_DIR,
        worker=worker,
    )
    spec = manifest.machine_spec(target)
    request = MachineRequest(
        name=worker.queue,
        tags=(run_tag(run_id), f"dropship-target-{target.name}"),
        size=spec["size"],
        image=spec["image"],
        region=spec["region"],
        user_data=user_data,
        host_public_key=host_key.public_line,
    )
    return provider.create(request)
