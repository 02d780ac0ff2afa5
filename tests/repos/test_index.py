"""The release index: history carried from tree to tree, served sizes and hashes, pruned files marked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dropship.errors import RepositoryError
from dropship.repos.files import sha256_file
from dropship.repos.index import (
    IndexedRelease,
    ReleaseIndex,
    load_index,
    locate_artifacts,
    update_index,
)


def _release(tree: Path, release_id: str, cls: str, deb: str, suites: list[str]) -> IndexedRelease:
    release = IndexedRelease(
        release_id, release_id.split("-", 1)[1], cls, "1.0", "c0ffee" * 7, "2026-11-22 10:00 UTC", suites, ["amd64-deb"]
    )
    release.artifacts = locate_artifacts(tree, {"amd64-deb": [deb]}, suites)
    return release


def _pool_file(tmp_path: Path, path: str, content: bytes) -> tuple[Path, Path]:
    """A tree (`tmp_path/tree`) with one package at `path` under it: (the tree, the package)."""
    tree = tmp_path / "tree"
    deb = tree / path
    deb.parent.mkdir(parents=True)
    deb.write_bytes(content)
    return tree, deb


def test_history_is_carried_and_pruned_files_are_marked(tmp_path: Path) -> None:
    tree, first = _pool_file(tmp_path, "pool/main/h/hello/hello_1.0_amd64.deb", b"one")
    index = ReleaseIndex("hello", "http://repo.example.invalid", "hello-release")
    update_index(tree, index, _release(tree, "20261122T100000Z-v1.0.0", "stable", first.name, ["stable"]))
    second = first.with_name("hello_1.1_amd64.deb")
    second.write_bytes(b"two!")
    update_index(tree, index, _release(tree, "20261123T100000Z-main", "development", second.name, ["nightly"]))
    first.unlink()  # retention removed it
    update_index(tree, index, _release(tree, "20261124T100000Z-main", "development", second.name, ["nightly"]))

    data = json.loads((tree / "index.json").read_text())
    assert [r["id"] for r in data["releases"]] == [
        "20261124T100000Z-main",
        "20261123T100000Z-main",
        "20261122T100000Z-v1.0.0",
    ]
    assert [r["available"] for r in data["releases"]] == [True, True, False]
    (artifact,) = data["releases"][0]["artifacts"]
    assert (artifact["size"], artifact["sha256"]) == (4, sha256_file(second))
    assert [r.id for r in load_index(tree)] == [r["id"] for r in data["releases"]]
    page = (tree / "index.html").read_text()
    assert page.count('<section class="release"') == 3 and "files pruned" in page
    assert page.index("Stable releases") < page.index("v1.0.0") < page.index("Development releases")


def test_unreadable_index_and_missing_artifact_are_errors(tmp_path: Path) -> None:
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(RepositoryError, match="unreadable release index"):
        load_index(tmp_path)
    with pytest.raises(RepositoryError, match="hello_9.deb of target amd64-deb is not in the signed tree"):
        locate_artifacts(tmp_path, {"amd64-deb": ["hello_9.deb"]}, ["stable"])


def test_names_are_escaped_in_the_page(tmp_path: Path) -> None:
    tree, deb = _pool_file(tmp_path, "pool/main/x/x/x_1_amd64.deb", b"x")
    release = _release(tree, "20261122T100000Z-v1.0.0", "stable", deb.name, ["stable"])
    update_index(tree, ReleaseIndex("<script>alert(1)</script>", "http://x", "k"), release)
    page = (tree / "index.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_language_packages_and_docs_are_listed_with_their_release(tmp_path: Path) -> None:
    from dropship.repos.index import IndexedLanguagePackage

    tree, deb = _pool_file(tmp_path, "pool/main/h/hello/hello_1.0_amd64.deb", b"one")
    release = _release(tree, "20261122T100000Z-v1.0.0", "stable", deb.name, ["stable"])
    release.language_packages = [
        IndexedLanguagePackage("hello_dropship-1.0-py3-none-any.whl", "python-wheel", "wheel", "pypi", 1350, "ab" * 32),
        IndexedLanguagePackage("hello-1.0.tar.gz", "python-wheel", "sdist", "", 900, "cd" * 32),
    ]
    update_index(tree, ReleaseIndex("hello", "http://repo.example.invalid", "hello-release"), release)
    (loaded,) = load_index(tree)
    assert loaded.language_packages == release.language_packages
    page = (tree / "index.html").read_text()
    assert "hello_dropship-1.0-py3-none-any.whl" in page and "(wheel, to pypi)" in page
    assert "(sdist, collected, not published)" in page and "documentation" not in page
    (tree / "docs" / "1.0").mkdir(parents=True)  # a docs job's output, copied into the tree before indexing
    update_index(tree, ReleaseIndex("hello", "http://repo.example.invalid", "hello-release"), release)
    assert '<a href="docs/1.0/">documentation</a>' in (tree / "index.html").read_text()
