"""A real image registry for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1
with htpasswd (bcrypt) authentication, started as `dropship demo --image` starts it.

Registered as a plugin in `tests/conftest.py`. `registry` is one server for the
session (each test uses its own repository name, so none depends on another's
tags). Nothing is pulled from a public registry: the images pushed are built
`FROM scratch` by the tests.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropship.oci_registry import LocalRegistry, start_registry
from dropship.ports import free_port

__all__ = ["LocalRegistry", "registry"]


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
