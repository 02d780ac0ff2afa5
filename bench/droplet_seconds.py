"""Billed droplet-seconds over useful seconds, per target, through the emulator.

    python -m bench.droplet_seconds

Runs the example release on droplets of the DigitalOcean emulator (pydo over
HTTP, each droplet a local sshd + worker) with a local Prefect server. For
each target: billed seconds (the emulator's record of the droplet's life,
create to delete) divided by useful seconds (droplet creation to the moment
its artifacts were collected: boot, build, collect). Billed seconds follow
DigitalOcean's rule (per second, at least 60 s, at least $0.01: see
`dropship.machines.digitalocean.droplet_cost`), so a droplet that lives 20 s
counts 60. Goal: <= 1.1.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from dropship.emulator.server import EmulatorServer
from dropship.emulator.state import Emulator
from dropship.ledger import lives
from dropship.machines.digitalocean import billed_seconds, droplet_cost
from dropship.machines.local import free_port
from dropship.server import LocalPrefectServer

TOKEN = "dop_v1_bench"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="dropship-bench-droplets-"))
    server = LocalPrefectServer(work / "prefect")
    server.start()
    server.export_env()
    os.environ["DIGITALOCEAN_TOKEN"] = TOKEN
    emulator = Emulator(work / "emulator", token=TOKEN, ssh_port=free_port())
    api = EmulatorServer(emulator).start()
    try:
        from prefect.logging.handlers import APILogHandler

        from flows.demo import run_demo

        ok, message = run_demo(work / "demo", "v0.1.0", provider="digitalocean", do_endpoint=api.url)
        APILogHandler().flush()
        if not ok:
            raise SystemExit(message)
        (run_dir,) = (work / "demo" / "state" / "runs").iterdir()
        lifetimes = {life["name"]: life for life in emulator.lifetimes()}
        print(f"{'target':10} {'droplet':28} {'useful s':>8} {'alive s':>8} {'billed s':>8} {'cost $':>8} {'ratio':>6}")
        worst = 0.0
        for life in sorted(lives(run_dir), key=lambda item: item.target):
            assert life.collected is not None
            useful = (life.collected - life.created).total_seconds()
            alive = lifetimes[life.name]["seconds"]
            billed = billed_seconds(alive)
            cost = droplet_cost(alive, lifetimes[life.name]["price_hourly"])
            ratio = billed / useful
            worst = max(worst, ratio)
            print(f"{life.target:10} {life.name:28} {useful:>8.1f} {alive:>8.1f} {billed:>8d} {cost:>8.4f} {ratio:>5.2f}x")
        print(f"worst ratio {worst:.2f}x  {'ok' if worst <= 1.1 else 'over goal (1.1x)'}")
    finally:
        api.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
