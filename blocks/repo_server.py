"""Where releases are published: a folder here, or a repository server over SSH."""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from dropship.errors import ConfigError
from dropship.publish import LocalPublisher, Publisher, SshPublisher
from dropship.ssh import Endpoint


class RepoServer(Block):
    """The repository root: `releases/<id>/` and the `current` symlink clients are served from.

    With `host` empty the root is a folder of the orchestrator; otherwise it
    is a folder on `host`, reached over SSH with `ssh_private_key`, and the
    server must present `host_public_key` (never trusted on first use).
    """

    _block_type_name = "dropship repo server"
    _block_type_slug = "dropship-repo-server"
    _description = "Repository root (releases/ and the current symlink), local or on a server over SSH."

    path: str = Field(description="Absolute path of the repository root (on `host` when it is set).")
    base_url: str | None = Field(
        default=None,
        description="URL at which clients reach `current` (written into .repo and .sources files and the "
        "release index); defaults to a file:// URL of <path>/current.",
    )
    keep_releases: int = Field(default=5, ge=1, description="Published releases kept for rollback.")
    host: str | None = Field(default=None, description="SSH host of the repository server; empty: publish locally.")
    port: int = Field(default=22, ge=1, le=65535, description="SSH port of the repository server.")
    user: str = Field(default="dropship", description="SSH user on the repository server.")
    ssh_private_key: SecretStr | None = Field(
        default=None, description="Unencrypted OpenSSH private key (ed25519, ECDSA or RSA) of that user."
    )
    host_public_key: str | None = Field(
        default=None, description="The server's host public key line (`ssh-ed25519 AAAA...`), pinned."
    )

    def publisher(self, workdir: str | Path) -> Publisher:
        """The publisher for this server; `workdir` keeps the SSH publisher's mirror of the published tree."""
        if not self.host:
            return LocalPublisher(Path(self.path), keep_releases=self.keep_releases)
        if self.ssh_private_key is None or not self.host_public_key:
            raise ConfigError(f"repo server block: host {self.host} needs ssh_private_key and host_public_key")
        key = hashlib.sha256(f"{self.user}@{self.host}:{self.port}{self.path}".encode()).hexdigest()[:16]
        return SshPublisher(
            Endpoint(self.host, self.port, self.user, self.host_public_key),
            self.ssh_private_key.get_secret_value(),
            self.path,
            mirror=Path(workdir) / "mirror" / key,
            keep_releases=self.keep_releases,
        )

    def url(self) -> str:
        return self.base_url or f"file://{Path(self.path) / 'current'}"
