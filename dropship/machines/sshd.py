"""The OpenSSH server of a local machine (and of the emulator's process droplets): where sshd is,
and the configuration it runs with, rooted in the machine's folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dropship.errors import MachineError


def find_sshd() -> str:
    path = shutil.which("sshd", path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin")
    if not path:
        raise MachineError("sshd not found: install Debian's openssh-server")
    return path


def sshd_config(root: Path, address: str, port: int, user: str) -> str:
    return "\n".join(
        [
            f"Port {port}",
            f"ListenAddress {address}",
            f"HostKey {root}/etc/ssh/ssh_host_ed25519_key",
            f"AuthorizedKeysFile {root}/etc/dropship/authorized_keys",
            f"PidFile {root}/run/sshd.pid",
            f"AllowUsers {user}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PrintMotd no",
            "LogLevel INFO",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )
