"""The GnuPG key(s) that sign the repositories."""

from __future__ import annotations

import re
from datetime import timedelta

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from dropship.signing import Signer

_BLOCK_START = "-----BEGIN PGP PRIVATE KEY BLOCK-----"


class SigningKey(Block):
    """ASCII-armored private key(s); every key signs, so a new key can be rolled in
    before the old one is retired."""

    _block_type_name = "dropship signing key"
    _block_type_slug = "dropship-signing-key"
    _description = "GnuPG private key(s) that sign dropship's APT and RPM repositories."

    private_key: SecretStr = Field(
        description="ASCII-armored private key; several armored keys one after another to sign with each (rotation)."
    )
    passphrase: SecretStr | None = Field(default=None, description="Passphrase of the key(s), if they have one.")
    min_validity_days: int = Field(
        default=30, ge=0, description="Refuse to sign with a key that expires within this many days."
    )

    def armored_keys(self) -> list[str]:
        text = self.private_key.get_secret_value()
        parts = [p for p in re.split(f"(?={re.escape(_BLOCK_START)})", text) if p.strip()]
        return parts

    def signer(self) -> Signer:
        return Signer(
            self.armored_keys(),
            passphrase=self.passphrase.get_secret_value() if self.passphrase else None,
            min_validity=timedelta(days=self.min_validity_days),
        )
