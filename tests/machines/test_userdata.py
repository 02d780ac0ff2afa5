from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dropship.errors import MachineError
from dropship.machines.userdata import WorkerSpec, render

WORKER = WorkerSpec(
    api_url="http://10.0.0.1:4200/api'; touch /tmp/pwned; '",
    pool="dropship-builders",
    queue="hello-amd64-deb-1234",
    launcher=["/opt/dropship/venv/bin/python", "-m", "tasks.machine_worker"],
    env={"A": "$(id)"},
)


def test_values_are_never_interpreted(tmp_path: Path) -> None:
    script = render(
        host_private_key="-----BEGIN OPENSSH PRIVATE KEY-----\n$(id)\n-----END OPENSSH PRIVATE KEY-----\n",
        host_public_key="ssh-ed25519 AAAA host",
        authorized_key="ssh-ed25519 BBBB client",
        work_dir="/var/lib/dropship/work",
        worker=WorkerSpec(**{**WORKER.__dict__, "launcher": ["true"]}),
    )
    (tmp_path / "ud.sh").write_text(script)
    subprocess.run(
        ["sh", str(tmp_path / "ud.sh")],
        env={"DROPSHIP_MACHINE_ROOT": str(tmp_path / "root"), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    root = tmp_path / "root"
    assert "$(id)" in (root / "etc/ssh/ssh_host_ed25519_key").read_text()
    env = (root / "etc/dropship/worker.env").read_text()
    assert "export A='$(id)'" in env
    assert "PREFECT_API_URL='http://10.0.0.1:4200/api'\"'\"'; touch /tmp/pwned; '\"'\"''" in env
    assert not Path("/tmp/pwned").exists()
    assert (root / "etc/dropship/authorized_keys").read_text() == "ssh-ed25519 BBBB client\n"


def test_multiline_public_key_rejected() -> None:
    with pytest.raises(MachineError, match="single lines"):
        render(host_private_key="k", host_public_key="a\nb", authorized_key="a", work_dir="/w", worker=WORKER)


def test_droplet_user_data_pins_the_host_key_and_holds_nothing_else() -> None:
    from dropship.machines.userdata import render_bootstrap

    script = render_bootstrap(
        host_private_key="-----BEGIN OPENSSH PRIVATE KEY-----\nk\n-----END OPENSSH PRIVATE KEY-----\n",
        host_public_key="ssh-ed25519 AAAA pinned",
    )
    assert "rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub" in script
    assert "HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\n" in script
    assert 'kill -HUP "$(cat /run/sshd.pid)"' in script and "systemctl reload ssh" in script
    for absent in ("PREFECT", "prefect", "worker", "authorized_keys", "pip"):
        assert absent not in script


def test_droplet_user_data_refuses_to_run_as_a_local_machine(tmp_path: Path) -> None:
    """On this host it would rewrite /etc/ssh: it stops before touching anything."""
    from dropship.machines.userdata import render_bootstrap

    (tmp_path / "ud.sh").write_text(render_bootstrap(host_private_key="k", host_public_key="ssh-ed25519 AAAA p"))
    done = subprocess.run(
        ["sh", str(tmp_path / "ud.sh")],
        env={"DROPSHIP_MACHINE_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and "not for a local machine" in done.stderr
