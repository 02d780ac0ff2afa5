"""Billed droplet-seconds over useful seconds, per target, through the emulator.

    python -m bench.droplet_seconds [--targets amd64-deb,...] [--stock]

Runs the example release on container droplets of the DigitalOcean emulator
(pydo over HTTP, a Prefect server requiring an auth string), from a snapshot
made by `dropship image build` in the same run (or, with --stock, from the
stock image with a full bootstrap). For each target: billed seconds divided
by useful seconds (droplet creation to the moment its artifacts were
collected: boot, bootstrap, build, collect; for an integration job's machine,
creation to deletion). Billed seconds follow
DigitalOcean's rule, per second with a minimum of 60 s or $0.01, whichever
is higher (`dropship.machines.digitalocean.droplet_cost`), so a droplet that
lives 20 s counts 60. Goal: <= 1.1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from dropship.emulator.dockerd import DockerDaemon
from dropship.emulator.image import ensure_image
from dropship.emulator.server import EmulatorServer
from dropship.emulator.state import Emulator
from dropship.ledger import lives
from dropship.machines.digitalocean import MINIMUM_SECONDS, billed_seconds, droplet_cost
from dropship.ports import free_port
from dropship.prefect_server import LocalPrefectServer

TOKEN = "dop_v1_bench"
AUTH = "bench:seconds-auth"


class AuthServer(LocalPrefectServer):
    def env(self) -> dict[str, str]:
        return {**super().env(), "PREFECT_SERVER_API_AUTH_STRING": AUTH}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", default="amd64-deb", help="comma-separated targets (default amd64-deb)")
    parser.add_argument("--stock", action="store_true", help="boot the stock image (full bootstrap), no snapshot")
    args = parser.parse_args()
    targets = args.targets.split(",")
    work = Path(tempfile.mkdtemp(prefix="dropship-bench-droplets-"))
    server = AuthServer(work / "prefect", startup_timeout=300)
    server.start()
    server.export_env()
    os.environ["PREFECT_API_AUTH_STRING"] = AUTH
    docker_dir = Path(tempfile.mkdtemp(prefix="dsbs-", dir="/tmp"))
    daemon = DockerDaemon(docker_dir).start()
    api: EmulatorServer | None = None
    try:
        ensure_image(daemon)
        emulator = Emulator(work / "emulator", token=TOKEN, machines="containers", docker=daemon, ssh_port=free_port())
        api = EmulatorServer(emulator).start()
        from prefect.logging.handlers import APILogHandler

        from blocks.digitalocean import DigitalOceanCredentials
        from blocks.repo_server import RepoServer
        from blocks.signing_key import SigningKey
        from dropship.demo import prepare_repository
        from flows.demo import demo_key
        from flows.image import image_build
        from flows.release import release

        DigitalOceanCredentials(
            token=TOKEN, endpoint=api.url, ssh_port=emulator.ssh_port, api_auth_string=AUTH, poll_interval=0.5
        ).save("dropship-digitalocean", overwrite=True)
        SigningKey(private_key=demo_key(work)).save("hello-signing-key", overwrite=True)
        RepoServer(path=str(work / "published")).save("hello-repo", overwrite=True)
        repo = prepare_repository(work / "hello", "v0.1.0")
        if not args.stock:
            made = [image_build(manifest=str(repo / "dropship.toml"), target=t)[0] for t in targets]
            if len({m["name"] for m in made}) > 1:
                raise SystemExit("the chosen targets need different snapshots: bench one setup at a time")
            manifest = repo / "dropship.toml"
            manifest.write_text(manifest.read_text().replace('image = "debian-12-x64"', f'image = "{made[0]["name"]}"'))
            git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "-C", str(repo)]
            subprocess.run([*git, "commit", "-qam", "release from the snapshot"], check=True)
            subprocess.run([*git, "tag", "-a", "v0.1.1", "-m", "v0.1.1"], check=True)
        tag = "v0.1.0" if args.stock else "v0.1.1"
        state = release(
            manifest=str(repo / "dropship.toml"),
            tag=tag,
            workdir=str(work / "state"),
            provider="digitalocean",
            targets=targets,
            return_state=True,
        )
        APILogHandler().flush()
        if not state.is_completed():
            raise SystemExit(state.message)
        (run_dir,) = (work / "state" / "runs").iterdir()
        lifetimes = {life["name"]: life for life in emulator.lifetimes()}
        print(
            f"\nimage: {'stock debian-12-x64 (full bootstrap)' if args.stock else 'snapshot'}; "
            f"minimum {MINIMUM_SECONDS} s or $0.01"
        )
        print(f"{'target':10} {'droplet':28} {'useful s':>8} {'alive s':>8} {'billed s':>8} {'cost $':>8} {'ratio':>6}")
        worst = 0.0
        for life in sorted(lives(run_dir), key=lambda item: item.target):
            # A build machine's useful work ends when its artifacts are collected; a job's machine
            # (an integration job: install the signed tree) is useful until the job deleted it.
            end = life.collected or life.deleted
            assert end is not None, f"{life.name} was neither collected nor deleted"
            useful = (end - life.created).total_seconds()
            alive = lifetimes[life.name]["seconds"]
            billed = billed_seconds(alive)
            cost = droplet_cost(alive, lifetimes[life.name]["price_hourly"])
            ratio = billed / useful
            worst = max(worst, ratio)
            print(
                f"{life.target:10} {life.name:28} {useful:>8.1f} {alive:>8.1f} {billed:>8d} {cost:>8.4f} {ratio:>5.2f}x"
            )
        print(f"worst ratio {worst:.2f}x  {'ok' if worst <= 1.1 else 'over goal (1.1x)'}")
    finally:
        if api is not None:
            api.stop()
        daemon.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(docker_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
