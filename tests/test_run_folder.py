"""The run folder: one owner for every path of a run."""

from __future__ import annotations

from pathlib import Path

from dropship.run_folder import SECRET_DIRS, RunFolder, runs_dir


def test_every_path_of_a_run_is_under_its_folder(tmp_path: Path) -> None:
    folder = RunFolder.of(tmp_path / "state", "0b5c-run")
    assert folder.root == runs_dir(tmp_path / "state") / "0b5c-run" == tmp_path / "state" / "runs" / "0b5c-run"
    named = [folder.plan, folder.summary, folder.jobs, folder.registries, folder.docs, folder.tree, folder.ledger]
    named += [folder.promoted_packages, folder.ssh_key, folder.gnupg, folder.artifacts(), folder.source_archive("a")]
    assert all(p.is_relative_to(folder.root) for p in named)
    assert len({p.name for p in named}) == len(named), "no two run files share a name"
    assert folder.artifacts("amd64-deb") == folder.artifacts() / "amd64-deb"


def test_the_secret_folders_are_the_ones_holding_the_key_and_keyring(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    assert {folder.ssh_key.parent.name, folder.gnupg.name} == set(SECRET_DIRS)
