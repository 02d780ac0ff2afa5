"""The hand-over: a machine's launcher runs nothing until the orchestrator names the build run."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dropship.errors import MachineError
from dropship.machines.handover import hand_over, worker_log
from dropship.machines.local import LocalProvider
from dropship.machines.userdata import WorkerSpec
from dropship.ssh import Endpoint, SshSession, generate_keypair
from tests.support import IDLE_WORKER, boot


def _recording_worker(record: Path, status: int) -> WorkerSpec:
    """A launcher that writes down what it was started with, then exits `status`."""
    script = f'read -r run < "$6"; printf "%s\\n" "$@" "$run" > {record}; echo launched; exit {status}'
    return WorkerSpec(**{**IDLE_WORKER.__dict__, "launcher": ["sh", "-c", script, "launcher"]})


def _until(what: str, check: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.parametrize("status", [0, 1])
def test_the_launcher_starts_only_with_the_run_it_is_handed(tmp_path: Path, status: int) -> None:
    provider = LocalProvider(tmp_path / "state")
    client = generate_keypair("client")
    record = tmp_path / "launched.txt"
    machine = boot(provider, client, "m", worker=_recording_worker(record, status))
    try:
        time.sleep(1.0)
        assert not record.exists(), "the launcher ran before it was handed a build run"
        assert provider.alive(machine.id), "a machine waiting for its build run is alive"
        endpoint = Endpoint(machine.host, machine.port, machine.user, machine.host_public_key)
        with SshSession(endpoint, client.private_openssh) as ssh:
            hand_over(ssh, machine, "0b5e7d1c-run")
            _until("the launcher ran", lambda: record.exists() and record.read_text().endswith("0b5e7d1c-run\n"))
            assert record.read_text().split("\n")[:4] == ["--pool", "p", "--queue", "q"]
            exit_file = Path(machine.root) / "etc/dropship/worker.exit"
            _until("the launcher ended", exit_file.exists)
            assert exit_file.read_text().strip() == str(status)
            assert "launched" in worker_log(ssh, machine)
            # ended on its own: the machine is not lost for that
            assert provider.alive(machine.id)
            with pytest.raises(MachineError, match="nothing was waiting on /etc/dropship/build-run"):
                hand_over(ssh, machine, "second", seconds=1)
    finally:
        provider.delete(machine.id)


def test_a_machine_whose_launcher_died_is_not_alive_and_refuses_the_hand_over(tmp_path: Path) -> None:
    import os
    import signal

    provider = LocalProvider(tmp_path / "state")
    client = generate_keypair("client")
    machine = boot(provider, client, "m")
    try:
        pid = int((Path(machine.root) / "etc/dropship/worker.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        _until("the launcher died", lambda: not provider.alive(machine.id))
        (Path(machine.root) / "etc/dropship/build-run").unlink()
        endpoint = Endpoint(machine.host, machine.port, machine.user, machine.host_public_key)
        with (
            SshSession(endpoint, client.private_openssh) as ssh,
            pytest.raises(MachineError, match="no hand-over pipe"),
        ):
            hand_over(ssh, machine, "run")
    finally:
        provider.delete(machine.id)


def test_a_launcher_killed_after_the_hand_over_leaves_the_machine_lost(tmp_path: Path) -> None:
    """Its shell records 137 (SIGKILL, an OOM kill): not an ending of its own, so the build's
    liveness check says the machine is lost instead of waiting for build_timeout."""
    provider = LocalProvider(tmp_path / "state")
    client = generate_keypair("client")
    killed = WorkerSpec(**{**IDLE_WORKER.__dict__, "launcher": ["sh", "-c", 'read -r run < "$6"; kill -9 $$', "l"]})
    machine = boot(provider, client, "m", worker=killed)
    try:
        endpoint = Endpoint(machine.host, machine.port, machine.user, machine.host_public_key)
        with SshSession(endpoint, client.private_openssh) as ssh:
            hand_over(ssh, machine, "run")
        exit_file = Path(machine.root) / "etc/dropship/worker.exit"
        _until("the launcher was killed", exit_file.exists)
        assert exit_file.read_text().strip() == "137"
        assert not provider.alive(machine.id)
    finally:
        provider.delete(machine.id)
