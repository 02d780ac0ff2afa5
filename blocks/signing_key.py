"""The GnuPG key(s) that sign the repositories."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from dropship.secretref import resolve_secret
from dropship.signing import Signer

_BLOCK_START = "-----BEGIN PGP PRIVATE KEY BLOCK-----"


class SigningKey(Block):
    """ASCII-armored private key(s); every key signs, so a new key can be rolled in
    before the old one is retired.

    The key should live on the orchestrator only (`private_key_file` or
    `private_key_env`): the block then holds a reference, and a build machine,
    whose worker holds the Prefect API credential, reads nothing secret
    through the blocks API.
    """

    _block_type_name = "dropship signing key"
    _block_type_slug = "dropship-signing-key"
    _description = "GnuPG private key(s) that sign dropship's APT and RPM repositories."

    private_key_file: str | None = Field(
        default=None,
        description="Path on the orchestrator of a file (mode 0600) holding the ASCII-armored private key(s); "
        "read at signing time, never stored in Prefect.",
    )
    private_key_env: str | None = Field(
        default=None,
        description="Name of an environment variable of the orchestrator holding the ASCII-armored private key(s).",
    )
    private_key: SecretStr | None = Field(
        default=None,
        description="The ASCII-armored private key itself (several one after another to sign with each). "
        "Only when no builder can reach this Prefect server: anyone with its API credential can read it.",
    )
    passphrase_env: str | None = Field(
        default=None, description="Name of an environment variable of the orchestrator holding the passphrase."
    )
    passphrase: SecretStr | None = Field(
        default=None,
        description="Passphrase of the key(s), if they have one. Only when no builder can reach this Prefect server.",
    )
    min_validity_days: int = Field(
        default=30, ge=0, description="Refuse to sign with a key that expires within this many days."
    )

    def armored_keys(self) -> list[str]:
        text = resolve_secret(
            "signing key",
            value=self.private_key.get_secret_value() if self.private_key else None,
            file=self.private_key_file,
            env=self.private_key_env,
        )
        parts = [p for p in re.split(f"(?={re.escape(_BLOCK_START)})", text) if p.strip()]
        return parts

    def _passphrase(self) -> str | None:
        if not self.passphrase_env and self.passphrase is None:
            return None
        return resolve_secret(
            "signing key passphrase",
            value=self.passphrase.get_secret_value() if self.passphrase else None,
            file=None,
            env=self.passphrase_env,
        )

    def signer(self, home: Path | None = None) -> Signer:
        """A signer with every key; `home` is its GNUPGHOME (a run's `gnupg` folder)."""
        return Signer(
            self.armored_keys(),
            passphrase=self._passphrase(),
            min_validity=timedelta(days=self.min_validity_days),
            home=home,
        )
