"""The provider a release asks for."""

from __future__ import annotations

from pathlib import Path

from dropship.errors import ConfigError
from dropship.machines import Provider
from dropship.machines.digitalocean import DigitalOceanProvider, DigitalOceanSettings
from dropship.machines.local import LocalProvider


def make_provider(name: str, workdir: Path, digitalocean: DigitalOceanSettings | None = None) -> Provider:
    if name == "local":
        return LocalProvider(workdir / "local")
    if name == "digitalocean":
        if digitalocean is None:
            raise ConfigError("provider digitalocean needs DigitalOcean credentials")
        return DigitalOceanProvider(digitalocean)
    raise ConfigError(f"unknown machine provider {name!r}: use local or digitalocean")
