"""Small file helpers shared by the repository builders."""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from dropship.errors import RepositoryError

CHUNK = 1 << 20


def file_digests(path: Path, *algorithms: str) -> dict[str, str]:
    """Hex digests of `path` for each algorithm, reading the file once."""
    with path.open("rb") as handle:
        return stream_digests(handle, *algorithms)


def stream_digests(handle: BinaryIO, *algorithms: str) -> dict[str, str]:
    """Hex digests of what is left to read in `handle`, for each algorithm."""
    hashers = {name: hashlib.new(name) for name in algorithms}
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
    # Preset 0: a tenth of preset 6's time on a large Packages file; the index is
    # rewritten on every publish and clients pay little for the size.
    return lzma.compress(data, format=lzma.FORMAT_XZ, preset=0)


def link_or_copy(source: Path, destination: Path) -> None:
    """Hard-link (unchanged files cost no space); copy across file systems.

    Tries the link first and creates the folder or replaces an existing file
    only when told to: for thousands of pool files the saved system calls count.
    """
    for _ in range(3):
        try:
            os.link(source, destination)
            return
        except FileNotFoundError:
            destination.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            destination.unlink()
        except OSError:  # EXDEV and friends: another file system
            try:
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.unlink(missing_ok=True)
                shutil.copy2(source, destination)
            except OSError as exc:
                raise RepositoryError(
                    f"could not link or copy {source.name} to {destination}: {exc.strerror or exc}; "
                    "check the free space and permissions there"
                ) from exc
            return
    raise RepositoryError(
        f"could not link {source.name} to {destination}: it kept appearing and vanishing; "
        "is another release writing the same tree?"
    )
