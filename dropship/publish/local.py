"""Publication into a folder of this machine (the embedded default, and the demo's)."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from dropship.errors import PublishError
from dropship.publish.base import (
    BEEN_CURRENT,
    CURRENT,
    INCOMING_PREFIX,
    LOCK_FILE,
    RELEASES,
    Progress,
    PublishResult,
    check_release_id,
    prune_candidates,
    rollback_target,
)
from dropship.publish.listing import META_DIR, META_FILE, Listing, list_tree


def hardlink_tree(source: Path, destination: Path) -> tuple[int, int]:
    """Mirror `source` into `destination` with hard links; return (linked, copied)."""
    linked = copied = 0
    for directory, dirnames, filenames in os.walk(source):
        relative = Path(directory).relative_to(source)
        if relative == Path(".") and META_DIR in dirnames:
            dirnames.remove(META_DIR)  # the listing belongs to that release only
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


def _inode(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return (stat.st_dev, stat.st_ino)


class LocalPublisher:
    """Publishes into `root` on this machine; a flock serialises publishers."""

    def __init__(self, root: Path, *, keep_releases: int = 5, lock_timeout: float = 1800.0) -> None:
        if keep_releases < 1:
            raise PublishError("keep_releases must be at least 1")
        self.root = root
        self.keep_releases = keep_releases
        self.lock_timeout = lock_timeout
        self._depth = 0

    @property
    def releases(self) -> Path:
        return self.root / RELEASES

    def current_id(self) -> str | None:
        link = self.root / CURRENT
        if not link.is_symlink():
            return None
        return Path(os.readlink(link)).name

    def current_tree(self) -> Path | None:
        current = self.current_id()
        return self.releases / current if current else None

    def fetch_current(self, destination: Path, only: Collection[str] | None = None) -> None:
        destination.mkdir(parents=True, exist_ok=True)
        current = self.current_tree()
        if current is None or not current.is_dir():
            return
        if only is None:
            hardlink_tree(current, destination)
            return
        for path in only:
            if (current / path).is_file():
                (destination / path).parent.mkdir(parents=True, exist_ok=True)
                os.link(current / path, destination / path)

    def _known_inodes(self) -> dict[tuple[int, int], str]:
        """sha256 of the current release's files by inode: a tree seeded from it (hard links)
        is then listed without reading a single unchanged package again."""
        current = self.current_tree()
        if current is None or not (current / META_FILE).is_file():
            return {}
        listing = Listing.from_json((current / META_FILE).read_text(), str(current / META_FILE))
        known = {}
        for path, entry in listing.files.items():
            try:
                stat = (current / path).stat()
            except OSError:
                continue
            known[(stat.st_dev, stat.st_ino)] = entry.sha256
        return known

    def release_ids(self) -> list[str]:
        if not self.releases.exists():
            return []
        return sorted(p.name for p in self.releases.iterdir() if p.is_dir() and not p.name.startswith("."))

    @contextmanager
    def locked(self, holder: str = "", waiting: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the repository's flock (re-entrant): read, sign and publish as one critical section.

        The kernel drops a flock when its holder dies, so a killed release never
        leaves the lock held. While another holder has it, `waiting` is told
        who (every 30 s) and the call waits up to `lock_timeout`.
        """
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK_FILE).open("a+") as handle:
            started = time.monotonic()
            told = -1.0
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waited = time.monotonic() - started
                    if waited > self.lock_timeout:
                        raise PublishError(
                            f"the publish lock on {self.root} is still held by {self._holder(handle)} after "
                            f"{self.lock_timeout:.0f} s; current release unchanged"
                        ) from None
                    if waiting is not None and (told < 0 or waited - told >= 30):
                        waiting(f"waiting for the publish lock on {self.root}, held by {self._holder(handle)}")
                        told = waited
                    time.sleep(0.2)
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(f"{holder or 'an unnamed publisher'} (pid {os.getpid()})\n")
                handle.flush()
                self._depth = 1
                yield
            finally:
                self._depth = 0
                fcntl.flock(handle, fcntl.LOCK_UN)

    @staticmethod
    def _holder(handle: IO[str]) -> str:
        try:
            handle.seek(0)
            return handle.read().strip() or "another publisher"
        except OSError:
            return "another publisher"

    def publish(self, tree: Path, release_id: str, progress: Progress | None = None) -> PublishResult:
        """Publish `tree` as `release_id` and switch `current` to it atomically."""
        if not tree.is_dir():
            raise PublishError(f"nothing to publish: {tree} is not a folder")
        check_release_id(release_id)
        with self.locked():
            final = self.releases / release_id
            if final.exists():
                raise PublishError(f"release {release_id} is already published")
            incoming = self.releases / f"{INCOMING_PREFIX}{release_id}"
            shutil.rmtree(incoming, ignore_errors=True)
            try:
                linked, copied = hardlink_tree(tree, incoming)
                known = self._known_inodes()
                listing = list_tree(incoming, release_id, known_inodes=known)
                # reused: files the previous release has (a tree seeded from it shares their inodes)
                reused = sum(1 for path in listing.files if _inode(incoming / path) in known)
                (incoming / META_DIR).mkdir(exist_ok=True)
                (incoming / META_FILE).write_text(listing.to_json())
                os.rename(incoming, final)
            except OSError as exc:
                shutil.rmtree(incoming, ignore_errors=True)
                raise PublishError(f"could not stage release {release_id}: {exc}") from exc
            if progress is not None:
                progress("staged", linked + copied, linked + copied)
            self._switch(release_id)
            removed = self._prune()
        return PublishResult(
            release_id, str(final), linked + copied, reused, linked + copied - reused, 0, tuple(removed)
        )

    def switch(self, release_id: str) -> None:
        """Point `current` at a release already published, under the lock."""
        with self.locked():
            self._switch(release_id)

    def rollback(self, to: str | None = None) -> tuple[str | None, str]:
        """Switch to `to` or the release before the current one; return (from, to). One locked step."""
        with self.locked():
            current = self.current_id()
            ids = self.release_ids()
            been = {i for i in ids if (self.releases / i / BEEN_CURRENT).is_file()}
            target = rollback_target(ids, current, to, been)
            self._switch(target)
        return current, target

    def _switch(self, release_id: str) -> None:
        """Point `current` at `release_id` with one rename (atomic on POSIX)."""
        check_release_id(release_id)
        if not (self.releases / release_id / META_FILE).is_file():
            raise PublishError(f"release {release_id} does not exist (whole) under {self.releases}")
        tmp = self.root / f".{CURRENT}.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(f"{RELEASES}/{release_id}", tmp)
        os.replace(tmp, self.root / CURRENT)
        (self.releases / release_id / BEEN_CURRENT).touch()

    def _prune(self) -> list[str]:
        for leftover in self.releases.glob(f"{INCOMING_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)
        removed = prune_candidates(self.release_ids(), self.current_id(), self.keep_releases)
        for release_id in removed:
            shutil.rmtree(self.releases / release_id, ignore_errors=True)
        return removed
