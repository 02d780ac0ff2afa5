"""Loading the blocks a manifest names, for the checks in `dropship.checks`.

The one place that turns Prefect blocks into the plain values the checks
take; a block that does not exist becomes None (the check says "missing"
and how to create it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from prefect.blocks.core import Block
from prefect.exceptions import ObjectNotFound
from prefect_docker.credentials import DockerRegistryCredentials

from blocks.digitalocean import DigitalOceanCredentials
from blocks.repo_server import RepoServer
from blocks.signing_key import SigningKey
from dropship.checks import Inputs, KeyValue, RepoValue
from dropship.containers import RegistryValue
from dropship.errors import ConfigError
from dropship.manifest import Manifest

B = TypeVar("B", bound=Block)


def require_block(kind: type[B], name: str) -> B:
    """`kind.load(name)`, typed: the one place dropship calls `Block.load`.

    Prefect's `load` returns the block, or a coroutine when called inside an
    event loop; dropship's tasks, flows and CLI call it from synchronous code
    only, so anything but a `kind` is a programming error. A missing block
    raises what Prefect raises (ValueError, ObjectNotFound).
    """
    block = kind.load(name)
    if not isinstance(block, kind):
        raise TypeError(f"{kind.__name__}.load({name!r}) gave {type(block).__name__}: called from async code?")
    return block


def load_block(kind: type[B], name: str) -> B | None:
    """The block, or None if there is none of that name (or of that type yet)."""
    try:
        return require_block(kind, name)
    except ObjectNotFound:
        return None
    except ValueError as exc:  # Prefect: "Unable to find block document named ..."
        if "Unable to find" in str(exc) or "not found" in str(exc).lower():
            return None
        raise ConfigError(f"{kind.__name__} block {name!r} can't be loaded: {str(exc).splitlines()[0]}") from exc


def key_value(block: SigningKey) -> KeyValue:
    return KeyValue(
        armored=block.armored_keys(),
        passphrase=block.passphrase.get_secret_value() if block.passphrase else None,
        min_validity_days=block.min_validity_days,
    )


def repo_value(block: RepoServer) -> RepoValue:
    return RepoValue(
        path=block.path,
        host=block.host,
        port=block.port,
        user=block.user,
        private_key=block.ssh_private_key.get_secret_value() if block.ssh_private_key else None,
        host_public_key=block.host_public_key,
    )


def load_registries(manifest: Manifest, targets: Sequence[str] | None = None) -> dict[str, RegistryValue | None]:
    """The `container_credentials` blocks of `targets` (all by default) that build in a container, by name;
    None for a block that does not exist."""
    registries: dict[str, RegistryValue | None] = {}
    for target in manifest.targets:
        if targets is not None and target.name not in targets:
            continue
        if target.container is not None and target.container_credentials not in registries:
            block = load_block(DockerRegistryCredentials, target.container_credentials)
            registries[target.container_credentials] = (
                RegistryValue(block.registry_url, block.username, block.password.get_secret_value()) if block else None
            )
    return registries


def load_inputs(manifest: Manifest, provider: str | None = None, *, build_images: bool = True) -> Inputs:
    """Every block a release uses; `build_images=False` leaves the build containers' blocks unloaded (the
    release's plan stage has pinned the images with them already)."""
    key = load_block(SigningKey, manifest.blocks.signing_key)
    repo = load_block(RepoServer, manifest.blocks.repo_server)
    credentials = None
    if (provider or manifest.machines.provider) == "digitalocean":
        credentials = load_block(DigitalOceanCredentials, manifest.machines.credentials)
    return Inputs(
        signing_key=key_value(key) if key else None,
        repo_server=repo_value(repo) if repo else None,
        digitalocean=credentials.settings() if credentials else None,
        build_registries=load_registries(manifest) if build_images else {},
    )
