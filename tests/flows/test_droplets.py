"""The release on DigitalOcean droplets: pydo over real HTTP against the emulator,
each droplet a real sshd + Prefect worker booted from its user_data."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dropship.demo import prepare_repository
from dropship.emulator.server import EmulatorServer
from dropship.emulator.state import Emulator
from dropship.machines.local import free_port
from tests.flows.test_release import commit_and_tag, machine_processes

pytestmark = pytest.mark.e2e
TOKEN = "dop_v1_release_tests"


@pytest.fixture(scope="module")
def emulator(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Emulator, str]]:
    emu = Emulator(tmp_path_factory.mktemp("emulator"), token=TOKEN, ssh_port=free_port())
    server = EmulatorServer(emu).start()
    os.environ["DIGITALOCEAN_TOKEN"] = TOKEN
    yield emu, server.url
    os.environ.pop("DIGITALOCEAN_TOKEN", None)
    server.stop()


@pytest.fixture(scope="module")
def demo(emulator: tuple[Emulator, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from flows.demo import run_demo

    workdir = tmp_path_factory.mktemp("droplet-demo")
    ok, message = run_demo(workdir, "v0.1.0", provider="digitalocean", do_endpoint=emulator[1])
    assert ok, message
    return {"workdir": workdir, "message": message, "summary": json.loads((workdir / "summary.json").read_text())}


def test_release_on_droplets_publishes_and_deletes_every_droplet(emulator: tuple[Emulator, str], demo: dict[str, Any]) -> None:
    emu, _ = emulator
    summary = demo["summary"]
    assert summary["status"] == "published" and summary["machines_created"] == 6  # 5 targets, 1 integration job
    assert emu.alive() == [] and machine_processes() == []
    lifetimes = emu.lifetimes()
    assert len(lifetimes) == 6 and all(life["deleted"] is not None for life in lifetimes)
    run_tag = f"dropship-run-{summary['run_id']}"
    assert all(run_tag in life["tags"] and "dropship" in life["tags"] for life in lifetimes)
    assert summary["cost"] > 0 and all(t["cost"] > 0 for t in summary["targets"])
    assert "digitalocean machines ($" in demo["message"]
    current = demo["workdir"] / "published" / "current"
    assert len(list(current.glob("pool/main/h/hello/*.deb"))) == 2 and len(list(current.glob("rpm/stable/*/packages/*.rpm"))) == 2


def test_failing_build_on_a_droplet_leaves_no_droplet(emulator: tuple[Emulator, str], demo: dict[str, Any]) -> None:
    from flows.release import release

    emu, _ = emulator
    repo = demo["workdir"] / "hello"
    commit_and_tag(repo, "v0.2.0", {'build = ["sh", "packaging/build.sh", "deb", "arm64"]': 'build = ["sh", "-c", "exit 4"]'})
    state = release(manifest=str(repo / "dropship.toml"), tag="v0.2.0", workdir=str(demo["workdir"] / "state"),
                    provider="digitalocean", return_state=True)
    assert state.is_failed() and "arm64-deb" in state.message and "exit code 4" in state.message
    assert emu.alive() == [] and machine_processes() == []


@pytest.mark.parametrize(
    ("edit", "fault", "expected", "droplets_made"),
    [
        ({'size = "s-2vcpu-4gb"': 'size = "s-64vcpu-9tb"'}, None, "DigitalOcean has no droplet size s-64vcpu-9tb", 0),
        (None, "quota", "exceed your droplet limit", 0),
    ],
)
def test_refused_machines_fail_clearly_with_no_droplet(emulator: tuple[Emulator, str], demo: dict[str, Any], tmp_path: Path,
                                                       edit: Any, fault: str | None, expected: str, droplets_made: int) -> None:
    from flows.release import release

    emu, _ = emulator
    before = len(emu.lifetimes())
    repo = prepare_repository(tmp_path / "hello", "v0.1.0")
    tag = "v0.1.0"
    if edit:
        tag = "v0.9.0"
        commit_and_tag(repo, tag, edit)
    if fault:
        emu.faults.apply(fault)
    try:
        state = release(manifest=str(repo / "dropship.toml"), tag=tag, workdir=str(tmp_path / "state"),
                        provider="digitalocean", return_state=True)
    finally:
        emu.faults.quota = False
    assert state.is_failed() and expected in state.message
    assert TOKEN not in state.message
    assert len(emu.lifetimes()) - before == droplets_made and emu.alive() == []


def test_sigkilled_orchestrator_leaks_droplets_that_the_reaper_deletes(emulator: tuple[Emulator, str], demo: dict[str, Any], tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from prefect.settings import PREFECT_API_URL

    from flows.reap import reap

    emu, _ = emulator
    repo = prepare_repository(tmp_path / "hello", "v0.1.0")
    commit_and_tag(repo, "v0.5.0", {'build = ["sh", "packaging/build.sh", "deb", "amd64"]': 'build = ["sh", "-c", "sleep 600"]'})
    workdir = tmp_path / "state"
    code = (f"from flows.release import release; release(manifest={str(repo / 'dropship.toml')!r}, tag='v0.5.0', "
            f"workdir={str(workdir)!r}, provider='digitalocean', targets=['amd64-deb'])")
    orchestrator = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while not [d for d in emu.alive() if d.status == "active"]:
        assert orchestrator.poll() is None, "the orchestrator ended before its droplet booted"
        assert time.monotonic() < deadline, "no droplet became active"
        time.sleep(0.5)
    time.sleep(5)  # the build is under way on the droplet
    os.kill(orchestrator.pid, signal.SIGKILL)
    orchestrator.wait()
    leaked = emu.alive()
    assert len(leaked) == 1, "SIGKILL skips finally and every hook: the droplet is left behind"

    deleted = reap(provider="digitalocean", workdir=str(workdir), ttl_minutes=0)
    assert len(deleted) == 1 and leaked[0].name in deleted[0]
    assert emu.alive() == [] and machine_processes() == []


@pytest.mark.parametrize(
    ("fault", "published", "expected"),
    [
        ("rate-limit:3", True, ""),
        ("server-error:3", True, ""),
        ("slow-boot:3", True, ""),
        ("delete-error:2", True, ""),
        ("stuck-new", False, "was still 'new' after 4 s; deleted it"),
    ],
)
def test_each_emulator_fault_recovers_or_fails_clearly(emulator: tuple[Emulator, str], demo: dict[str, Any],
                                                      tmp_path: Path, fault: str, published: bool, expected: str) -> None:
    from blocks.digitalocean import DigitalOceanCredentials
    from blocks.repo_server import RepoServer
    from flows.release import release

    emu, _ = emulator
    credentials = DigitalOceanCredentials.load("dropship-digitalocean")
    fast = credentials.model_copy(update={"ready_timeout": 4.0, "poll_interval": 0.5})
    fast.save("dropship-digitalocean", overwrite=True)
    repo_server = RepoServer.load("hello-repo")
    RepoServer(path=str(tmp_path / "published")).save("hello-repo", overwrite=True)  # its own repository
    repo = prepare_repository(tmp_path / "hello", "v0.1.0")
    emu.faults.apply(fault)
    try:
        state = release(manifest=str(repo / "dropship.toml"), tag="v0.1.0", workdir=str(tmp_path / "state"),
                        provider="digitalocean", targets=["amd64-deb"], return_state=True)
    finally:
        emu.faults.__init__()  # type: ignore[misc]
        credentials.save("dropship-digitalocean", overwrite=True)
        repo_server.save("hello-repo", overwrite=True)
    assert state.is_completed() == published, state.message
    if expected:
        assert expected in state.message
    assert emu.alive() == [] and machine_processes() == []
