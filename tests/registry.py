"""A real image registry for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1
with htpasswd (bcrypt) authentication, and the stock Debian image pushed to it.

Registered as a plugin in `tests/conftest.py`. `registry` is one server for the
session (each test uses its own repository name, so none depends on another's
tags); `registry_base_image` pushes the emulator's cached debootstrap image
(`tests/droplets.py`'s `stock_image`, never a second debootstrap) from the
session dockerd: nothing is pulled from a public registry.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropship.emulator.dockerd import DockerDaemon
from dropship.oci import Skopeo
from dropship.oci_registry import LocalRegistry, start_registry
from dropship.ports import free_port

__all__ = ["LocalRegistry", "registry", "registry_base_image"]


@pytest.fixture(scope="session")
def registry() -> Iterator[LocalRegistry]:
    """One registry for the session (`dropship.oci_registry`, as `dropship demo --image` starts it), user
    dropship-ci with a fresh random password."""
    if shutil.which("docker-registry") is None or shutil.which("htpasswd") is None:
        pytest.skip("Debian's docker-registry and apache2-utils (htpasswd) are needed for the registry tests")
    folder = Path(tempfile.mkdtemp(prefix="dropship-registry-"))
    started = time.monotonic()
    server = start_registry(folder, port=free_port(), username="dropship-ci")
    print(f"\n[registry] {server.host} up in {time.monotonic() - started:.1f} s", flush=True)
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def registry_base_image(registry: LocalRegistry, dockerd: DockerDaemon, stock_image: str) -> str:
    """The stock Debian 12 image (made locally with debootstrap, cached) in the registry: `host/base/debian:12`."""
    reference = f"{registry.host}/base/debian:12"
    started = time.monotonic()
    with Skopeo(registry.auth) as skopeo:
        skopeo.run(
            [
                "copy",
                "--quiet",
                "--src-daemon-host",
                dockerd.host,
                "--dest-tls-verify=false",
                f"docker-daemon:{stock_image}",
                f"docker://{reference}",
            ],
            f"pushing {stock_image}",
        )
    print(f"\n[registry] {stock_image} pushed as {reference} in {time.monotonic() - started:.1f} s", flush=True)
    return reference
