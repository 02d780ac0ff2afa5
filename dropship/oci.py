"""Container images in an OCI registry, through `skopeo`.

A release's image targets each build one per-architecture image on their
machine (`dropship.oci_build`), which comes back as a `docker save` archive
like any other artifact. On the orchestrator, after every target succeeded:

1. `push_archive` turns each archive into an OCI image (skopeo, into a local
   OCI layout, which fixes its digest) and pushes it by digest: no tag;
2. `push_index` writes one OCI image index (manifest list) naming those
   digests with their platforms, and pushes it by digest;
3. `move_tags`, only once the packages are published, points the release's
   tags (`image_tags`: stable `X.Y.Z`, `X.Y`, `latest`; extra its own; a
   development build `nightly` and `dev-<commit>`) at that index, and says
   what each tag pointed at before (kept in the summary).

Promotion and rollback (tasks/oci.py) are `move_tags` of an index already in
the registry: nothing is built and no machine exists. Every copy keeps digests (`--preserve-digests`), so a tag
names exactly the index that was assembled.

Credentials go to skopeo in an auth file (mode 0600, in a private temporary
folder removed afterwards), never on its command line, in the environment
or in a log; every message is one line with the password scrubbed. Like
dockerd, a registry on a loopback address is spoken to over plain HTTP.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dropship.errors import ImageError
from dropship.redaction import basic_token, redact_secrets

INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
LIST_TYPES = (INDEX_TYPE, "application/vnd.docker.distribution.manifest.list.v2+json")
REPOSITORY_RE = re.compile(
    r"(?P<registry>[A-Za-z0-9.-]+(?::[0-9]{1,5})?)/(?P<path>[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)",
    re.ASCII,
)
"""`registry[:port]/path`: a registry host always, then Docker's repository path grammar."""
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
TIMEOUT = 600.0


@dataclass(frozen=True)
class RegistryAuth:
    """Who we are at a registry: plain values read from a `DockerRegistryCredentials` block."""

    registry: str
    """host[:port], as in image references."""
    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"RegistryAuth(registry={self.registry!r}, username={self.username!r}, password=****)"


@dataclass(frozen=True)
class PlatformImage:
    """One per-architecture image in the registry."""

    platform: str
    """`linux/amd64`, `linux/arm64` (`os/architecture[/variant]`)."""
    digest: str
    size: int
    media_type: str = MANIFEST_TYPE


@dataclass(frozen=True)
class IndexImage:
    """What a release's image is: the index digest and its platforms."""

    repository: str
    digest: str
    platforms: tuple[PlatformImage, ...]

    @property
    def reference(self) -> str:
        return f"{self.repository}@{self.digest}"


def parse_repository(repository: str) -> tuple[str, str]:
    """(`host[:port]`, path) of `host[:port]/path`; `ImageError` when it isn't one."""
    match = REPOSITORY_RE.fullmatch(repository)
    if match is None or len(repository) > 255:
        raise ImageError(
            f"{repository[:80]!r} is not an image repository: expected registry-host[:port]/name "
            "(lowercase name parts), e.g. registry.example.org/hello"
        )
    return match["registry"], match["path"]


def is_loopback(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def image_tags(release_class: str, version: str, commit: str) -> list[str]:
    """The tags a release moves: stable `X.Y.Z`, `X.Y`, `latest`; extra its version
    (`1.5.0-rc1`; a `+` becomes `_`, which tags allow); development `nightly`, `dev-<commit[:12]>`."""
    if release_class == "stable":
        major, minor, _patch = version.split(".")
        tags = [version, f"{major}.{minor}", "latest"]
    elif release_class == "extra":
        tags = [version.replace("~", "-").replace("+", "_")]
    elif release_class == "development":
        tags = ["nightly", f"dev-{commit[:12]}"]
    else:
        raise ImageError(f"unknown release class {release_class!r}: expected stable, extra or development")
    for tag in tags:
        if not TAG_RE.fullmatch(tag):
            raise ImageError(f"{tag[:80]!r} is not a valid image tag")
    return tags


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Skopeo:
    """skopeo with one registry's credentials in a private auth file; use as a context manager."""

    def __init__(self, auth: RegistryAuth | None, *, program: str = "skopeo") -> None:
        self.auth = auth
        self.program = program
        self._folder: Path | None = None

    def __enter__(self) -> Skopeo:
        if shutil.which(self.program) is None:
            raise ImageError(f"{self.program} not found: install Debian's skopeo on the orchestrator")
        self._folder = Path(tempfile.mkdtemp(prefix="dropship-oci-"))  # mode 0700
        authfile = self._folder / "auth.json"
        auths: dict[str, dict[str, str]] = {}
        if self.auth is not None:
            auths[self.auth.registry] = {"auth": basic_token(self.auth.username, self.auth.password)}
        fd = os.open(authfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as stream:
            json.dump({"auths": auths}, stream)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    @property
    def scratch(self) -> Path:
        if self._folder is None:
            raise ImageError("skopeo used outside its context")
        return self._folder

    def _scrub(self, text: str) -> str:
        return text if self.auth is None else redact_secrets(text, self.auth.username, self.auth.password)

    def _tls(self, registry: str, flag: str = "--tls-verify") -> list[str]:
        return [f"{flag}=false"] if is_loopback(registry) else []

    def run(self, args: Sequence[str], what: str) -> bytes:
        argv = [self.program, *args]
        try:
            done = subprocess.run(
                [argv[0], argv[1], "--authfile", str(self.scratch / "auth.json"), *argv[2:]],
                capture_output=True,
                timeout=TIMEOUT,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise ImageError(f"{what}: skopeo did not finish within {TIMEOUT:.0f} s") from exc
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.decode(errors="replace").splitlines() if ln.strip()]
            last = lines[-1] if lines else f"exit code {done.returncode}"
            last = re.sub(r'^time="[^"]*" level=\w+ msg="(.*)"$', r"\1", last).replace('\\"', '"')
            last = re.sub(r'^Error parsing image name "[^"]*": ', "", last)
            if "unauthorized" in last.lower() or "authentication required" in last.lower():
                last += ": check the username and password in the DockerRegistryCredentials block"
            raise ImageError(self._scrub(f"{what}: {last[:400]}"))
        return done.stdout

    def raw_manifest(self, reference: str) -> bytes | None:
        """The manifest bytes behind `repository:tag` or `repository@digest`; None when it doesn't exist."""
        registry = reference.split("/", 1)[0]
        try:
            return self.run(
                ["inspect", "--raw", "--retry-times", "2", *self._tls(registry), f"docker://{reference}"],
                f"reading {reference}",
            )
        except ImageError as exc:
            text = str(exc).lower()
            if "manifest unknown" in text or "not found" in text or "name unknown" in text:
                return None
            raise

    def raw_config(self, reference: str) -> bytes:
        registry = reference.split("/", 1)[0]
        return self.run(
            ["inspect", "--config", "--raw", *self._tls(registry), f"docker://{reference}"],
            f"reading the config of {reference}",
        )

    def copy(self, source: str, destination: str, what: str, *, all_images: bool = False) -> None:
        args = ["copy", "--quiet", "--retry-times", "2", "--preserve-digests"]
        if all_images:
            args.append("--all")
        for ref, flag in ((source, "--src-tls-verify"), (destination, "--dest-tls-verify")):
            if ref.startswith("docker://"):
                args += self._tls(ref[len("docker://") :].split("/", 1)[0], flag)
        self.run([*args, source, destination], what)


def _layout_blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def _platform_of(config: Mapping[str, object]) -> str:
    os_name, arch = config.get("os"), config.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str):
        raise ImageError("the image's config names no os and architecture: build it with a --platform")
    variant = config.get("variant")
    return f"{os_name}/{arch}" + (f"/{variant}" if isinstance(variant, str) and variant else "")


def push_archive(skopeo: Skopeo, archive: Path, repository: str) -> PlatformImage:
    """Push a `docker save` archive to `repository` by digest (no tag); its platform comes from its config."""
    parse_repository(repository)
    layout = skopeo.scratch / f"layout-{hashlib.sha256(str(archive).encode()).hexdigest()[:12]}"
    shutil.rmtree(layout, ignore_errors=True)
    digest_file = skopeo.scratch / "digest"
    skopeo.run(
        [
            "copy",
            "--quiet",
            "--format",
            "oci",
            "--digestfile",
            str(digest_file),
            f"docker-archive:{archive}",
            f"oci:{layout}:image",
        ],
        f"reading the image archive {archive.name}",
    )
    digest = digest_file.read_text().strip()
    manifest_bytes = _layout_blob(layout, digest)
    manifest = json.loads(manifest_bytes)
    config = json.loads(_layout_blob(layout, manifest["config"]["digest"]))
    image = PlatformImage(_platform_of(config), digest, len(manifest_bytes), manifest.get("mediaType", MANIFEST_TYPE))
    skopeo.copy(f"oci:{layout}:image", f"docker://{repository}@{digest}", f"pushing {archive.name} to {repository}")
    shutil.rmtree(layout, ignore_errors=True)
    return image


def index_document(images: Sequence[PlatformImage]) -> bytes:
    """The OCI image index naming `images`, one per platform, in a stable order."""
    seen: dict[str, str] = {}
    entries = []
    for image in sorted(images, key=lambda i: i.platform):
        if image.platform in seen:
            raise ImageError(f"two images for {image.platform} ({seen[image.platform][:19]}, {image.digest[:19]})")
        seen[image.platform] = image.digest
        os_name, arch, *variant = image.platform.split("/")
        platform: dict[str, str] = {"architecture": arch, "os": os_name}
        if variant:
            platform["variant"] = variant[0]
        entries.append(
            {"mediaType": image.media_type, "digest": image.digest, "size": image.size, "platform": platform}
        )
    if not entries:
        raise ImageError("an image index needs at least one platform image")
    document = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": entries}
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def push_index(skopeo: Skopeo, repository: str, images: Sequence[PlatformImage]) -> IndexImage:
    """Assemble one OCI image index from per-platform digests already in `repository`; push it by digest.

    skopeo copies only whole images, so a local OCI layout holds the index, each
    platform manifest and its config (read back from the registry); the layers
    are not needed there: the registry already has them, and skopeo reuses them.
    """
    parse_repository(repository)
    document = index_document(images)
    digest = _digest(document)
    layout = skopeo.scratch / "index-layout"
    shutil.rmtree(layout, ignore_errors=True)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / digest.split(":", 1)[1]).write_bytes(document)
    for image in images:
        raw = skopeo.raw_manifest(f"{repository}@{image.digest}")
        if raw is None or _digest(raw) != image.digest:
            raise ImageError(
                f"{repository}@{image.digest[:19]} ({image.platform}) is not in the registry: push it first"
            )
        (blobs / image.digest.split(":", 1)[1]).write_bytes(raw)
        config = skopeo.raw_config(f"{repository}@{image.digest}")
        (blobs / _digest(config).split(":", 1)[1]).write_bytes(config)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    ref: dict[str, object] = {
        "mediaType": INDEX_TYPE,
        "digest": digest,
        "size": len(document),
        "annotations": {"org.opencontainers.image.ref.name": "index"},
    }
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [ref]}))
    skopeo.copy(
        f"oci:{layout}:index",
        f"docker://{repository}@{digest}",
        f"pushing the image index to {repository}",
        all_images=True,
    )
    shutil.rmtree(layout, ignore_errors=True)
    return IndexImage(repository, digest, tuple(sorted(images, key=lambda i: i.platform)))


def tag_digest(skopeo: Skopeo, repository: str, tag: str) -> str | None:
    """The digest `repository:tag` points at, or None when the tag doesn't exist."""
    raw = skopeo.raw_manifest(f"{repository}:{tag}")
    return None if raw is None else _digest(raw)


def current_tags(skopeo: Skopeo, repository: str, tags: Sequence[str]) -> dict[str, str | None]:
    """Each tag's digest now (None: no such tag): what a failed release must leave as it was."""
    return {tag: tag_digest(skopeo, repository, tag) for tag in tags}


def platforms(skopeo: Skopeo, reference: str) -> list[PlatformImage]:
    """The platform images of an index (or the one image of a plain manifest)."""
    raw = skopeo.raw_manifest(reference)
    if raw is None:
        raise ImageError(f"{reference} is not in the registry")
    document = json.loads(raw)
    if document.get("mediaType") in LIST_TYPES or "manifests" in document:
        found = []
        for entry in document["manifests"]:
            p = entry.get("platform") or {}
            name = f"{p.get('os')}/{p.get('architecture')}" + (f"/{p['variant']}" if p.get("variant") else "")
            found.append(
                PlatformImage(name, entry["digest"], int(entry["size"]), entry.get("mediaType", MANIFEST_TYPE))
            )
        return found
    config = json.loads(skopeo.raw_config(reference))
    return [PlatformImage(_platform_of(config), _digest(raw), len(raw), document.get("mediaType", MANIFEST_TYPE))]


def move_tags(skopeo: Skopeo, repository: str, digest: str, tags: Sequence[str]) -> dict[str, str | None]:
    """Point every tag at `repository@digest`; returns what each pointed at before (None: it was new).

    The index must already be in the registry: a tag move copies manifests only.
    """
    if not DIGEST_RE.fullmatch(digest):
        raise ImageError(f"{digest[:80]!r} is not a sha256 digest")
    if skopeo.raw_manifest(f"{repository}@{digest}") is None:
        raise ImageError(f"{repository}@{digest[:19]} is not in the registry: nothing to tag")
    before = current_tags(skopeo, repository, tags)
    for tag in tags:
        if not TAG_RE.fullmatch(tag):
            raise ImageError(f"{tag[:80]!r} is not a valid image tag")
        if before[tag] == digest:
            continue
        skopeo.copy(
            f"docker://{repository}@{digest}",
            f"docker://{repository}:{tag}",
            f"tagging {repository}:{tag}",
            all_images=True,
        )
    return before
