"""Small file helpers shared by the repository builders."""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
from pathlib import Path

CHUNK = 1 << 20


def file_digests(path: Path, *algorithms: str) -> dict[str, str]:
    """Hex digests of `path` for each algorithm, reading the file once."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def sha256_file(path: Path) -> str:
    return file_digests(path, "sha256")["sha256"]


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a reader sees the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (no name, mtime 0), so unchanged indices hash the same."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def xz_bytes(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, preset=6)


def link_or_copy(source: Path, destination: Path) -> None:
    """Hard-link (unchanged files cost no space); copy across file systems."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.exists():
        destination.unlink()
    try:
        os.link(source, destination)
    except OSError:
        import shutil

        shutil.copy2(source, destination)
