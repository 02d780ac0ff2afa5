"""`dropship init`: the manifest it writes loads, names the project, and is never overwritten by accident."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dropship.errors import ConfigError
from dropship.manifest import load_manifest
from dropship.scaffold import project_name, write_manifest


def test_written_manifest_loads_with_one_target_per_arch_and_format(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, name="tool", arches=["amd64", "arm64"], formats=["deb", "rpm"])
    manifest = load_manifest(path)
    assert manifest.project.name == "tool"
    assert [t.name for t in manifest.targets] == ["amd64-deb", "arm64-deb", "amd64-rpm", "arm64-rpm"]
    assert manifest.blocks.signing_key == "tool-signing-key" and manifest.blocks.repo_server == "tool-repo"


def test_name_comes_from_the_repository_origin(tmp_path: Path) -> None:
    folder = tmp_path / "checkout"
    folder.mkdir()
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    subprocess.run(
        ["git", "-C", str(folder), "remote", "add", "origin", "git@example.invalid:team/My_Tool.git"], check=True
    )
    assert project_name(folder) == "my-tool"
    assert project_name(tmp_path / "Plain Folder") == "plain-folder"


def test_existing_manifest_is_kept_unless_forced(tmp_path: Path) -> None:
    (tmp_path / "dropship.toml").write_text("mine")
    with pytest.raises(ConfigError, match="--force"):
        write_manifest(tmp_path, name="x", arches=["amd64"], formats=["deb"])
    assert (tmp_path / "dropship.toml").read_text() == "mine"
    write_manifest(tmp_path, name="x", arches=["amd64"], formats=["deb"], force=True)
    assert load_manifest(tmp_path / "dropship.toml").project.name == "x"


def test_unknown_arch_or_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown arch"):
        write_manifest(tmp_path, name="x", arches=["sparc"], formats=["deb"])
    with pytest.raises(ConfigError, match="unknown format"):
        write_manifest(tmp_path, name="x", arches=["amd64"], formats=["apk"])
