"""Creating one machine for one target: keys, user_data, tags, queue name, bootstrap."""

from __future__ import annotations

from collections.abc import Callable

from dropship.errors import DropshipError, MachineError
from dropship.machines import WORK_DIR, Machine, MachineRequest, Provider, run_tag
from dropship.machines.bootstrap import PYPI, Setup, WorkerConfig, connect_pinned, image_mark, install, start_worker
from dropship.machines.userdata import WorkerSpec, render, render_bootstrap
from dropship.manifest import Manifest, Target
from dropship.ssh import generate_keypair


def machine_name(project: str, target: str, short_run_id: str) -> str:
    """Droplet names allow letters, digits, dots and dashes; this is also the work queue."""
    return f"{project}-{target}-{short_run_id}"[:63].rstrip("-")


def target_setup(manifest: Manifest, target: Target) -> Setup:
    packages, commands = manifest.machine_setup(target)
    return Setup(packages, commands)


def _request(
    manifest: Manifest,
    target: Target,
    name: str,
    run_id: str,
    boot: tuple[str, str, str],
    image: str | None = None,
    extra_tags: tuple[str, ...] = (),
) -> MachineRequest:
    """What to ask the provider for: the target's size, image (unless `image`) and region, tagged
    with the run and the target. `boot`: user_data, host public key, the client's authorized key."""
    spec = manifest.machine_spec(target)
    user_data, host_public_key, authorized_key = boot
    return MachineRequest(
        name=name,
        tags=(run_tag(run_id), f"dropship-target-{target.name}", *extra_tags),
        size=spec["size"],
        image=image or spec["image"],
        region=spec["region"],
        user_data=user_data,
        host_public_key=host_public_key,
        authorized_key=authorized_key,
    )


def provision(
    provider: Provider, manifest: Manifest, target: Target, *, run_id: str, client_public_key: str, worker: WorkerSpec
) -> Machine:
    """A local machine: its user_data starts the worker from this interpreter (the demo path)."""
    host_key = generate_keypair(f"dropship-host-{target.name}")
    user_data = render(
        host_private_key=host_key.private_openssh,
        host_public_key=host_key.public_line,
        authorized_key=client_public_key,
        work_dir=WORK_DIR,
        worker=worker,
    )
    boot = (user_data, host_key.public_line, client_public_key)
    return provider.create(_request(manifest, target, worker.queue, run_id, boot))


def provision_droplet(
    provider: Provider,
    manifest: Manifest,
    target: Target,
    *,
    run_id: str,
    short_run_id: str,
    client_public_key: str,
    client_private_key: str,
    worker: WorkerConfig | None,
    image: str | None = None,
    index_url: str = PYPI,
    ssh_timeout: float = 300.0,
    extra_tags: tuple[str, ...] = (),
    mark: str = "",
    say: Callable[[str], None] = lambda step: None,
) -> Machine:
    """A droplet from a stock image or a snapshot, bootstrapped over SSH with its host key pinned.

    On a stock image the target's setup, dropship and Prefect are installed
    (and `mark` recorded, for `dropship image build`); a snapshot already has
    them. Then the worker starts, unless `worker` is None. If any step fails
    the droplet is deleted at once and the error names it.

    `say` is told each step that takes a while (creating: up to minutes on
    DigitalOcean; installing on a stock image: minutes), so a person watching
    sees why nothing else happens yet.
    """
    host_key = generate_keypair(f"dropship-host-{target.name}")
    name = worker.queue if worker else machine_name(manifest.project.name, target.name, short_run_id)
    user_data = render_bootstrap(host_private_key=host_key.private_openssh, host_public_key=host_key.public_line)
    boot = (user_data, host_key.public_line, client_public_key)
    request = _request(manifest, target, name, run_id, boot, image, extra_tags)
    say(f"creating droplet {name} ({request.size}, {request.image}, {request.region})")
    machine = provider.create(request)
    try:
        with connect_pinned(machine, client_private_key, timeout=ssh_timeout) as ssh:
            if not image_mark(ssh):
                say(
                    f"droplet {machine.name} ({machine.id}) is up; installing its setup, dropship and Prefect "
                    f"on {request.image}"
                    + ("" if mark else " (minutes; a snapshot from `dropship image build` skips this)")
                )
                install(ssh, target_setup(manifest, target), index_url=index_url, image_mark=mark)
            if worker is not None:
                start_worker(ssh, worker)
    except DropshipError as exc:
        provider.delete(machine.id)
        raise MachineError(f"bootstrap of droplet {machine.name} ({machine.id}) failed, deleted it: {exc}") from exc
    except BaseException:
        provider.delete(machine.id)
        raise
    return machine
