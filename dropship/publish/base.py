"""What every publisher shares: the result, the protocol, release id rules."""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dropship.errors import PublishError

CURRENT = "current"
RELEASES = "releases"
INCOMING_PREFIX = ".incoming-"
LOCK_FILE = ".lock"
BEEN_CURRENT = ".dropship/been-current"
"""Written into a release's folder when `current` is switched to it: a release
staged by a publication that died before its switch never gets one, and a
plain rollback only goes back to releases that have it."""

Progress = Callable[[str, int, int], None]
"""progress(step, done, total): called as files are staged, for CLIs and tests."""


@dataclass(frozen=True)
class PublishResult:
    release_id: str
    location: str
    """Where `current` now points, as the server sees it."""
    files: int
    reused: int
    """Files hard-linked from the previous release instead of copied or sent."""
    uploaded: int
    bytes_uploaded: int
    """File bytes sent over the network (0 for a local folder)."""
    removed_releases: tuple[str, ...]


class Publisher(Protocol):
    def current_id(self) -> str | None: ...

    def release_ids(self) -> list[str]: ...

    def fetch_current(self, destination: Path, only: Collection[str] | None = None) -> None:
        """Make `destination` a copy of the tree clients see now (empty if none); with `only`, just those
        files of it (e.g. `index.json`, which is all a rollback reads)."""

    def publish(self, tree: Path, release_id: str, progress: Progress | None = None) -> PublishResult: ...

    def switch(self, release_id: str) -> None: ...

    def rollback(self, to: str | None = None) -> tuple[str | None, str]:
        """Switch `current` to `to`, or to the release before it; return (previous, new)."""

    def locked(self, holder: str = "", waiting: Callable[[str], None] | None = None) -> AbstractContextManager[None]:
        """The repository's lock, held across reading `current`, signing and publishing."""


def check_release_id(release_id: str) -> None:
    if not release_id or "/" in release_id or release_id.startswith(".") or release_id in (CURRENT, RELEASES):
        raise PublishError(f"invalid release id {release_id!r}")


def rollback_target(ids: list[str], current: str | None, to: str | None, been_current: set[str] | None = None) -> str:
    """The release a rollback switches to: `to`, or the one published before `current`.

    Release ids start with their UTC publication time, so their order is the
    order of publication. Without `to`, only releases that were current once
    (`been_current`) are candidates: a release whose publication died between
    staging and switch is complete but was never served, and must not be
    served by surprise.
    """
    if to is not None:
        if to not in ids:
            raise PublishError(f"release {to!r} is not on the server; it has: {', '.join(ids) or 'none'}")
        if to == current:
            raise PublishError(f"release {to} is already current")
        return to
    if current is None:
        raise PublishError("nothing is published yet: there is nothing to roll back")
    # Releases published before the marker existed predate the oldest marked one.
    marked = been_current or set()
    first = min(marked) if marked else None
    older = [i for i in ids if i < current and (first is None or i in marked or i < first)]
    if not older:
        raise PublishError(f"no release older than the current {current} that was ever current is kept on the server")
    return older[-1]


def prune_candidates(ids: list[str], current: str | None, keep: int) -> list[str]:
    """Releases beyond the newest `keep`, never the current one (it may be an old one after a rollback)."""
    return [i for i in ids[: max(0, len(ids) - keep)] if i != current]
