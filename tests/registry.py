"""A real image registry for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1
with htpasswd (bcrypt) authentication, started as `dropship demo --image` starts it.

Registered as a plugin in `tests/conftest.py`. `registry` is one server for the
session (each test uses its own repository name, so none depends on another's
tags). Nothing is pulled from a public registry: the images pushed are built
`FROM scratch` or from the emulator's cached debootstrap image by the tests
(`push_image`).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropship.emulator.dockerd import DockerDaemon
from dropship.oci_registry import LocalRegistry, start_registry
from dropship.ports import free_port

__all__ = ["LocalRegistry", "push_image", "registry"]


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


def push_image(
    daemon: DockerDaemon,
    registry: LocalRegistry,
    repository: str,
    tag: str,
    files: dict[str, str | bytes],
    base: str = "scratch",
) -> str:
    """Build `FROM base` plus `files` ({path in the image: text or bytes}, executable) in `daemon`, without
    network, push it to `repository:tag` with the registry's credentials; returns the pushed digest."""
    with tempfile.TemporaryDirectory(prefix="dropship-image-") as scratch:
        context = Path(scratch)
        lines = [f"FROM {base}"]
        for index, (path, text) in enumerate(sorted(files.items())):
            data = text.encode() if isinstance(text, str) else text
            (context / f"f{index}").write_bytes(data)
            (context / f"f{index}").chmod(0o755)
            lines.append(f"COPY f{index} {path}")
        (context / "Dockerfile").write_text("\n".join(lines) + "\n")
        image, _log = daemon.client.images.build(path=str(context), tag=f"{repository}:{tag}", network_mode="none")
    auth = {"username": registry.username, "password": registry.password}
    for line in daemon.client.images.push(repository, tag=tag, auth_config=auth, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(f"push of {repository}:{tag} failed: {line['error']}")
    image.reload()
    return next(d.split("@", 1)[1] for d in image.attrs["RepoDigests"] if d.startswith(f"{repository}@"))
