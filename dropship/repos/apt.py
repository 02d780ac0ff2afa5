"""APT repository builder (Debian layout, signed, by-hash, retention).

    pool/<component>/<l>/<source>/<package>_<version>_<arch>.deb
    dists/<suite>/{Release,InRelease,Release.gpg}
    dists/<suite>/<component>/binary-<arch>/{Packages,Packages.gz,Packages.xz}
    dists/<suite>/<component>/binary-<arch>/by-hash/SHA256/<digest>

The published `Packages` files are the repository's state: a package already
listed is carried over from its stanza and never read or hashed again, so
adding one package to a large suite costs one .deb read. Release lists only
SHA256 and SHA512 and a UTC Date; `Acquire-By-Hash: yes` with by-hash copies
(kept for the previous generation too) so a client caught between two
publications never sees "Hash Sum mismatch".
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import multiprocessing
import os
import tarfile
import zlib
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, BinaryIO

from debian.arfile import ArError, ArFile
from debian.deb822 import Release
from debian.debian_support import Version

from dropship.errors import RepositoryError
from dropship.repos.files import file_digests, gzip_bytes, link_or_copy, stream_digests, write_atomic, xz_bytes
from dropship.signing import Signer

INDEX_HASHES = (("SHA256", "sha256"), ("SHA512", "sha512"))
# Fields copied from the control file first, in Debian's customary order.
FIELD_ORDER = (
    "Package",
    "Source",
    "Version",
    "Architecture",
    "Maintainer",
    "Installed-Size",
    "Pre-Depends",
    "Depends",
    "Recommends",
    "Suggests",
    "Conflicts",
    "Breaks",
    "Replaces",
    "Provides",
    "Section",
    "Priority",
    "Homepage",
)


@dataclass(frozen=True)
class AptSettings:
    origin: str
    label: str
    component: str
    architectures: tuple[str, ...]
    keep_versions: int = 3
    valid_for: timedelta | None = None


@dataclass
class SuiteResult:
    suite: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Entry:
    """One stanza of a Packages index, kept as the text that is published.

    Carried-over stanzas are never re-parsed by a full deb822 parser: only the
    four fields that identify and order them are read, which keeps adding one
    package to a 10,000-package suite far below a second.
    """

    package: str
    arch: str
    version: str
    filename: str
    text: str
    """The stanza, ending in one newline."""

    @classmethod
    def from_text(cls, text: str) -> Entry:
        fields: dict[str, str] = {}
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name in _KEY_FIELDS and name not in fields:
                fields[name] = value.strip()
        missing = _KEY_FIELDS - fields.keys()
        if missing:
            raise RepositoryError(f"a Packages stanza lacks {', '.join(sorted(missing))}: {text[:80]!r}")
        return cls(
            fields["Package"], fields["Architecture"], fields["Version"], fields["Filename"], text.rstrip("\n") + "\n"
        )

    @property
    def key(self) -> tuple[str, str]:
        return (self.package, self.version)


_KEY_FIELDS = frozenset({"Package", "Architecture", "Version", "Filename"})


def pool_path(component: str, source: str, filename: str) -> str:
    """Debian's pool layout: `lib` sources get four-letter prefixes."""
    prefix = source[:4] if source.startswith("lib") and len(source) > 3 else source[:1]
    return f"pool/{component}/{prefix}/{source}/{filename}"


def _field_line(name: str, value: str) -> str:
    """One deb822 field as python-debian would dump it (multi-line values kept)."""
    return f"{name}:{'' if value.startswith(chr(10)) else ' '}{value}\n"


def control_fields(handle: BinaryIO, name: str) -> dict[str, str]:
    """The fields of a .deb's control file, in file order.

    python-debian's ArFile finds the control member and tarfile opens it; only
    the small control text is split here (its Deb822 parser costs more than the
    rest of indexing a package together).
    """
    archive = ArFile(fileobj=handle)
    member = next((m for m in archive.getmembers() if m.name.startswith("control.tar")), None)
    if member is None:
        raise RepositoryError(f"{name} is not a readable .deb: it has no control.tar member")
    if member.name.endswith(".zst"):
        raise RepositoryError(
            f"{name}: {member.name} is zstd-compressed, which dropship cannot read; build it with dpkg-deb -Zxz"
        )
    # control.tar is a few KB: decompress it in one C call; tarfile then reads plain tar
    decompress = DECOMPRESSORS.get(member.name.rsplit(".", 1)[-1])
    data = member.read()
    if decompress is not None:
        tar = tarfile.open(fileobj=io.BytesIO(decompress(data)), mode="r:")
    else:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    with tar:
        info = next((i for i in tar if i.name in ("./control", "control")), None)
        extracted = tar.extractfile(info) if info is not None else None
        if extracted is None:
            raise RepositoryError(f"{name} is not a readable .deb: control.tar has no control file")
        return parse_stanza(extracted.read().decode("utf-8"), f"{name} is not a readable .deb")


DECOMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gz": gzip.decompress,
    "xz": lzma.decompress,
    "bz2": bz2.decompress,
    "tar": lambda data: data,
}


def parse_stanza(text: str, where: str) -> dict[str, str]:
    """One deb822 paragraph (of `where`, for errors); continuation lines stay in the value as python-debian keeps them."""
    fields: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0] in " \t":
            if not name:
                raise RepositoryError(
                    f"{where}: continuation line before any field: {line[:80]!r}; rebuild the package"
                )
            fields[name] += "\n" + line
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise RepositoryError(f"{where}: {line[:80]!r} is not a field (Name: value); rebuild the package")
        fields[name] = value.strip()
    return fields


def read_deb(path: Path, component: str) -> Entry:
    """The Packages stanza of `path`, from its own control data (one open, one pass)."""
    try:
        with path.open("rb") as handle:
            control = control_fields(handle, path.name)
            handle.seek(0)
            digests = stream_digests(handle, "sha256", "sha512")
            size = handle.tell()
    except (ArError, tarfile.TarError, OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as exc:
        raise RepositoryError(f"{path.name} is not a readable .deb: {exc}") from exc
    for required in ("Package", "Version", "Architecture"):
        if required not in control:
            raise RepositoryError(f"{path.name}: control data has no {required} field")
    package, version, arch = control["Package"], control["Version"], control["Architecture"]
    source = (control.get("Source") or package).split(" ", 1)[0]
    filename = pool_path(component, source, f"{package}_{version.split(':', 1)[-1]}_{arch}.deb")
    ordered = [k for k in FIELD_ORDER if k in control]
    ordered += [k for k in control if k not in _ORDERED and k != "Description"]
    lines = [_field_line(k, control[k]) for k in ordered]
    lines += [
        _field_line("Filename", filename),
        _field_line("Size", str(size)),
        _field_line("SHA256", digests["sha256"]),
        _field_line("SHA512", digests["sha512"]),
    ]
    if "Description" in control:
        lines.append(_field_line("Description", control["Description"]))
    return Entry(package, arch, version, filename, "".join(lines))


_ORDERED = frozenset(FIELD_ORDER)


def stage(root: Path, component: str, architectures: tuple[str, ...], debs: list[Path]) -> list[Entry]:
    """Read each new package and link it into the pool, over every core when there are many.

    A pool file that already exists with other content is refused: a
    published version must never change under the clients that have it.
    """
    jobs = [(root, component, architectures, deb) for deb in debs]
    workers = min(os.cpu_count() or 1, 8)
    if len(jobs) < PARALLEL_THRESHOLD or workers < 2:
        return [_stage_one(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(_stage_one, jobs, chunksize=max(16, len(jobs) // (workers * 8))))


def _stage_one(job: tuple[Path, str, tuple[str, ...], Path]) -> Entry:
    root, component, architectures, deb = job
    entry = read_deb(deb, component)
    if entry.arch != "all" and entry.arch not in architectures:
        raise RepositoryError(
            f"{deb.name} is for {entry.arch}, not one of this repository's architectures ({', '.join(architectures)})"
        )
    pool_file = root / entry.filename
    try:
        existing = pool_file.stat()
    except FileNotFoundError:
        link_or_copy(deb, pool_file)
        return entry
    source = deb.stat()
    same = (existing.st_dev, existing.st_ino) == (source.st_dev, source.st_ino)
    if not same and file_digests(pool_file, "sha256")["sha256"] != _field(entry, "SHA256"):
        raise RepositoryError(
            f"{entry.filename} is already published with different content: a version must not be rebuilt differently"
        )
    return entry  # already in place


PARALLEL_THRESHOLD = 256


def read_index(path: Path) -> list[Entry]:
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [Entry.from_text(block) for block in text.split("\n\n") if block.strip()]


def _retain(entries: dict[tuple[str, str], Entry], keep: int) -> tuple[list[Entry], list[Entry]]:
    """Keep the newest `keep` versions of each package; return (kept in index order, dropped)."""
    groups: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries.values():
        groups[entry.package].append(entry)
    kept: list[Entry] = []
    dropped: list[Entry] = []
    for package in sorted(groups):
        group = groups[package]
        if len(group) > 1:
            group.sort(key=lambda e: Version(e.version), reverse=True)
        kept += reversed(group[:keep])
        dropped += group[keep:]
    return kept, dropped


class AptRepository:
    """Adds .debs to suites of the tree at `root` and re-signs what changed."""

    def __init__(self, root: Path, settings: AptSettings) -> None:
        self.root = root
        self.settings = settings

    def _binary_dir(self, suite: str, arch: str) -> Path:
        return self.root / "dists" / suite / self.settings.component / f"binary-{arch}"

    def add(self, suite: str, debs: list[Path], signer: Signer, *, now: datetime | None = None) -> SuiteResult:
        """Add `debs` to `suite`, apply retention, rewrite and sign its indices."""
        result = SuiteResult(suite)
        settings = self.settings
        by_arch: dict[str, dict[tuple[str, str], Entry]] = {
            arch: {e.key: e for e in read_index(self._binary_dir(suite, arch) / "Packages")}
            for arch in settings.architectures
        }
        for entry in stage(self.root, settings.component, settings.architectures, debs):
            arches = settings.architectures if entry.arch == "all" else (entry.arch,)
            new = any(entry.key not in by_arch[arch] for arch in arches)
            for arch in arches:
                by_arch[arch][entry.key] = entry
            if new:  # a package the suite already has is not "added" again
                result.added.append(entry.filename)
        indices: dict[str, list[Entry]] = {}
        for arch, entries in by_arch.items():
            kept, dropped = _retain(entries, settings.keep_versions)
            indices[arch] = kept
            result.removed += [e.filename for e in dropped]
        self._write_suite(suite, indices, signer, now or datetime.now(UTC))
        return result

    def _write_suite(self, suite: str, indices: dict[str, list[Entry]], signer: Signer, now: datetime) -> None:
        settings = self.settings
        suite_dir = self.root / "dists" / suite
        previous = _previous_hashes(suite_dir / "Release")
        files: list[tuple[str, dict[str, str], int]] = []
        for arch, entries in sorted(indices.items()):
            directory = self._binary_dir(suite, arch)
            plain = "\n".join(e.text for e in entries).encode("utf-8")
            with ThreadPoolExecutor(max_workers=2) as compressors:  # zlib and lzma release the GIL
                gz, xz = compressors.submit(gzip_bytes, plain), compressors.submit(xz_bytes, plain)
                variants = (("Packages", plain), ("Packages.gz", gz.result()), ("Packages.xz", xz.result()))
            for name, data in variants:
                path = directory / name
                write_atomic(path, data)
                digests = {algo: hashlib.new(algo, data).hexdigest() for _, algo in INDEX_HASHES}
                for field_name, algo in INDEX_HASHES:
                    link_or_copy(path, directory / "by-hash" / field_name / digests[algo])
                files.append((str(path.relative_to(suite_dir)), digests, len(data)))
            _prune_by_hash(directory, keep=previous | {d[a] for _, d, _ in files for _, a in INDEX_HASHES})
        release = Release()
        release["Origin"] = settings.origin
        release["Label"] = settings.label
        release["Suite"] = suite
        release["Codename"] = suite
        release["Date"] = format_datetime(now.astimezone(UTC), usegmt=True)
        if settings.valid_for is not None:
            release["Valid-Until"] = format_datetime((now + settings.valid_for).astimezone(UTC), usegmt=True)
        release["Architectures"] = " ".join(sorted(settings.architectures))
        release["Components"] = settings.component
        release["Acquire-By-Hash"] = "yes"
        for field_name, algo in INDEX_HASHES:
            hashes: Any = [{algo: digests[algo], "size": str(size), "name": name} for name, digests, size in files]
            release[field_name] = hashes  # python-debian renders a list of dicts as a multi-line field
        text = release.dump().encode("utf-8")
        write_atomic(suite_dir / "Release", text)
        write_atomic(suite_dir / "Release.gpg", signer.detach_sign(text))
        write_atomic(suite_dir / "InRelease", signer.clearsign(text))

    def referenced_pool_files(self) -> set[str]:
        """Every pool path listed by some suite's index."""
        referenced: set[str] = set()
        dists = self.root / "dists"
        if not dists.exists():
            return referenced
        for index in dists.glob(f"*/{self.settings.component}/binary-*/Packages"):
            referenced |= {e.filename for e in read_index(index)}
        return referenced

    def prune_pool(self) -> list[str]:
        """Delete pool files no suite lists any more; return their paths."""
        pool = self.root / "pool"
        if not pool.exists():
            return []
        referenced = self.referenced_pool_files()
        removed = []
        for path in sorted(pool.rglob("*.deb")):
            relative = str(path.relative_to(self.root))
            if relative not in referenced:
                path.unlink()
                removed.append(relative)
        for directory in sorted(pool.rglob("*"), reverse=True):
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
        return removed


def _field(entry: Entry, name: str) -> str:
    for line in entry.text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def _previous_hashes(release_path: Path) -> set[str]:
    if not release_path.exists():
        return set()
    release = Release(release_path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for field_name, algo in INDEX_HASHES:
        for entry in release.get(field_name, []):
            found.add(entry[algo])
    return found


def _prune_by_hash(directory: Path, keep: set[str]) -> None:
    """Keep by-hash files of this and the previous generation only."""
    for field_name, _ in INDEX_HASHES:
        folder = directory / "by-hash" / field_name
        if folder.exists():
            for path in folder.iterdir():
                if path.name not in keep:
                    path.unlink()
