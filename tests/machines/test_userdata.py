from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dropship.machines.userdata import WorkerSpec, render

WORKER = WorkerSpec(api_url="http://10.0.0.1:4200/api'; touch /tmp/pwned; '", pool="dropship-builders",
                    queue="hello-amd64-deb-1234", prefect=["/opt/dropship/bin/prefect"], env={"A": "$(id)"})


def test_values_are_never_interpreted(tmp_path: Path) -> None:
    script = render(host_private_key="-----BEGIN OPENSSH PRIVATE KEY-----\n$(id)\n-----END OPENSSH PRIVATE KEY-----\n",
                    host_public_key="ssh-ed25519 AAAA host", authorized_key="ssh-ed25519 BBBB client",
                    work_dir="/var/lib/dropship/work", worker=WorkerSpec(**{**WORKER.__dict__, "prefect": ["true"]}))
    (tmp_path / "ud.sh").write_text(script)
    subprocess.run(["sh", str(tmp_path / "ud.sh")], env={"DROPSHIP_MACHINE_ROOT": str(tmp_path / "root"), "PATH": "/usr/bin:/bin"}, check=True)
    root = tmp_path / "root"
    assert "$(id)" in (root / "etc/ssh/ssh_host_ed25519_key").read_text()
    env = (root / "etc/dropship/worker.env").read_text()
    assert "export A='$(id)'" in env
    assert "PREFECT_API_URL='http://10.0.0.1:4200/api'\"'\"'; touch /tmp/pwned; '\"'\"''" in env
    assert not Path("/tmp/pwned").exists()
    assert (root / "etc/dropship/authorized_keys").read_text() == "ssh-ed25519 BBBB client\n"


def test_worker_serves_only_the_machines_queue() -> None:
    script = render(host_private_key="k", host_public_key="p", authorized_key="a", work_dir="/w", worker=WORKER)
    assert "worker start --pool dropship-builders --work-queue hello-amd64-deb-1234 --name hello-amd64-deb-1234 --type process" in script


def test_multiline_public_key_rejected() -> None:
    with pytest.raises(ValueError, match="single lines"):
        render(host_private_key="k", host_public_key="a\nb", authorized_key="a", work_dir="/w", worker=WORKER)
