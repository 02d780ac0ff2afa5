"""The project's source at the commit being released, read from git.

Builds use `git archive` of the exact commit (never a working tree with
uncommitted edits), so what is tested, built and hashed is what was tagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path

from dropship.errors import CommandError, TagError
from dropship.process import run


@dataclass(frozen=True)
class Revision:
    """A resolved commit of the project's repository."""

    repo: Path
    commit: str
    commit_time: datetime


def _git(repo: Path, *args: str) -> str:
    return run(["git", "-C", str(repo), *args], what="git")


def repository_path(source: str, manifest_dir: Path, cache_dir: Path) -> Path:
    """A local repository for `source`: a path as is, a URL as a mirror in `cache_dir`."""
    if "://" not in source and not source.startswith("git@"):
        path = (manifest_dir / source).resolve()
        if not (path / ".git").exists() and not (path / "HEAD").exists():
            raise TagError(f"source {source!r}: {path} is not a git repository")
        return path
    mirror = cache_dir / sha256(source.encode()).hexdigest()[:16]
    if mirror.exists():
        run(["git", "-C", str(mirror), "fetch", "--prune", "--tags", "origin"], what="git fetch")
    else:
        mirror.parent.mkdir(parents=True, exist_ok=True)
        run(["git", "clone", "--mirror", "--", source, str(mirror)], what="git clone")
    return mirror


def resolve(repo: Path, name: str, *, is_tag: bool) -> Revision:
    """Resolve a tag or ref to a commit; an unknown one is a `TagError`."""
    spec = f"refs/tags/{name}^{{commit}}" if is_tag else f"{name}^{{commit}}"
    try:
        commit = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", spec).strip()
    except CommandError as exc:
        kind = "tag" if is_tag else "ref"
        raise TagError(f"{kind} {name!r} does not exist in {repo}") from exc
    stamp = int(_git(repo, "show", "-s", "--format=%ct", commit).strip())
    return Revision(repo, commit, datetime.fromtimestamp(stamp, tz=UTC))


def archive(revision: Revision, destination: Path) -> Path:
    """Write a .tar.gz of the commit's tree (no .git) to `destination`."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    _git(revision.repo, "archive", "--format=tar.gz", f"--output={destination}", revision.commit)
    return destination
