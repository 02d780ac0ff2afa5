"""Atomic publication: `releases/<id>/` plus one rename of the `current` symlink.

    <root>/releases/<id>/   a complete repository tree, never edited after the switch
    <root>/current -> releases/<id>

A publication fills a hidden `releases/.incoming-<id>/` (unchanged files are
hard links to the previous release, so only new files take space), renames it
to `releases/<id>`, then renames a fresh symlink over `current`. A reader
(nginx, apt) therefore sees either the whole previous release or the whole
new one. Anything that fails before the rename leaves `current` untouched;
the next publication sweeps the leftover.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dropship.errors import PublishError

CURRENT = "current"
RELEASES = "releases"


@dataclass(frozen=True)
class PublishResult:
    release_id: str
    path: Path
    files: int
    linked: int
    copied: int
    removed_releases: tuple[str, ...]


def hardlink_tree(source: Path, destination: Path) -> tuple[int, int]:
    """Mirror `source` into `destination` with hard links; return (linked, copied)."""
    linked = copied = 0
    for directory, dirnames, filenames in os.walk(source):
        relative = Path(directory).relative_to(source)
        target_dir = destination / relative
        target_dir.mkdir(parents=True, exist_ok=True)
        for name in filenames:
            src = Path(directory) / name
            dst = target_dir / name
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
                continue
            try:
                os.link(src, dst)
                linked += 1
            except OSError:
                shutil.copy2(src, dst)
                copied += 1
    return linked, copied


class LocalPublisher:
    """Publishes into a folder on this machine (the embedded default)."""

    def __init__(self, root: Path, *, keep_releases: int = 5) -> None:
        if keep_releases < 1:
            raise PublishError("keep_releases must be at least 1")
        self.root = root
        self.keep_releases = keep_releases

    @property
    def releases(self) -> Path:
        return self.root / RELEASES

    def current_id(self) -> str | None:
        link = self.root / CURRENT
        if not link.is_symlink():
            return None
        return Path(os.readlink(link)).name

    def current_tree(self) -> Path | None:
        """The tree clients see now, to seed the next release from."""
        current = self.current_id()
        return self.releases / current if current else None

    def release_ids(self) -> list[str]:
        if not self.releases.exists():
            return []
        return sorted(p.name for p in self.releases.iterdir() if p.is_dir() and not p.name.startswith("."))

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def publish(self, tree: Path, release_id: str) -> PublishResult:
        """Publish `tree` as `release_id` and switch `current` to it atomically."""
        if not tree.is_dir():
            raise PublishError(f"nothing to publish: {tree} is not a folder")
        if "/" in release_id or release_id.startswith("."):
            raise PublishError(f"invalid release id {release_id!r}")
        with self._lock():
            final = self.releases / release_id
            if final.exists():
                raise PublishError(f"release {release_id} is already published")
            incoming = self.releases / f".incoming-{release_id}"
            shutil.rmtree(incoming, ignore_errors=True)
            try:
                linked, copied = hardlink_tree(tree, incoming)
                os.rename(incoming, final)
            except OSError as exc:
                shutil.rmtree(incoming, ignore_errors=True)
                raise PublishError(f"could not stage release {release_id}: {exc}") from exc
            self.switch(release_id)
            removed = self._prune()
        return PublishResult(release_id, final, linked + copied, linked, copied, tuple(removed))

    def switch(self, release_id: str) -> None:
        """Point `current` at `release_id` with one rename (atomic on POSIX)."""
        if not (self.releases / release_id).is_dir():
            raise PublishError(f"release {release_id} does not exist under {self.releases}")
        tmp = self.root / f".{CURRENT}.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(f"{RELEASES}/{release_id}", tmp)
        os.replace(tmp, self.root / CURRENT)

    def _prune(self) -> list[str]:
        """Delete releases beyond the newest `keep_releases`, never the current one."""
        for leftover in self.releases.glob(".incoming-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        ids = self.release_ids()
        current = self.current_id()
        removed = []
        for release_id in ids[: max(0, len(ids) - self.keep_releases)]:
            if release_id != current:
                shutil.rmtree(self.releases / release_id, ignore_errors=True)
                removed.append(release_id)
        return removed
