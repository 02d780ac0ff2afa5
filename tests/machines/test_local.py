from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from dropship.errors import MachineError
from dropship.machines import MachineRequest
from dropship.machines.local import LocalProvider, _alive, _pids_with_marker
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
    root = Path(a.root)
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


BUILD_CONTAINER = """
import os, sys, time
from pathlib import Path
from dropship.containers import BuildDocker, container_environment
docker = BuildDocker(Path(sys.argv[1]), "t").__enter__()
client = docker.daemon.client
client.images.build(path=sys.argv[2], tag="sleeper:1", network_mode="none")
client.containers.run("sleeper:1", ["/sleeper"], detach=True, network_mode="host",
                      environment=container_environment({}, os.environ["DROPSHIP_MACHINE_ID"]))
print("running", flush=True)
time.sleep(600)
"""

IMAGE_BUILD = """
import sys
from pathlib import Path
from dropship.oci_build import build_image
print("running", flush=True)
build_image(target="t", workspace=Path(sys.argv[1]), source=Path(sys.argv[2]), dockerfile="Dockerfile",
            platform="linux/amd64", version="1.0.0", out_dir=Path(sys.argv[1]) / "image")
"""


def _shim_children(daemon: Path) -> list[int]:
    """The processes the containerd shims of `daemon`'s dockerd run (a shim works under the exec root)."""
    from dropship.dockerd import short_folder

    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "cwd").startswith(f"{short_folder(daemon)}/"):
                found += [int(p) for p in (entry / "task" / entry.name / "children").read_text().split()]
        except OSError:
            continue
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="dockerd needs root")
@pytest.mark.parametrize(
    ("script", "dockerfile"),
    [
        (BUILD_CONTAINER, "FROM scratch\nCOPY sleeper /sleeper\n"),
        (IMAGE_BUILD, 'FROM scratch\nCOPY sleeper /sleeper\nRUN ["/sleeper"]\n'),
    ],
    ids=["build-container", "image-build"],
)
def test_a_builds_dockerd_killed_with_its_machine_leaves_nothing(tmp_path: Path, script: str, dockerfile: str) -> None:
    """A build killed mid-container (its machine deleted) takes its dockerd, containerd, shim and the
    container's process with it, and the daemon's mounts and /tmp folder are swept: a build container
    (whose process carries the machine's marker) and an image target's `RUN` step (whose does not: the
    sweep finds it through its shim, under the daemon's exec root in the machine's workspace)."""
    import sys
    import time

    from dropship.dockerd import DOCKERD_FOLDER, short_folder

    context = tmp_path / "image"
    context.mkdir()
    (context / "s.c").write_text("#include <unistd.h>\nint main(void) { sleep(600); return 0; }\n")
    subprocess.run(["gcc", "-static", "-O2", "-o", str(context / "sleeper"), str(context / "s.c")], check=True)
    (context / "Dockerfile").write_text(dockerfile)
    provider = LocalProvider(tmp_path / "state")
    machine = boot(provider, generate_keypair("client"), "c")
    workspace = Path(machine.work_dir)
    workspace.mkdir(parents=True, exist_ok=True)
    daemon = workspace / DOCKERD_FOLDER
    build = subprocess.Popen(
        [sys.executable, "-c", script, str(workspace), str(context)],
        env={**os.environ, "DROPSHIP_MACHINE_ID": machine.id},
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert build.stdout is not None and build.stdout.readline() == b"running\n"
    deadline = time.monotonic() + 60
    while not (running := _shim_children(daemon)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running, "the container never ran"
    commands = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] for pid in _pids_with_marker(machine.id)]
    assert {b"/usr/sbin/dockerd", b"containerd", b"/usr/bin/containerd-shim-runc-v2"} <= set(commands)
    provider.delete(machine.id)
    assert build.wait(timeout=20) in (-signal.SIGTERM, -signal.SIGKILL)
    assert _pids_with_marker(machine.id) == []
    assert _shim_children(daemon) == [] and not any(_alive(pid) for pid in running)  # killed (a zombie at most)
    mounts = Path("/proc/self/mounts").read_text()
    assert str(daemon) not in mounts and str(short_folder(daemon)) not in mounts
    assert not short_folder(daemon).exists() and not Path(machine.root).exists()


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
