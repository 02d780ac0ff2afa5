from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from dropship.demo import prepare_repository
from dropship.errors import TagError
from dropship.source import archive, repository_path, resolve


def test_tag_resolves_and_archive_has_the_commit_tree(tmp_path: Path) -> None:
    repo = prepare_repository(tmp_path / "hello", "v0.1.0")
    (repo / "uncommitted.txt").write_text("not part of the release")
    revision = resolve(repo, "v0.1.0", is_tag=True)
    assert len(revision.commit) == 40
    out = archive(revision, tmp_path / "src.tar.gz")
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert "dropship.toml" in names and "src/hello.c" in names
    assert "uncommitted.txt" not in names and not any(n.startswith(".git/") for n in names)


def test_unknown_tag_and_non_repository(tmp_path: Path) -> None:
    repo = prepare_repository(tmp_path / "hello", "v0.1.0")
    with pytest.raises(TagError, match="tag 'v9.9.9' does not exist"):
        resolve(repo, "v9.9.9", is_tag=True)
    with pytest.raises(TagError, match="is not a git repository"):
        repository_path("nowhere", tmp_path, tmp_path / "cache")


def test_branch_is_not_taken_for_a_tag(tmp_path: Path) -> None:
    repo = prepare_repository(tmp_path / "hello", "v0.1.0")
    with pytest.raises(TagError):
        resolve(repo, "main", is_tag=True)
    assert resolve(repo, "main", is_tag=False).commit == resolve(repo, "v0.1.0", is_tag=True).commit
