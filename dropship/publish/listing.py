"""What a published release contains: every file's sha256 and size, and its symlinks.

The listing is written into each release as `.dropship/release.json`. The next
publication reads it back to know which files the server already has (they
are hard-linked there instead of sent again), a rollback reads it to know the
release exists whole, and an orchestrator that lost its local copy of the
published tree rebuilds it from the listing, downloading only what it lacks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dropship.errors import PublishError
from dropship.repos.files import sha256_file

META_DIR = ".dropship"
META_FILE = f"{META_DIR}/release.json"


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass
class Listing:
    release_id: str
    published_at: str = ""
    files: dict[str, FileEntry] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "release_id": self.release_id,
                "published_at": self.published_at,
                "files": {path: [e.sha256, e.size] for path, e in sorted(self.files.items())},
                "symlinks": dict(sorted(self.symlinks.items())),
            },
            indent=0,
        )

    @classmethod
    def from_json(cls, text: str, where: str) -> Listing:
        try:
            data = json.loads(text)
            return cls(
                release_id=str(data["release_id"]),
                published_at=str(data.get("published_at", "")),
                files={str(p): FileEntry(str(v[0]), int(v[1])) for p, v in data["files"].items()},
                symlinks={str(p): str(t) for p, t in data.get("symlinks", {}).items()},
            )
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise PublishError(f"{where}: unreadable release listing: {exc}") from exc

    def by_sha256(self) -> dict[str, str]:
        """One path per content, to hard-link unchanged files from."""
        index: dict[str, str] = {}
        for path, entry in self.files.items():
            index.setdefault(entry.sha256, path)
        return index

    def directories(self) -> set[str]:
        dirs: set[str] = set()
        for path in [*self.files, *self.symlinks]:
            parent = os.path.dirname(path)
            while parent and parent not in dirs:
                dirs.add(parent)
                parent = os.path.dirname(parent)
        return dirs


def list_tree(tree: Path, release_id: str, *, known_inodes: dict[tuple[int, int], str] | None = None) -> Listing:
    """List `tree` with every file's sha256.

    `known_inodes` maps (device, inode) to a sha256 already established (the
    content-addressed mirror of the published tree that the new tree is
    hard-linked from), so a re-publish of a large repository reads only the
    files that are new, not every package again.
    """
    known_inodes = known_inodes or {}
    listing = Listing(release_id, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    for directory, dirnames, filenames in os.walk(tree):
        dirnames[:] = [d for d in dirnames if not (directory == str(tree) and d == META_DIR)]
        for name in [*filenames, *[d for d in dirnames if os.path.islink(os.path.join(directory, d))]]:
            path = Path(directory) / name
            relative = path.relative_to(tree).as_posix()
            if any(c in relative for c in "\n\\\0"):
                raise PublishError(f"refusing to publish {relative!r}: newline or backslash in a file name")
            if path.is_symlink():
                listing.symlinks[relative] = os.readlink(path)
                continue
            stat = path.stat()
            sha = known_inodes.get((stat.st_dev, stat.st_ino)) or sha256_file(path)
            listing.files[relative] = FileEntry(sha, stat.st_size)
    return listing
