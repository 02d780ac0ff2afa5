"""The SSH connection to the repository server dropped mid-upload, and gpg
failing mid-signing: a clear error at once, `current` unchanged, the lock
free, and the next publication complete."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropship.errors import PublishError, RepositoryError
from dropship.publish import LocalPublisher, SshPublisher
from dropship.repos.index import IndexedRelease
from dropship.repos.tree import sign_and_index
from dropship.signing import Signer
from tests.faults.harness import example_manifest, published_versions, stable_release
from tests.servers import RepoServerHost, start_repo_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RepoServerHost]:
    host = start_repo_server(tmp_path / "server")
    yield host
    host.stop()


def _release(version: str) -> IndexedRelease:
    return stable_release(f"2026010{version[2]}T000000Z-v{version}", version)


def _signed_tree(publisher: LocalPublisher | SshPublisher, work: Path, version: str, deb: Path, key: str) -> Path:
    tree = work / f"tree-{version}"
    publisher.fetch_current(tree)
    with Signer([key], home=work / "gnupg") as signer:
        sign_and_index(
            tree, example_manifest(), _release(version), {"amd64-deb": [deb]}, signer, base_url="http://127.0.0.1/"
        )
    return tree


def test_ssh_dropped_mid_upload(
    server: RepoServerHost, tmp_path: Path, signing_key: str, example_packages: dict[str, dict[str, Path]]
) -> None:
    publisher = SshPublisher(server.endpoint, server.private_key, str(server.root), mirror=tmp_path / "mirror")
    debs = {v: example_packages[v]["amd64-deb"] for v in ("0.1.0", "0.2.0", "0.3.0")}
    publisher.publish(_signed_tree(publisher, tmp_path, "0.1.0", debs["0.1.0"], signing_key), _release("0.1.0").id)
    tree = _signed_tree(publisher, tmp_path, "0.2.0", debs["0.2.0"], signing_key)
    for extra in range(20):  # enough files that the drop lands mid-upload
        (tree / "pool" / f"extra-{extra}.bin").write_bytes(os.urandom(200_000))

    def drop(step: str, done: int, total: int) -> None:
        if done == 3:
            server.drop_connections()

    started = time.monotonic()
    with pytest.raises(PublishError, match="current release unchanged") as failure:
        publisher.publish(tree, _release("0.2.0").id, progress=drop)
    seconds = time.monotonic() - started
    print(f"\nFIGURE ssh-dropped-mid-upload: error after {seconds:.1f} s: {failure.value}")
    assert seconds < 60 and server.endpoint.host in str(failure.value)
    assert os.readlink(server.root / "current") == f"releases/{_release('0.1.0').id}"
    assert published_versions(server.root / "current") == {"0.1.0"}

    started = time.monotonic()
    publisher.publish(_signed_tree(publisher, tmp_path, "0.3.0", debs["0.3.0"], signing_key), _release("0.3.0").id)
    assert time.monotonic() - started < 30, "the dropped connection left no lock behind"
    assert published_versions(server.root / "current") == {"0.1.0", "0.3.0"}
    assert not list((server.root / "releases").glob(".incoming-*"))


def test_gpg_failing_mid_signing(
    tmp_path: Path, signing_key: str, example_packages: dict[str, dict[str, Path]]
) -> None:
    publisher = LocalPublisher(tmp_path / "repo")
    debs = {v: example_packages[v]["amd64-deb"] for v in ("0.1.0", "0.2.0")}
    publisher.publish(_signed_tree(publisher, tmp_path, "0.1.0", debs["0.1.0"], signing_key), _release("0.1.0").id)
    home = tmp_path / "gnupg"
    started = time.monotonic()
    tree = tmp_path / "tree-0.2.0"
    with pytest.raises(RepositoryError, match="gpg refused to sign") as failure, publisher.locked("failing release"):
        publisher.fetch_current(tree)
        with Signer([signing_key], home=home) as signer:
            shutil.rmtree(home / "private-keys-v1.d")  # the key vanished under gpg (disk, agent, whatever)
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=True)
            sign_and_index(
                tree,
                example_manifest(),
                _release("0.2.0"),
                {"amd64-deb": [debs["0.2.0"]]},
                signer,
                base_url="http://127.0.0.1/",
            )
        publisher.publish(tree, _release("0.2.0").id)
    seconds = time.monotonic() - started
    print(f"\nFIGURE gpg-failing: error after {seconds:.1f} s: {failure.value}")
    assert seconds < 30
    assert not home.exists(), "the keyring is removed even when signing fails"
    assert os.readlink(tmp_path / "repo" / "current") == f"releases/{_release('0.1.0').id}"
    assert published_versions(tmp_path / "repo" / "current") == {"0.1.0"}
    with publisher.locked("next release"):  # the lock went with the failure
        pass
