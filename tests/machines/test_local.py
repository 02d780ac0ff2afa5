from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from dropship.errors import MachineError
from dropship.machines import MachineRequest
from dropship.machines.local import LocalProvider, _pids_with_marker
from dropship.ssh import generate_keypair
from tests.support import boot


def test_create_list_delete_leaves_no_process(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "state")
    client = generate_keypair("client")
    a = boot(provider, client, "a", ("dropship-run-1",))
    b = boot(provider, client, "b", ("dropship-run-2",))
    assert a.port != b.port
    assert {m.name for m in provider.list()} == {"a", "b"}
    assert [m.name for m in provider.list("dropship-run-1")] == ["a"]
    root = Path(a.details["root"])
    assert (root / "etc/ssh/ssh_host_ed25519_key").stat().st_mode & 0o077 == 0
    assert _pids_with_marker(a.id), "the worker runs with the machine's marker"
    # a child that escaped the worker's process group is still found and stopped
    escaped = subprocess.Popen(
        ["sleep", "300"], env={**os.environ, "DROPSHIP_MACHINE_ID": a.id}, start_new_session=True
    )
    provider.delete(a.id)
    # SIGTERM, or SIGKILL after the grace period when a loaded machine is slow to stop
    assert escaped.wait(timeout=20) in (-signal.SIGTERM, -signal.SIGKILL)
    assert _pids_with_marker(a.id) == []
    assert not root.exists()
    assert [m.name for m in provider.list()] == ["b"]
    provider.delete(a.id)  # already gone: no error
    provider.delete(b.id)
    assert provider.list() == []


def test_another_process_can_find_and_delete(tmp_path: Path) -> None:
    """State is on disk: a reaper with a fresh provider object sees the machines."""
    made = boot(LocalProvider(tmp_path / "state"), generate_keypair("c"), "x", ("dropship-run-9",))
    fresh = LocalProvider(tmp_path / "state")
    assert [m.id for m in fresh.list("dropship-run-9")] == [made.id]
    fresh.delete(made.id)
    assert _pids_with_marker(made.id) == []


def test_failing_user_data_cleans_up(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "state")
    request = MachineRequest("broken", (), "s", "i", "r", "#!/bin/sh\necho boom >&2\nexit 4\n", "ssh-ed25519 AAAA")
    with pytest.raises(MachineError, match="user_data exited 4: boom"):
        provider.create(request)
    assert provider.list() == []


def test_machine_processes_get_the_api_credentials_but_no_other_prefect_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local machine's worker must reach a server started with --auth-string-file (it died
    with 401 before): the credentials pass through its environment, the rest of Prefect's
    settings (home, profile) stay the orchestrator's."""
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "admin:s3cret")
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "orchestrator-home"))
    seen = tmp_path / "env.txt"
    # user_data records its environment, then fails: no sshd is needed to see what a machine gets
    script = f"#!/bin/sh\nenv > {seen}\nexit 4\n"
    request = MachineRequest("envcheck", (), "s", "i", "r", script, "ssh-ed25519 AAAA")
    with pytest.raises(MachineError, match="user_data exited 4"):
        LocalProvider(tmp_path / "state").create(request)
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    assert env["PREFECT_API_AUTH_STRING"] == "admin:s3cret"
    assert "PREFECT_HOME" not in env
    assert env["DROPSHIP_MACHINE_ID"] and env["DROPSHIP_MACHINE_ROOT"]
