"""Build containers: a target's build run inside a container image (`container = "<image>"`).

What the core decides, without Prefect (the Prefect side, prefect-docker's
tasks, is `tasks/containers.py`):

- **The reference.** `parse_image` accepts `registry-host[:port]/path[:tag][@sha256:...]`;
  a registry host is required, because images come from a registry the
  release engineer controls, named by a `DockerRegistryCredentials` block.
- **The digest, before any machine.** `pin_build_images` (the plan stage's and
  `dropship check`'s one way to do it) loads nothing: it takes the blocks' values
  and, per target, checks the block and `resolve`s the image. `resolve` asks the registry (skopeo,
  with the block's credentials) what the tag points at now, or checks that a
  given digest is there. The plan hashes the pinned `registry/path@sha256:...`
  (dropship/cache.py), so a tag moved to another digest rebuilds the target
  and an unchanged one reuses it; the machine pulls by that digest, never by
  the tag, so it builds in exactly the image the hash names.
- **The block.** `check_block_registry` refuses a block whose `registry_url`
  is another registry than the image's, before its password goes anywhere
  (the same rule as `[oci] credentials`); both are compared as Docker keys
  credentials (`registry_host`: no scheme, path or default port, any case,
  Docker Hub's aliases as one).
- **On the machine.** `BuildDocker` is a dockerd of the build's own
  (`dropship.dockerd.BuildDaemon`: `--iptables=false --bridge=none`, data root
  under the build's workspace, where a deleted machine's sweep finds it),
  started for the one build and stopped with every container when it ends.
  `run_spec` says how the container runs: host networking, the unpacked
  source and the build's home mounted at the same paths as without a
  container (so `DROPSHIP_DEPS`, artifact paths and the report are the same),
  the build user's uid:gid when the worker is root, the environment the build
  gets without a container minus what the worker would pass on (PATH, locale:
  the image brings its own).
- **Errors.** `docker_errors` is where the Docker SDK's errors of a build
  container become one-line `BuildFailed`s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dropship.dockerd import DOCKERD_FOLDER, BuildDaemon
from dropship.errors import BuildFailed, DropshipError, ImageError
from dropship.manifest import Manifest
from dropship.oci import DIGEST_RE, REPOSITORY_RE, TAG_RE, RegistryAuth, Skopeo, is_loopback, tag_digest

IMAGE_RE = re.compile(
    rf"(?P<repository>{REPOSITORY_RE.pattern})(?::(?P<tag>{TAG_RE.pattern}))?(?:@(?P<digest>{DIGEST_RE.pattern}))?",
    re.ASCII,
)
MAX_REFERENCE = 512


@dataclass(frozen=True)
class ImageRef:
    """`registry/path[:tag][@digest]`, parsed."""

    registry: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def repository(self) -> str:
        return f"{self.registry}/{self.path}"

    @property
    def name(self) -> str:
        """As written, for messages (no credentials can be in a reference)."""
        return self.repository + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def pinned(self, digest: str) -> str:
        """`registry/path@sha256:...`: what the hash covers and the machine pulls."""
        return f"{self.repository}@{digest}"


def parse_image(reference: str) -> ImageRef:
    """Parse a build image reference; `ImageError` naming the expected form when it isn't one."""
    match = IMAGE_RE.fullmatch(reference) if len(reference) <= MAX_REFERENCE else None
    if match is None:
        raise ImageError(
            f"{reference[:80]!r} is not an image reference: expected registry-host[:port]/name[:tag][@sha256:<64 hex>] "
            "(a registry host first, lowercase name parts), e.g. registry.example.org/build/debian:12"
        )
    registry, path = match["repository"].split("/", 1)
    tag = match["tag"] or (None if match["digest"] else "latest")
    return ImageRef(registry, path, tag, match["digest"])


DOCKER_HUB = "docker.io"
HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
"""The names Docker Hub goes by (`docker login` stores its credentials under `https://index.docker.io/v1/`)."""


def registry_host(value: str) -> str:
    """A registry as Docker keys its credentials: the host[:port] of `value`, without scheme, path (e.g.
    `/v1/`) or default port, lowercase, Docker Hub's aliases as `docker.io`.
    `https://Index.Docker.io/v1/` -> `docker.io`; `HTTPS://Reg.Example.org:443/` -> `reg.example.org`."""
    text = value.strip()
    scheme = ""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if match:
        scheme, text = match[1].lower(), text[match.end() :]
    host = text.split("/", 1)[0].lower()
    default = {"": ":443", "https": ":443", "http": ":80"}.get(scheme)
    if default and host.endswith(default):
        host = host.removesuffix(default)
    return DOCKER_HUB if host in HUB_ALIASES else host


def check_block_registry(block: str, registry_url: str | None, registry: str, used_by: str) -> None:
    """Refuse a `DockerRegistryCredentials` block for another registry than `registry`, before
    its password is sent anywhere; both sides compared as `registry_host`s. `used_by` names the
    manifest field that names the block."""
    blocks_host = registry_host(registry_url or "")
    if not blocks_host or blocks_host != registry_host(registry):
        raise ImageError(
            f"block {block!r} is for registry {blocks_host or '(none)'}, but {used_by} names {registry}: "
            f"use a DockerRegistryCredentials block whose registry_url is {registry}"
        )


def missing_block(block: str, used_by: str, registry: str) -> ImageError:
    return ImageError(
        f"no DockerRegistryCredentials block {block!r} ({used_by}): create it with the username and "
        f"password of {registry} (prefect-docker)"
    )


def resolve(skopeo: Skopeo, image: ImageRef, field: str) -> str:
    """The digest `image` names in its registry now: its tag's, or its own digest once checked to exist.
    `field` (e.g. `targets[2].container`) is named in the error of an image the registry lacks."""
    if image.digest is not None:
        if skopeo.raw_manifest(image.pinned(image.digest)) is None:
            raise ImageError(f"{image.name} is not in the registry {image.registry}: push it there or fix {field}")
        return image.digest
    assert image.tag is not None
    digest = tag_digest(skopeo, image.repository, image.tag)
    if digest is None:
        raise ImageError(
            f"{image.name} is not in the registry {image.registry} (no such tag): push it there or fix {field}"
        )
    return digest


def refuse_loopback_for_droplets(manifest: Manifest, name: str, provider: str) -> None:
    """A droplet pulls its build image itself, so a registry on a loopback address (`127.0.0.1:5000`,
    `localhost`) would be the droplet's own loopback, not the orchestrator's: the pull would fail there,
    after the droplet is paid for. `ImageError` before any machine, from the plan stage and `dropship
    check` alike. Local machines share the orchestrator's loopback, so they pass."""
    reference = manifest.target(name).container
    if provider != "digitalocean" or reference is None:
        return
    image = parse_image(reference)
    if is_loopback(image.registry):
        index = [t.name for t in manifest.targets].index(name)
        raise ImageError(
            f"targets[{index}].container is on {image.registry}, a loopback address: a droplet would pull it "
            "from its own loopback. Push the image to a registry the droplets reach by name (with TLS), "
            "or release with --provider local"
        )


@dataclass(frozen=True)
class RegistryValue:
    """A `DockerRegistryCredentials` block's values (a build container's registry)."""

    registry_url: str
    username: str
    password: str = field(repr=False)


def pin_build_image(
    manifest: Manifest, name: str, registries: Mapping[str, RegistryValue | None]
) -> tuple[ImageRef, str]:
    """Target `name`'s build image and the digest it names in its registry now, asked with the target's
    `container_credentials` block (`registries`: block name -> values, None for a block that does not
    exist). `ImageError` for a missing block, a block for another registry, a refused login, a missing
    image; the one place both the plan stage and `dropship check` resolve a build image."""
    target = manifest.target(name)
    assert target.container is not None
    index = [t.name for t in manifest.targets].index(name)
    image = parse_image(target.container)
    block = target.container_credentials
    value = registries.get(block)
    if value is None:
        raise missing_block(block, f"targets[{index}].container_credentials", image.registry)
    check_block_registry(block, value.registry_url, image.registry, f"targets[{index}].container")
    with Skopeo(RegistryAuth(image.registry, value.username, value.password)) as skopeo:
        return image, resolve(skopeo, image, f"targets[{index}].container")


def pin_build_images(
    manifest: Manifest, targets: Sequence[str], registries: Mapping[str, RegistryValue | None]
) -> dict[str, str]:
    """{target: registry/name@sha256:...} for every target of `targets` with a `container`."""
    pinned: dict[str, str] = {}
    for name in targets:
        if manifest.target(name).container is not None:
            image, digest = pin_build_image(manifest, name, registries)
            pinned[name] = image.pinned(digest)
    return pinned


# --- on the build machine -------------------------------------------------------------------------


def container_environment(declared: dict[str, str], machine_marker: str | None) -> dict[str, str]:
    """The container's environment: what dropship and the manifest declare for the build (never the
    worker's PATH or locale: the image has its own). On a local machine the machine's marker is added,
    so its teardown finds the container's processes as it finds every other process of the machine."""
    env = dict(declared)
    if machine_marker:
        env["DROPSHIP_MACHINE_ID"] = machine_marker
    return env


def run_spec(
    *, source: Path, home: Path, env: dict[str, str], identity: tuple[int, int] | None, target: str
) -> dict[str, Any]:
    """The `docker create` settings of a build container (prefect-docker passes them to the SDK)."""
    spec: dict[str, Any] = {
        "environment": env,
        "working_dir": str(source),
        "network_mode": "host",
        "volumes": {
            str(source): {"bind": str(source), "mode": "rw"},
            str(home): {"bind": str(home), "mode": "rw"},
        },
        "labels": {"dropship.target": target},
        "name": f"dropship-build-{target}",
        "detach": True,
    }
    if identity is not None:  # the worker is root: the build runs unprivileged, as it would without a container
        spec["user"] = f"{identity[0]}:{identity[1]}"
    return spec


@contextmanager
def docker_errors(target: str, what: str) -> Iterator[None]:
    """The Docker SDK's errors during a build container's `what` as one-line `BuildFailed`s."""
    import docker.errors
    import requests

    try:
        yield
    except DropshipError:
        raise
    except docker.errors.DockerException as exc:
        # a new client asks the daemon's API version first and wraps a refused connection in a
        # DockerException: the same dead dockerd as below, said the same way. An APIError is the
        # daemon's own answer (raised from an HTTPError): its explanation is the message.
        if not isinstance(exc, docker.errors.APIError) and isinstance(
            exc.__cause__, (requests.ConnectionError, requests.Timeout, OSError)
        ):
            raise _not_answering(target, what, exc.__cause__) from exc
        text = getattr(exc, "explanation", None) or str(exc)
        raise BuildFailed(target, f"{what}: {' '.join(str(text).split())[:300]}") from exc
    except (requests.RequestException, OSError) as exc:
        raise _not_answering(target, what, exc) from exc


def _not_answering(target: str, what: str, cause: BaseException) -> BuildFailed:
    return BuildFailed(target, f"{what}: the build's dockerd is not answering ({type(cause).__name__})")


class BuildDocker(BuildDaemon):
    """The dockerd of one build container, in `<workspace>/DOCKERD_FOLDER`; a context manager."""

    def __init__(self, workspace: Path, target: str, search_path: str | None = None) -> None:
        super().__init__(workspace / DOCKERD_FOLDER, target, "a build container", search_path)
