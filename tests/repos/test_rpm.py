from __future__ import annotations

from pathlib import Path

import pytest

from dropship.errors import RepositoryError
from dropship.repos.rpm import RpmRepository, read_header, rpmvercmp
from dropship.signing import Signer
from tests.clients import ClientFailed, DnfClient, rpm_verify


def _rpms(example_packages: dict[str, dict[str, Path]], version: str) -> list[Path]:
    return [example_packages[version]["amd64-rpm"], example_packages[version]["arm64-rpm"]]


def _publish(
    tmp_path: Path, example_packages, key: str, versions: tuple[str, ...] = ("0.1.0",), keep: int = 3
) -> tuple[RpmRepository, Path]:
    repo = RpmRepository(
        tmp_path / "repo", keep_versions=keep, base_url="http://127.0.0.1:1", key_url="http://127.0.0.1:1/keys/k.asc"
    )
    with Signer([key]) as signer:
        for version in versions:
            repo.add("stable", _rpms(example_packages, version), signer, "hello")
        public = tmp_path / "key.asc"
        public.write_text(signer.public_key_armored())
    return repo, public


def test_packages_are_signed_and_inputs_untouched(
    tmp_path: Path, example_packages, signing_key: str, other_key: str
) -> None:
    original = example_packages["0.1.0"]["amd64-rpm"].read_bytes()
    repo, public = _publish(tmp_path, example_packages, signing_key)
    assert example_packages["0.1.0"]["amd64-rpm"].read_bytes() == original
    published = sorted((repo.root / "rpm/stable").glob("*/packages/*.rpm"))
    assert [p.parent.parent.name for p in published] == ["aarch64", "x86_64"]
    out = rpm_verify(public, published, tmp_path / "rpmdb")
    assert out.count("digests signatures OK") == 2
    with Signer([other_key]) as other:
        (tmp_path / "other.asc").write_text(other.public_key_armored())
    with pytest.raises(ClientFailed):
        rpm_verify(tmp_path / "other.asc", published, tmp_path / "rpmdb-other")


def test_repo_file_turns_on_both_checks(tmp_path: Path, example_packages, signing_key: str) -> None:
    repo, _ = _publish(tmp_path, example_packages, signing_key)
    text = (repo.root / "rpm/stable.repo").read_text()
    assert "gpgcheck=1\n" in text and "repo_gpgcheck=1\n" in text
    assert "baseurl=http://127.0.0.1:1/rpm/stable/$basearch" in text
    for arch in ("x86_64", "aarch64"):
        repodata = repo.root / "rpm/stable" / arch / "repodata"
        assert (repodata / "repomd.xml.asc").exists()


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_dnf_downloads_with_gpgcheck_and_repo_gpgcheck(
    tmp_path: Path, example_packages, signing_key: str, serve, arch: str
) -> None:
    repo, public = _publish(tmp_path, example_packages, signing_key, ("0.1.0", "0.2.0"))
    url = serve(repo.root)
    repo_file = (repo.root / "rpm/stable.repo").read_text().replace("http://127.0.0.1:1", url)
    client = DnfClient(tmp_path / "dnf", repo_file, f"file://{public}", arch=arch)
    rpm = client.download("hello")
    assert rpm.name == f"hello-0.2.0-1.{arch}.rpm"
    assert read_header(rpm).version == "0.2.0"


def test_dnf_refuses_tampered_repomd(tmp_path: Path, example_packages, signing_key: str, serve) -> None:
    repo, public = _publish(tmp_path, example_packages, signing_key)
    repomd = repo.root / "rpm/stable/x86_64/repodata/repomd.xml"
    repomd.write_text(repomd.read_text().replace("<revision>", "<revision>1"))
    url = serve(repo.root)
    repo_file = (repo.root / "rpm/stable.repo").read_text().replace("http://127.0.0.1:1", url)
    client = DnfClient(tmp_path / "dnf", repo_file, f"file://{public}")
    with pytest.raises(ClientFailed) as info:
        client.download("hello")
    assert "GPG" in info.value.output or "signature" in info.value.output.lower()


def test_retention_keeps_newest(tmp_path: Path, example_packages, signing_key: str) -> None:
    repo, _ = _publish(tmp_path, example_packages, signing_key, ("0.1.0", "0.2.0", "0.3.0"), keep=2)
    names = sorted(p.name for p in (repo.root / "rpm/stable/x86_64/packages").glob("*.rpm"))
    assert names == ["hello-0.2.0-1.x86_64.rpm", "hello-0.3.0-1.x86_64.rpm"]
    primary = list((repo.root / "rpm/stable/x86_64/repodata").glob("*-primary.xml.gz"))
    assert len(primary) == 1


def test_same_package_is_kept_other_content_refused(tmp_path: Path, example_packages, signing_key: str) -> None:
    from tests.conftest import build_example

    repo, _ = _publish(tmp_path, example_packages, signing_key)
    published = repo.root / "rpm/stable/x86_64/packages/hello-0.1.0-1.x86_64.rpm"
    before = published.read_bytes()
    with Signer([signing_key]) as signer:
        results = repo.add("stable", _rpms(example_packages, "0.1.0"), signer, "hello")  # e.g. reused from the store
        assert all(r.added == [] for r in results)
        assert published.read_bytes() == before, "a published package is not re-signed"
        rebuilt = build_example("0.1.0", tmp_path / "rebuilt", epoch=1800000000)["amd64-rpm"]
        with pytest.raises(RepositoryError, match="already published in stable with different content"):
            repo.add("stable", [rebuilt], signer, "hello")
    assert published.read_bytes() == before


def test_not_an_rpm(tmp_path: Path, signing_key: str) -> None:
    bogus = tmp_path / "bogus.rpm"
    bogus.write_bytes(b"nope")
    repo = RpmRepository(tmp_path / "repo")
    with Signer([signing_key]) as signer, pytest.raises(RepositoryError, match="rpmsign refused|not a readable RPM"):
        repo.add("stable", [bogus], signer, "hello")


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.0", "1.0", 0),
        ("1.0", "2.0", -1),
        ("2.0", "1.0", 1),
        ("1.10", "1.9", 1),
        ("1.0", "1.0.1", -1),
        ("1.0~rc1", "1.0", -1),
        ("1.0~rc1", "1.0~rc2", -1),
        ("1.0^post", "1.0", 1),
        ("1.0a", "1.0", 1),
        ("1.0", "1.0a", -1),
        ("a", "1", -1),
        ("1", "a", 1),
        ("1.0.0", "1_0_0", 0),
        ("0~dev2026.g1", "0.1", -1),
    ],
)
def test_rpmvercmp(a: str, b: str, expected: int) -> None:
    assert rpmvercmp(a, b) == expected
