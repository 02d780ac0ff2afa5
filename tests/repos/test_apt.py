from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from debian.deb822 import Packages, Release

import dropship.repos.apt as apt_module
from dropship.errors import RepositoryError
from dropship.repos.apt import AptRepository, AptSettings, pool_path
from dropship.signing import Signer
from tests.clients import AptClient, ClientFailed, run_packaged_hello

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
FIXED_NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SETTINGS = AptSettings(
    origin="hello", label="hello", component="main", architectures=("amd64", "arm64"), keep_versions=2
)


def _debs(example_packages: dict[str, dict[str, Path]], version: str) -> list[Path]:
    return [example_packages[version]["amd64-deb"], example_packages[version]["arm64-deb"]]


def _repo(tmp_path: Path, settings: AptSettings = SETTINGS) -> AptRepository:
    return AptRepository(tmp_path / "repo", settings)


def _signed_repo(
    tmp_path: Path, example_packages, signing_key: str, client_key: str | None = None
) -> tuple[AptRepository, Path]:
    """A repository with 0.1.0 signed by `signing_key`, and the keyring of `client_key` (default: the same)."""
    repo = _repo(tmp_path)
    with Signer([signing_key]) as signer:
        repo.add("stable", _debs(example_packages, "0.1.0"), signer)
    with Signer([client_key or signing_key]) as client:
        keyring = tmp_path / "client.gpg"
        keyring.write_bytes(client.public_key_binary())
    return repo, keyring


def _golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("DROPSHIP_UPDATE_GOLDEN"):
        path.write_text(actual)
    assert actual == path.read_text(), f"{name} differs from the golden file (DROPSHIP_UPDATE_GOLDEN=1 rewrites it)"


def test_indices_match_golden_files_and_parse_back(tmp_path: Path, example_packages, signing_key: str) -> None:
    repo = _repo(tmp_path)
    with Signer([signing_key]) as signer:
        repo.add("stable", _debs(example_packages, "0.1.0"), signer, now=FIXED_NOW)
    suite = repo.root / "dists" / "stable"
    packages_text = (suite / "main/binary-amd64/Packages").read_text()
    release_text = (suite / "Release").read_text()
    _golden("Packages-amd64", packages_text)
    _golden("Release", release_text)

    (stanza,) = list(Packages.iter_paragraphs(packages_text, use_apt_pkg=False))
    assert stanza["Package"] == "hello" and stanza["Version"] == "0.1.0" and stanza["Architecture"] == "amd64"
    assert stanza["Filename"] == "pool/main/h/hello/hello_0.1.0_amd64.deb"
    assert (repo.root / stanza["Filename"]).stat().st_size == int(stanza["Size"])
    release = Release(release_text)
    assert release["Date"] == "Fri, 02 Jan 2026 03:04:05 GMT"
    assert release["Acquire-By-Hash"] == "yes"
    assert release["Architectures"] == "amd64 arm64"
    assert "MD5Sum" not in release and "SHA1" not in release
    names = {entry["name"] for entry in release["SHA256"]}
    assert names == {f"main/binary-{a}/Packages{x}" for a in ("amd64", "arm64") for x in ("", ".gz", ".xz")}
    for entry in release["SHA256"]:
        by_hash = suite / Path(entry["name"]).parent / "by-hash" / "SHA256" / entry["sha256"]
        assert by_hash.read_bytes() == (suite / entry["name"]).read_bytes()
    for entry in release["SHA512"]:
        assert (suite / Path(entry["name"]).parent / "by-hash" / "SHA512" / entry["sha512"]).exists()


def test_apt_get_installs_from_signed_repository(tmp_path: Path, example_packages, signing_key: str, serve) -> None:
    repo, keyring = _signed_repo(tmp_path, example_packages, signing_key)
    client = AptClient(tmp_path / "apt", serve(repo.root), keyring, "stable")
    client.update()
    assert "Candidate: 0.1.0" in client.policy("hello")
    deb = client.download("hello")
    assert run_packaged_hello(deb, tmp_path / "unpacked") == "Hello from dropship 0.1.0!"


def test_apt_get_refuses_tampered_index(tmp_path: Path, example_packages, signing_key: str, serve) -> None:
    repo, keyring = _signed_repo(tmp_path, example_packages, signing_key)
    index_dir = repo.root / "dists/stable/main/binary-amd64"
    altered = (index_dir / "Packages").read_bytes().replace(b"Version: 0.1.0", b"Version: 9.9.9")
    for path in [index_dir / "Packages", *index_dir.glob("by-hash/*/*")]:
        path.unlink()
        path.write_bytes(altered)  # served under every name apt may ask for
    for compressed in index_dir.glob("Packages.*"):
        compressed.unlink()
    client = AptClient(tmp_path / "apt", serve(repo.root), keyring, "stable")
    with pytest.raises(ClientFailed) as info:
        client.update()
    assert "Hash Sum mismatch" in info.value.output or "File has unexpected size" in info.value.output


def test_apt_get_refuses_other_key(tmp_path: Path, example_packages, signing_key: str, other_key: str, serve) -> None:
    repo, keyring = _signed_repo(tmp_path, example_packages, signing_key, client_key=other_key)
    client = AptClient(tmp_path / "apt", serve(repo.root), keyring, "stable")
    with pytest.raises(ClientFailed) as info:
        client.update()
    assert "NO_PUBKEY" in info.value.output or "not signed" in info.value.output


def test_rotation_old_and_new_key_clients_both_accept(
    tmp_path: Path, example_packages, signing_key: str, other_key: str, serve
) -> None:
    repo = _repo(tmp_path)
    with Signer([signing_key, other_key]) as signer:
        repo.add("stable", _debs(example_packages, "0.1.0"), signer)
    url = serve(repo.root)
    for index, key in enumerate((signing_key, other_key)):
        with Signer([key]) as single:
            keyring = tmp_path / f"key{index}.gpg"
            keyring.write_bytes(single.public_key_binary())
        AptClient(tmp_path / f"apt{index}", url, keyring, "stable").update()


def test_releases_accumulate_retention_drops_oldest(tmp_path: Path, example_packages, signing_key: str, serve) -> None:
    repo = _repo(tmp_path)
    with Signer([signing_key]) as signer:
        for version in ("0.1.0", "0.2.0"):
            repo.add("stable", _debs(example_packages, version), signer)
        keyring = tmp_path / "key.gpg"
        keyring.write_bytes(signer.public_key_binary())
        url = serve(repo.root)
        client = AptClient(tmp_path / "apt", url, keyring, "stable")
        client.update()
        policy = client.policy("hello")
        assert "Candidate: 0.2.0" in policy and "0.1.0" in policy
        assert run_packaged_hello(client.download("hello"), tmp_path / "u2") == "Hello from dropship 0.2.0!"

        # HTTP validators have one-second resolution: a republish within the
        # second apt last fetched would be answered 304 Not Modified.
        time.sleep(1.1)
        result = repo.add("stable", _debs(example_packages, "0.3.0"), signer)
    assert sorted(result.removed) == [
        "pool/main/h/hello/hello_0.1.0_amd64.deb",
        "pool/main/h/hello/hello_0.1.0_arm64.deb",
    ]
    assert repo.prune_pool() == sorted(result.removed)
    versions = [
        p["Version"]
        for p in Packages.iter_paragraphs(
            (repo.root / "dists/stable/main/binary-amd64/Packages").read_text(), use_apt_pkg=False
        )
    ]
    assert versions == ["0.2.0", "0.3.0"]
    client.update()
    assert "Candidate: 0.3.0" in client.policy("hello")


def test_indexing_is_incremental(
    tmp_path: Path, example_packages, signing_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _repo(tmp_path)
    read: list[str] = []
    original = apt_module.read_deb

    def counting(path: Path, component: str) -> apt_module.Entry:
        read.append(path.name)
        return original(path, component)

    monkeypatch.setattr(apt_module, "read_deb", counting)
    with Signer([signing_key]) as signer:
        repo.add("stable", _debs(example_packages, "0.1.0"), signer)
        repo.add("stable", [example_packages["0.2.0"]["amd64-deb"]], signer)
    assert read == ["hello_0.1.0_amd64.deb", "hello_0.1.0_arm64.deb", "hello_0.2.0_amd64.deb"]


def test_same_version_with_other_content_is_refused(tmp_path: Path, example_packages, signing_key: str) -> None:
    repo = _repo(tmp_path)
    with Signer([signing_key]) as signer:
        repo.add("stable", _debs(example_packages, "0.1.0"), signer)
        impostor = tmp_path / "hello_0.1.0_amd64.deb"
        shutil.copy(example_packages["0.1.0"]["amd64-deb"], impostor)
        pool_file = repo.root / pool_path("main", "hello", "hello_0.1.0_amd64.deb")
        altered = pool_file.read_bytes() + b"\0"
        pool_file.unlink()  # the pool file is a hard link to the session's example package: never write through it
        pool_file.write_bytes(altered)
        with pytest.raises(RepositoryError, match="already published with different content"):
            repo.add("stable", [impostor], signer)


def test_not_a_deb_and_wrong_arch(tmp_path: Path, example_packages, signing_key: str) -> None:
    bogus = tmp_path / "bogus.deb"
    bogus.write_bytes(b"!<arch>\nnot really")
    only_amd64 = AptSettings(origin="o", label="l", component="main", architectures=("amd64",))
    with Signer([signing_key]) as signer:
        with pytest.raises(RepositoryError, match="bogus.deb is not a readable .deb"):
            _repo(tmp_path).add("stable", [bogus], signer)
        with pytest.raises(RepositoryError, match="is for arm64, not one of"):
            AptRepository(tmp_path / "r2", only_amd64).add("stable", [example_packages["0.1.0"]["arm64-deb"]], signer)


def test_pool_layout() -> None:
    assert pool_path("main", "hello", "hello_1_amd64.deb") == "pool/main/h/hello/hello_1_amd64.deb"
    assert pool_path("main", "libfoo", "libfoo1_1_amd64.deb") == "pool/main/libf/libfoo/libfoo1_1_amd64.deb"


def test_only_packages_new_to_the_suite_are_reported_added(tmp_path: Path, example_packages, signing_key: str) -> None:
    repo = _repo(tmp_path)
    with Signer([signing_key]) as signer:
        first = repo.add("stable", _debs(example_packages, "0.1.0"), signer)
        again = repo.add("stable", [*_debs(example_packages, "0.1.0"), example_packages["0.2.0"]["amd64-deb"]], signer)
    assert [Path(f).name for f in first.added] == ["hello_0.1.0_amd64.deb", "hello_0.1.0_arm64.deb"]
    assert [Path(f).name for f in again.added] == ["hello_0.2.0_amd64.deb"]
