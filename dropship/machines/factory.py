"""The provider a manifest asks for."""

from __future__ import annotations

from pathlib import Path

from dropship.errors import ConfigError
from dropship.machines import Provider
from dropship.machines.local import LocalProvider


def make_provider(name: str, workdir: Path) -> Provider:
    if name == "local":
        return LocalProvider(workdir / "local")
    raise ConfigError(
        f"machine provider {name!r} is not available in this version of dropship; use provider = \"local\""
    )
