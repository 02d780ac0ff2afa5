"""Credentials of a language package registry (PyPI-compatible index)."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class RegistryCredentials(Block):
    """Who uploads language packages: read on the orchestrator only, never sent to a build machine."""

    _block_type_name = "dropship registry credentials"
    _block_type_slug = "dropship-registry-credentials"
    _description = "User and password or token with which dropship uploads wheels and sdists to an index."

    username: str = Field(default="__token__", description="User name (PyPI API tokens use __token__).")
    password: SecretStr = Field(description="Password or API token.")
