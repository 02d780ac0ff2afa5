from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from dropship.errors import PublishError
from dropship.publish import LocalPublisher, hardlink_tree


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_publish_switches_current_atomically_and_keeps_old(tmp_path: Path) -> None:
    publisher = LocalPublisher(tmp_path / "pub", keep_releases=2)
    assert publisher.current_tree() is None
    publisher.publish(_tree(tmp_path / "t1", {"a": "1", "d/b": "1"}), "r1")
    assert os.readlink(tmp_path / "pub/current") == "releases/r1"
    assert (tmp_path / "pub/current/d/b").read_text() == "1"
    publisher.publish(_tree(tmp_path / "t2", {"a": "2"}), "r2")
    assert (tmp_path / "pub/current/a").read_text() == "2"
    assert (tmp_path / "pub/releases/r1/a").read_text() == "1", "the previous release stays for rollback"
    result = publisher.publish(_tree(tmp_path / "t3", {"a": "3"}), "r3")
    assert result.removed_releases == ("r1",)
    assert publisher.release_ids() == ["r2", "r3"]
    publisher.switch("r2")
    assert (tmp_path / "pub/current/a").read_text() == "2"


def test_unchanged_files_are_hard_links(tmp_path: Path) -> None:
    publisher = LocalPublisher(tmp_path / "pub")
    publisher.publish(_tree(tmp_path / "t1", {"big": "x" * 1000}), "r1")
    seeded = tmp_path / "seed"
    hardlink_tree(publisher.current_tree() or tmp_path, seeded)
    (seeded / "new").write_text("n")
    publisher.publish(seeded, "r2")
    assert os.stat(tmp_path / "pub/releases/r1/big").st_ino == os.stat(tmp_path / "pub/releases/r2/big").st_ino


def test_failures_leave_current_untouched(tmp_path: Path) -> None:
    publisher = LocalPublisher(tmp_path / "pub")
    publisher.publish(_tree(tmp_path / "t1", {"a": "1"}), "r1")
    with pytest.raises(PublishError, match="already published"):
        publisher.publish(_tree(tmp_path / "t2", {"a": "2"}), "r1")
    with pytest.raises(PublishError, match="nothing to publish"):
        publisher.publish(tmp_path / "missing", "r2")
    with pytest.raises(PublishError, match="invalid release id"):
        publisher.publish(tmp_path / "t1", "../evil")
    with pytest.raises(PublishError, match="does not exist"):
        publisher.switch("r9")
    assert os.readlink(tmp_path / "pub/current") == "releases/r1"
    assert (tmp_path / "pub/current/a").read_text() == "1"


def test_a_seeded_tree_is_listed_without_reading_unchanged_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dropship.publish.listing as listing

    publisher = LocalPublisher(tmp_path / "pub")
    publisher.publish(_tree(tmp_path / "t1", {f"pool/p{i}": str(i) for i in range(50)}), "r1")
    seeded = tmp_path / "seed"
    publisher.fetch_current(seeded)
    (seeded / "pool/new").write_text("new")
    read: list[Path] = []
    real = listing.sha256_file
    monkeypatch.setattr(listing, "sha256_file", lambda path: read.append(path) or real(path))
    publisher.publish(seeded, "r2")
    assert [p.name for p in read] == ["new"], "only the new file is read; the 50 hard links are known by inode"
    assert json.loads((tmp_path / "pub/releases/r2/.dropship/release.json").read_text())["files"]["pool/p7"][0] == (
        hashlib.sha256(b"7").hexdigest()
    )


def test_a_first_publish_uploads_and_a_seeded_one_reuses(tmp_path: Path) -> None:
    publisher = LocalPublisher(tmp_path / "pub")
    first = publisher.publish(_tree(tmp_path / "t1", {"a": "1", "d/b": "2"}), "r1")
    assert (first.files, first.reused, first.uploaded) == (2, 0, 2)
    seeded = tmp_path / "seed"
    publisher.fetch_current(seeded)
    (seeded / "new").write_text("n")
    second = publisher.publish(seeded, "r2")
    assert (second.files, second.reused, second.uploaded) == (3, 2, 1)


def test_fetch_current_only_links_just_those_files(tmp_path: Path) -> None:
    publisher = LocalPublisher(tmp_path / "pub")
    publisher.publish(_tree(tmp_path / "t1", {"index.json": "{}", "pool/p.deb": "deb"}), "r1")
    publisher.fetch_current(tmp_path / "index", only={"index.json", "missing.json"})
    assert [p.name for p in (tmp_path / "index").rglob("*")] == ["index.json"]
    assert (tmp_path / "index/index.json").read_text() == "{}"
