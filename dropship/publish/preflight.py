"""Is the repository server usable? Checked before any machine exists.

A release that builds for twenty minutes and then finds the repository
server unreachable, its host key changed or its folder read-only has wasted
every machine. This check does, in a second or two, what publication will
need: for a folder here, that it exists (or can be made) and takes a file;
for a server, an SSH connection that presents the pinned host key and
accepts the key, a writable root, and the tools the publisher runs there
(`flock`, `sha256sum`, `xargs`, `ln`, `mv`).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from dropship.errors import ConfigError, HostKeyMismatch, MachineError
from dropship.ssh import Endpoint, SshSession

REMOTE_TOOLS = ("flock", "sha256sum", "xargs", "ln", "mv", "mkdir", "rm")

# $1 root, $2 probe file name. Exit 3: tools missing, 4: root not a writable folder.
_REMOTE_CHECK = (
    'missing=""; for tool in ' + " ".join(REMOTE_TOOLS) + "; do "
    'command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"; done; '
    'if [ -n "$missing" ]; then echo "missing tools:$missing" >&2; exit 3; fi; '
    'mkdir -p -- "$1" 2>/dev/null && [ -d "$1" ] && : > "$1/$2" 2>/dev/null && rm -f -- "$1/$2" '
    '|| { echo "cannot write into $1" >&2; exit 4; }'
)


def check_local_root(root: Path, label: str) -> str:
    """The folder exists or can be created, and a file can be written in it."""
    if not root.is_absolute():
        raise ConfigError(f"{label}: path {str(root)!r} must be absolute")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".dropship-preflight-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"{label}: cannot write into {root} ({exc.strerror or exc}): fix its permissions or the block's path"
        ) from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise ConfigError(f"{label}: {root} is not writable: fix its permissions or the block's path")
    return str(root)


def check_ssh_root(
    endpoint: Endpoint, private_key: str, root: str, label: str, *, connect_timeout: float = 15.0
) -> str:
    """Connect with the pinned host key, then check the root and the remote tools in one command."""
    where = f"{endpoint.user}@{endpoint.host}:{endpoint.port}"
    if not root.startswith("/"):
        raise ConfigError(f"{label}: path {root!r} must be absolute")
    try:
        with SshSession(endpoint, private_key, connect_timeout=connect_timeout) as session:
            session.run(
                ["sh", "-c", _REMOTE_CHECK, "sh", root, f".dropship-preflight-{secrets.token_hex(4)}"], timeout=60
            )
    except HostKeyMismatch as exc:
        raise ConfigError(f"{label}: {exc}; if the server was really re-keyed, update host_public_key") from exc
    except MachineError as exc:
        raise ConfigError(f"{label}: repository server {where} is not usable: {exc}") from exc
    except ValueError as exc:  # an unreadable private or host key in the block
        raise ConfigError(f"{label}: {exc}") from exc
    return f"{where}:{root}"
