"""Create -> worker ready, per droplet: from the stock image and from a snapshot.

    python -m bench.droplet_ready [--droplets N]

Starts a Prefect server that requires an auth string, a dockerd of its own,
the emulator with container droplets of the stock Debian 12 image, and
provisions N droplets of the example's amd64-deb target in parallel, exactly
as a release does (`provision_droplet`, then waiting until the worker has
registered with Prefect): first from the stock image (full bootstrap: setup
packages, venv, pip install of dropship and Prefect), then from a snapshot
made by `dropship image build`'s flow. Prints seconds per droplet and the
ratio stock / snapshot (the baseline is the snapshot, measured in the same
run). The snapshot's own build time is printed too: it is paid once.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

from bench.cloud import emulated_cloud
from dropship.demo import prepare_repository
from dropship.ssh import generate_keypair

TOKEN = "dop_v1_bench_ready"
AUTH = "bench:ready-auth"
TARGET = "amd64-deb"


def provision_many(manifest_path: Path, image: str | None, count: int, label: str) -> list[float]:
    from blocks.digitalocean import DigitalOceanCredentials
    from dropship.machines.digitalocean import DigitalOceanProvider
    from dropship.machines.provision import provision_droplet
    from dropship.manifest import load_manifest
    from tasks.machines import droplet_worker

    manifest = load_manifest(manifest_path)
    credentials = DigitalOceanCredentials.load("dropship-digitalocean")
    provider = DigitalOceanProvider(credentials.settings())
    client = generate_keypair("bench")
    run_id = f"bench-{label}-{int(time.time())}"
    seconds: list[float] = [0.0] * count
    errors: list[BaseException] = []

    def one(index: int) -> None:
        queue = f"hello-{TARGET}-{label}{index}"
        started = time.monotonic()
        try:
            machine = provision_droplet(
                provider,
                manifest,
                manifest.target(TARGET),
                run_id=run_id,
                short_run_id=f"{label}{index}",
                client_public_key=client.public_line,
                client_private_key=client.private_openssh,
                worker=droplet_worker(credentials, queue),
                image=image,
                index_url=credentials.package_index,
                ssh_timeout=credentials.ssh_timeout,
            )
            # bootstrapped, its worker launcher waiting for a build run (dropship.machines.handover)
            seconds[index] = time.monotonic() - started
            provider.delete(machine.id)
        except BaseException as exc:  # noqa: BLE001 - reported after the others finish
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    provider.release_run(run_id)
    if errors:
        raise SystemExit(f"{label}: {errors[0]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--droplets", type=int, default=2, help="droplets per image, provisioned in parallel (default 2)"
    )
    args = parser.parse_args()
    with emulated_cloud("ready", token=TOKEN, auth=AUTH) as cloud:
        from flows.image import image_build
        from tasks.resources import BUILD, Applied, ensure_pool

        ensure_pool(BUILD.pool, Applied())
        repo = prepare_repository(cloud.work / "hello", "v0.1.0")
        manifest = repo / "dropship.toml"

        stock = provision_many(manifest, None, args.droplets, "stock")
        started = time.monotonic()
        (made,) = image_build(manifest=str(manifest), target=TARGET)
        snapshot_build = time.monotonic() - started
        snap = provision_many(manifest, str(made["name"]), args.droplets, "snap")

        print(f"\n{'droplet':8} {'stock image s':>14} {'snapshot s':>11} {'ratio':>6}")
        for index, (a, b) in enumerate(zip(stock, snap, strict=False)):
            print(f"{index:<8} {a:>14.1f} {b:>11.1f} {a / b:>5.1f}x")
        mean_stock, mean_snap = sum(stock) / len(stock), sum(snap) / len(snap)
        print(f"{'mean':8} {mean_stock:>14.1f} {mean_snap:>11.1f} {mean_stock / mean_snap:>5.1f}x")
        print(
            f"snapshot {made['name']} built once in {snapshot_build:.1f} s (create, bootstrap, power off, snapshot, delete)"
        )


if __name__ == "__main__":
    main()
