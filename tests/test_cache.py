from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

from dropship.cache import LocalArtifactStore, content_hashes, tree_files, why_built
from dropship.demo import prepare_repository
from dropship.manifest import parse_manifest

MANIFEST: dict[str, Any] = {
    "project": {"name": "p"},
    "targets": [
        {
            "name": "lib",
            "arch": "amd64",
            "format": "deb",
            "build": ["make", "lib"],
            "artifacts": ["*.deb"],
            "rebuild_patterns": ["^lib/"],
        },
        {
            "name": "app",
            "arch": "amd64",
            "format": "deb",
            "build": ["make", "app"],
            "artifacts": ["*.deb"],
            "rebuild_patterns": ["^app/"],
            "depends_on": ["lib"],
        },
        {
            "name": "docs",
            "arch": "amd64",
            "format": "deb",
            "build": ["make", "docs"],
            "artifacts": ["*.deb"],
            "rebuild_patterns": ["^docs/", r"\.md$"],
        },
    ],
}
FILES = [("lib/a.c", "1" * 40), ("app/main.c", "2" * 40), ("docs/guide.md", "3" * 40), ("README", "4" * 40)]


def _hashes(
    files: list[tuple[str, str]] = FILES, manifest: dict[str, Any] = MANIFEST, version: str | None = None
) -> dict[str, str]:
    return {name: h.digest for name, h in content_hashes(parse_manifest(manifest), files, version=version).items()}


def _edit(path: str, blob: str) -> list[tuple[str, str]]:
    return [(p, blob if p == path else b) for p, b in FILES]


def test_hash_is_stable_and_covers_only_matched_files() -> None:
    base = _hashes()
    assert base == _hashes()
    assert _hashes(_edit("README", "9" * 40)) == base, "a file no pattern matches rebuilds nothing"
    assert content_hashes(parse_manifest(MANIFEST), FILES, version=None)["lib"].files == (("lib/a.c", "1" * 40),)


def test_a_change_rebuilds_the_target_and_its_dependents_only() -> None:
    base = _hashes()
    after_app = _hashes(_edit("app/main.c", "9" * 40))
    assert after_app["app"] != base["app"] and after_app["lib"] == base["lib"] and after_app["docs"] == base["docs"]
    after_lib = _hashes(_edit("lib/a.c", "9" * 40))
    assert after_lib["lib"] != base["lib"] and after_lib["app"] != base["app"], "app depends on lib"
    assert after_lib["docs"] == base["docs"]


def test_recipe_and_version_are_covered() -> None:
    base = _hashes()
    changed = copy.deepcopy(MANIFEST)
    changed["targets"][2]["build"] = ["make", "docs", "-j2"]
    assert _hashes(manifest=changed)["docs"] != base["docs"]
    assert _hashes(manifest=changed)["lib"] == base["lib"]
    assert _hashes(version="1.0.0") != _hashes(version="1.0.1")
    assert _hashes(version=None) == base


def test_tree_files_reads_the_commit_not_the_working_tree(tmp_path: Path) -> None:
    repo = prepare_repository(tmp_path / "hello", "v0.1.0")
    commit = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    (repo / "src" / "hello.c").write_text("uncommitted edit")
    files = dict(tree_files(repo, commit))
    blob = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", f"{commit}:src/hello.c"], capture_output=True, text=True
    ).stdout.strip()
    assert files["src/hello.c"] == blob and "dropship.toml" in files


def test_store_round_trip_tamper_and_why(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    artifact = tmp_path / "hello_1_amd64.deb"
    artifact.write_bytes(b"package bytes")
    digest = "a" * 64
    assert store.get(digest, tmp_path / "out").problem == "not in the store"
    store.put(digest, "amd64-deb", "1", [artifact], (("src/hello.c", "1" * 40),))
    lookup = store.get(digest, tmp_path / "out")
    assert lookup.build is not None and (tmp_path / "out" / artifact.name).read_bytes() == b"package bytes"
    previous = store.last("amd64-deb")
    assert previous is not None and previous.digest == digest
    (tmp_path / "store" / "objects" / digest / artifact.name).write_bytes(b"tampered")
    tampered = store.get(digest, tmp_path / "out2")
    assert tampered.build is None and "fails its sha256 check" in tampered.problem
    assert not (tmp_path / "out2").exists()

    current = content_hashes(parse_manifest(MANIFEST), FILES, version=None)["lib"]
    assert why_built(None, current, forced=False) == "first build"
    assert why_built(previous, current, forced=True) == "forced"
    assert why_built(previous, current, forced=False) == "changed: lib/a.c, src/hello.c"


def test_build_or_reuse_decides_once_and_says_why(tmp_path: Path) -> None:
    from dropship.cache import build_or_reuse

    store = LocalArtifactStore(tmp_path / "store")
    current = content_hashes(parse_manifest(MANIFEST), FILES, version=None)["lib"]
    first = build_or_reuse(store, "lib", current, tmp_path / "run1", forced=False)
    assert first.reused is None and first.reason == "first build"
    artifact = tmp_path / "lib_1_amd64.deb"
    artifact.write_bytes(b"built once")
    store.put(current.digest, "lib", "1", [artifact], current.files)
    hit = build_or_reuse(store, "lib", current, tmp_path / "run2", forced=False)
    assert hit.reused is not None and hit.reason == f"cache hit {current.digest[:12]}"
    assert (tmp_path / "run2" / artifact.name).read_bytes() == b"built once", "the checked files are in the run"
    forced = build_or_reuse(store, "lib", current, tmp_path / "run3", forced=True)
    assert forced.reused is None and forced.reason == "forced" and not (tmp_path / "run3").exists()
    (tmp_path / "store" / "objects" / current.digest / artifact.name).write_bytes(b"rotted")
    unusable = build_or_reuse(store, "lib", current, tmp_path / "run4", forced=False)
    assert unusable.reused is None and unusable.reason.startswith("rebuilt: cached build unusable (")
    changed = content_hashes(parse_manifest(MANIFEST), _edit("lib/a.c", "9" * 40), version=None)["lib"]
    assert build_or_reuse(store, "lib", changed, tmp_path / "run5", forced=False).reason == "changed: lib/a.c"
