"""Credentials of a language package registry (PyPI-compatible index or npm registry)."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from dropship.secretref import resolve_secret


class RegistryCredentials(Block):
    """Who uploads language packages: read on the orchestrator only, never sent to a build machine.

    As with the signing key, prefer `password_env` or `password_file`: the
    block then holds a reference, and a build machine's worker, which holds
    the Prefect API credential, reads nothing secret through the blocks API.
    """

    _block_type_name = "dropship registry credentials"
    _block_type_slug = "dropship-registry-credentials"
    _description = (
        "User and password or token with which dropship uploads wheels and sdists to an index, "
        "or npm tarballs to an npm registry."
    )

    username: str = Field(
        default="__token__",
        description="User name; __token__ (PyPI's convention, also for npm): the password is an API token.",
    )
    password_env: str | None = Field(
        default=None, description="Name of an environment variable of the orchestrator holding the password or token."
    )
    password_file: str | None = Field(
        default=None,
        description="Path on the orchestrator of a file (mode 0600) holding the password or token; read at upload "
        "time, never stored in Prefect.",
    )
    password: SecretStr | None = Field(
        default=None,
        description="Password or API token itself. Only when no builder can reach this Prefect server: anyone "
        "with its API credential can read it; prefer password_env or password_file.",
    )

    def secret(self) -> str:
        """The password or token, read now from whichever source the block names."""
        return resolve_secret(
            "registry password",
            value=self.password.get_secret_value() if self.password else None,
            file=self.password_file,
            env=self.password_env,
        ).rstrip("\n")  # a file ends with a newline; the password does not
