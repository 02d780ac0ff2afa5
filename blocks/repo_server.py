"""Where releases are published."""

from __future__ import annotations

from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field

from dropship.deploy import LocalPublisher


class RepoServer(Block):
    """The repository root: `releases/<id>/` and the `current` symlink clients are served from."""

    _block_type_name = "dropship repo server"
    _block_type_slug = "dropship-repo-server"
    _description = "Root folder of the published repositories (releases/ and the current symlink)."

    path: str = Field(description="Absolute path of the repository root on this machine.")
    base_url: str | None = Field(
        default=None,
        description="URL at which clients reach `current` (written into .repo and .sources files); "
        "defaults to a file:// URL of <path>/current.",
    )
    keep_releases: int = Field(default=5, ge=1, description="Published releases kept for rollback.")

    def publisher(self) -> LocalPublisher:
        return LocalPublisher(Path(self.path), keep_releases=self.keep_releases)

    def url(self) -> str:
        return self.base_url or f"file://{Path(self.path) / 'current'}"
