"""`dropship init`: a commented `dropship.toml` for the project in a folder.

A newcomer's first manifest should load as it is (so `dropship check` can
say what else is missing), name the project after its repository, and say
in comments what each field does and what to change. The build command is
the one thing dropship cannot guess: it is written as a placeholder that
fails with a message until the project's own command replaces it.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from dropship.errors import ConfigError

ARCHES = ("amd64", "arm64")
FORMATS = ("deb", "rpm")


def project_name(folder: Path) -> str:
    """The repository's name (its origin URL's last part), else the folder's, as a valid project name."""
    name = folder.name
    try:
        url = subprocess.run(
            ["git", "-C", str(folder), "remote", "get-url", "origin"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        url = ""
    if url:
        name = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1].removesuffix(".git")
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63]
    if not cleaned or not cleaned[0].isalnum():
        raise ConfigError(f"can't make a project name from {name!r}: pass --name")
    return cleaned


def _target(name: str, arch: str, fmt: str) -> str:
    return (
        "[[targets]]\n"
        f'name = "{name}"\n'
        f'arch = "{arch}"\n'
        f'format = "{fmt}"\n'
        "# The argument list that builds this target in the unpacked source on its\n"
        "# machine (no shell). It gets $DROPSHIP_VERSION and $SOURCE_DATE_EPOCH.\n"
        f'build = ["sh", "-c", "echo \'replace the build command of {name} in dropship.toml\' >&2; exit 1"]\n'
        "# Files the build leaves, relative to the source root.\n"
        f'artifacts = ["out/*.{fmt}"]\n'
        "# Debian packages the machine needs for this build (installed at bootstrap).\n"
        '# setup = ["build-essential"]\n'
        "# Rebuild only when files matching these patterns change.\n"
        '# rebuild_patterns = ["^src/", "^packaging/"]\n'
        "# Build inside this image from your registry (pinned by digest at each release;\n"
        '# needs "docker.io" in setup and a DockerRegistryCredentials block).\n'
        '# container = "registry.example.org/build/debian:12"\n'
        '# container_credentials = "dropship-registry"\n'
    )


def render(name: str, arches: Sequence[str], formats: Sequence[str]) -> str:
    """The manifest text: one target per (arch, format)."""
    for arch in arches:
        if arch not in ARCHES:
            raise ConfigError(f"unknown arch {arch!r}: use {' or '.join(ARCHES)}")
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown format {fmt!r}: use {' or '.join(FORMATS)}")
    if not arches or not formats:
        raise ConfigError("give at least one --arch and one --format")
    targets = "\n".join(_target(f"{arch}-{fmt}", arch, fmt) for fmt in formats for arch in arches)
    return (
        f"# dropship manifest of {name}. Reference: docs/manifest.md of dropship.\n"
        "# Next: `dropship blocks` creates the blocks named below, `dropship check`\n"
        "# says what is still missing, `dropship release vX.Y.Z` releases.\n\n"
        "[project]\n"
        f'name = "{name}"\n'
        'source = "."                        # the git repository (this folder)\n'
        '# test = ["make", "check"]          # runs before any machine is created\n\n'
        "[defaults]                          # machines, unless a target says otherwise\n"
        'size = "s-2vcpu-4gb"\n'
        'image = "debian-12-x64"\n'
        'region = "nyc1"\n\n'
        f"{targets}\n"
        "[repository]\n"
        f'origin = "{name}"\n'
        f'label = "{name}"\n'
        'component = "main"\n'
        "keep_versions = 3                   # versions of each package kept per suite\n"
        f'key_name = "{name}-release"\n\n'
        "[blocks]                            # Prefect blocks: `dropship blocks` makes them\n"
        f'signing_key = "{name}-signing-key"\n'
        f'repo_server = "{name}-repo"\n\n'
        "[machines]\n"
        'provider = "local"                  # or "digitalocean"\n'
    )


def write_manifest(
    folder: Path, *, name: str | None, arches: Sequence[str], formats: Sequence[str], force: bool = False
) -> Path:
    """Write `folder/dropship.toml`; an existing one is kept unless `force`."""
    path = folder / "dropship.toml"
    if path.exists() and not force:
        raise ConfigError(f"{path} exists: edit it, or pass --force to replace it")
    path.write_text(render(name or project_name(folder), arches, formats))
    return path
