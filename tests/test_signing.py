from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dropship.errors import SigningKeyError
from dropship.signing import Signer, generate_key


def _gpgv(tmp_path: Path, keyring: bytes, *args: str) -> subprocess.CompletedProcess[str]:
    ring = tmp_path / "ring.gpg"
    ring.write_bytes(keyring)
    return subprocess.run(["gpgv", "--keyring", str(ring), *args], capture_output=True, text=True, check=False)


def test_clearsign_and_detached_verify_with_gpgv(tmp_path: Path, signing_key: str) -> None:
    with Signer([signing_key]) as signer:
        inline = signer.clearsign(b"Suite: stable\n")
        detached = signer.detach_sign(b"payload\n")
        keyring = signer.public_key_binary()
        home = signer.gnupghome
    assert not home.exists(), "the throw-away GNUPGHOME must be deleted"
    assert b"Hash: SHA512" in inline
    (tmp_path / "InRelease").write_bytes(inline)
    assert _gpgv(tmp_path, keyring, str(tmp_path / "InRelease")).returncode == 0
    (tmp_path / "data").write_bytes(b"payload\n")
    (tmp_path / "data.asc").write_bytes(detached)
    assert _gpgv(tmp_path, keyring, str(tmp_path / "data.asc"), str(tmp_path / "data")).returncode == 0
    (tmp_path / "data").write_bytes(b"payload, altered\n")
    assert _gpgv(tmp_path, keyring, str(tmp_path / "data.asc"), str(tmp_path / "data")).returncode != 0


def test_every_key_signs_for_rotation(tmp_path: Path, signing_key: str, other_key: str) -> None:
    with Signer([signing_key, other_key]) as signer:
        assert len(signer.fingerprints) == 2
        inline = signer.clearsign(b"x\n")
        both = signer.public_key_binary()
    (tmp_path / "InRelease").write_bytes(inline)
    status = _gpgv(tmp_path, both, "--status-fd", "1", str(tmp_path / "InRelease"))
    assert status.stdout.count("VALIDSIG") == 2
    # each key's signature is good on its own (apt accepts one good signature)
    for key in (signing_key, other_key):
        with Signer([key]) as single:
            ring = single.public_key_binary()
            fingerprint = single.fingerprints[0]
        status = _gpgv(tmp_path, ring, "--status-fd", "1", str(tmp_path / "InRelease"))
        assert f"VALIDSIG {fingerprint}" in status.stdout


def test_expired_and_expiring_keys_are_refused() -> None:
    key = generate_key("short-lived", "short@example.invalid", expire_days=3)
    with pytest.raises(SigningKeyError, match="expires on .* within the required 7 days"):
        Signer([key], min_validity=timedelta(days=7)).__enter__()
    with Signer([key], min_validity=timedelta(days=1)):
        pass
    later = datetime.now(UTC) + timedelta(days=10)
    with pytest.raises(SigningKeyError, match="expired on"):
        Signer([key], min_validity=timedelta(0), now=later).__enter__()


def test_bad_key_material_is_refused(signing_key: str) -> None:
    with pytest.raises(SigningKeyError, match="not an armored private key"):
        Signer(["-----BEGIN PGP PUBLIC KEY BLOCK-----\nxx"]).__enter__()
    with pytest.raises(SigningKeyError, match="could not be imported"):
        Signer(
            ["-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nnot a key\n-----END PGP PRIVATE KEY BLOCK-----\n"]
        ).__enter__()
    with pytest.raises(SigningKeyError, match="no signing key"):
        Signer([])
