from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from dropship.machines.local import LocalProvider, _pids_with_marker
from dropship.reaper import reap, run_id_of
from dropship.ssh import generate_keypair
from tests.support import boot


def test_reaps_finished_runs_and_old_machines_only(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "state")
    client = generate_keypair("c")
    over = boot(provider, client, "over", ("dropship-run-over",))
    running = boot(provider, client, "running", ("dropship-run-running",))
    untagged = boot(provider, client, "untagged", ())
    assert run_id_of(over) == "over" and run_id_of(untagged) is None

    finished = {"over": True, "running": False}
    reaped = reap(provider, run_finished=lambda run: finished[run], ttl=timedelta(hours=2))
    assert [(r.machine.name, r.reason) for r in reaped] == [("over", "run over is over")]
    assert _pids_with_marker(over.id) == []

    later = datetime.now(UTC) + timedelta(hours=3)
    reaped = reap(provider, run_finished=lambda run: finished[run], ttl=timedelta(hours=2), now=later)
    assert sorted(r.machine.name for r in reaped) == ["running", "untagged"]
    assert "still claims to run" in {r.machine.name: r.reason for r in reaped}["running"]
    assert provider.list() == []
    assert all(_pids_with_marker(m.id) == [] for m in (running, untagged))
