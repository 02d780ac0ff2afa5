from __future__ import annotations

import subprocess
from pathlib import Path

from debian.deb822 import Deb822

from dropship.repos.keys import publish_keys, write_sources
from dropship.signing import Signer


def _fingerprints(keyring: Path) -> list[str]:
    out = subprocess.run(
        ["gpg", "--show-keys", "--with-colons", str(keyring)], capture_output=True, text=True, check=True
    ).stdout
    return [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")]


def test_every_key_published_together_and_alone(tmp_path: Path, signing_key: str, other_key: str) -> None:
    with Signer([signing_key, other_key]) as signer:
        armored, binary = publish_keys(tmp_path, "release", signer)
        fingerprints = signer.fingerprints
    assert armored == tmp_path / "keys/release.asc" and binary == tmp_path / "keys/release.gpg"
    assert set(fingerprints) <= set(_fingerprints(binary))
    assert set(fingerprints) <= set(_fingerprints(armored))
    for fingerprint in fingerprints:
        alone = _fingerprints(tmp_path / f"keys/{fingerprint}.gpg")
        assert fingerprint in alone and not (set(fingerprints) - {fingerprint}) & set(alone)
    assert "PRIVATE" not in armored.read_text()


def test_sources_snippet_is_deb822_with_signed_by(tmp_path: Path) -> None:
    path = write_sources(tmp_path, "hello", "https://packages.example.org/", ["stable", "testing"], "main", "release")
    (stanza,) = list(Deb822.iter_paragraphs(path.read_text(), use_apt_pkg=False))
    assert stanza["Types"] == "deb" and stanza["URIs"] == "https://packages.example.org/"
    assert stanza["Suites"] == "stable testing" and stanza["Components"] == "main"
    assert stanza["Signed-By"] == "/etc/apt/keyrings/hello-release.gpg"
