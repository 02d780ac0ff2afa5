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

import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from debian.deb822 import Deb822, Packages, Release
from debian.debfile import DebError, DebFile
from debian.debian_support import Version

from dropship.errors import RepositoryError
from dropship.repos.files import file_digests, gzip_bytes, link_or_copy, write_atomic, xz_bytes
from dropship.signing import Signer

INDEX_HASHES = (("SHA256", "sha256"), ("SHA512", "sha512"))
# Fields copied from the control file first, in Debian's customary order.
FIELD_ORDER = (
    "Package", "Source", "Version", "Architecture", "Maintainer", "Installed-Size",
    "Pre-Depends", "Depends", "Recommends", "Suggests", "Conflicts", "Breaks",
    "Replaces", "Provides", "Section", "Priority", "Homepage",
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
    packages: list[dict[str, str]] = field(default_factory=list)


def pool_path(component: str, source: str, filename: str) -> str:
    """Debian's pool layout: `lib` sources get four-letter prefixes."""
    prefix = source[:4] if source.startswith("lib") and len(source) > 3 else source[:1]
    return f"pool/{component}/{prefix}/{source}/{filename}"


def read_deb(path: Path, component: str) -> Packages:
    """A Packages stanza for `path`, from its own control data (python-debian)."""
    try:
        control = DebFile(str(path)).debcontrol()
    except (DebError, OSError, ValueError, KeyError) as exc:
        raise RepositoryError(f"{path.name} is not a readable .deb: {exc}") from exc
    for required in ("Package", "Version", "Architecture"):
        if required not in control:
            raise RepositoryError(f"{path.name}: control data has no {required} field")
    source = str(control.get("Source") or control["Package"]).split(" ", 1)[0]
    version_without_epoch = str(control["Version"]).split(":", 1)[-1]
    name = f"{control['Package']}_{version_without_epoch}_{control['Architecture']}.deb"
    stanza = Packages()
    for key in FIELD_ORDER:
        if key in control:
            stanza[key] = control[key]
    for key, value in control.items():
        if key not in stanza and key != "Description":
            stanza[key] = value
    digests = file_digests(path, "sha256", "sha512")
    stanza["Filename"] = pool_path(component, source, name)
    stanza["Size"] = str(path.stat().st_size)
    stanza["SHA256"] = digests["sha256"]
    stanza["SHA512"] = digests["sha512"]
    if "Description" in control:
        stanza["Description"] = control["Description"]
    return stanza


def _read_index(path: Path) -> list[Packages]:
    if not path.exists():
        return []
    with path.open("rb") as handle:
        return [Packages(p) for p in Packages.iter_paragraphs(handle, use_apt_pkg=False)]


def _key(stanza: Deb822) -> tuple[str, str, str]:
    return (str(stanza["Package"]), str(stanza["Architecture"]), str(stanza["Version"]))


def _retain(stanzas: list[Packages], keep: int) -> tuple[list[Packages], list[Packages]]:
    """Keep the newest `keep` versions of each (package, arch); return (kept, dropped)."""
    groups: dict[tuple[str, str], list[Packages]] = defaultdict(list)
    for stanza in stanzas:
        groups[(str(stanza["Package"]), str(stanza["Architecture"]))].append(stanza)
    kept: list[Packages] = []
    dropped: list[Packages] = []
    for group in groups.values():
        group.sort(key=lambda s: Version(str(s["Version"])), reverse=True)
        kept += group[:keep]
        dropped += group[keep:]
    kept.sort(key=lambda s: (str(s["Package"]), str(s["Architecture"]), Version(str(s["Version"]))))
    return kept, dropped


def _dump(stanzas: list[Packages]) -> bytes:
    return b"\n".join(s.dump().encode("utf-8") for s in stanzas)


class AptRepository:
    """Adds .debs to suites of the tree at `root` and re-signs what changed."""

    def __init__(self, root: Path, settings: AptSettings) -> None:
        self.root = root
        self.settings = settings

    def _binary_dir(self, suite: str, arch: str) -> Path:
        return self.root / "dists" / suite / self.settings.component / f"binary-{arch}"

    def add(
        self, suite: str, debs: list[Path], signer: Signer, *, now: datetime | None = None
    ) -> SuiteResult:
        """Add `debs` to `suite`, apply retention, rewrite and sign its indices."""
        result = SuiteResult(suite)
        settings = self.settings
        by_arch: dict[str, list[Packages]] = {
            arch: _read_index(self._binary_dir(suite, arch) / "Packages") for arch in settings.architectures
        }
        for deb in debs:
            stanza = read_deb(deb, settings.component)
            arch = str(stanza["Architecture"])
            targets = list(settings.architectures) if arch == "all" else [arch]
            if arch != "all" and arch not in settings.architectures:
                raise RepositoryError(
                    f"{deb.name} is for {arch}, not one of this repository's architectures "
                    f"({', '.join(settings.architectures)})"
                )
            pool_file = self.root / str(stanza["Filename"])
            if pool_file.exists() and file_digests(pool_file, "sha256")["sha256"] != stanza["SHA256"]:
                raise RepositoryError(
                    f"{pool_file.relative_to(self.root)} is already published with different "
                    "content: a version must not be rebuilt differently"
                )
            link_or_copy(deb, pool_file)
            for target_arch in targets:
                entries = by_arch[target_arch]
                entries[:] = [s for s in entries if _key(s) != _key(stanza)]
                entries.append(stanza)
            result.added.append(str(stanza["Filename"]))
        for arch, entries in by_arch.items():
            kept, dropped = _retain(entries, settings.keep_versions)
            by_arch[arch] = kept
            result.removed += [str(s["Filename"]) for s in dropped]
            result.packages += [dict(s) for s in kept]
        self._write_suite(suite, by_arch, signer, now or datetime.now(timezone.utc))
        return result

    def _write_suite(
        self, suite: str, by_arch: dict[str, list[Packages]], signer: Signer, now: datetime
    ) -> None:
        settings = self.settings
        suite_dir = self.root / "dists" / suite
        previous = _previous_hashes(suite_dir / "Release")
        entries: list[tuple[str, dict[str, str], int]] = []
        for arch, stanzas in sorted(by_arch.items()):
            directory = self._binary_dir(suite, arch)
            plain = _dump(stanzas)
            for name, data in (("Packages", plain), ("Packages.gz", gzip_bytes(plain)), ("Packages.xz", xz_bytes(plain))):
                path = directory / name
                write_atomic(path, data)
                digests = file_digests(path, "sha256", "sha512")
                for field_name, algo in INDEX_HASHES:
                    link_or_copy(path, directory / "by-hash" / field_name / digests[algo])
                entries.append((str(path.relative_to(suite_dir)), digests, len(data)))
            _prune_by_hash(directory, keep=previous | {d[a] for _, d, _ in entries for _, a in INDEX_HASHES})
        release = Release()
        release["Origin"] = settings.origin
        release["Label"] = settings.label
        release["Suite"] = suite
        release["Codename"] = suite
        release["Date"] = format_datetime(now.astimezone(timezone.utc), usegmt=True)
        if settings.valid_for is not None:
            release["Valid-Until"] = format_datetime((now + settings.valid_for).astimezone(timezone.utc), usegmt=True)
        release["Architectures"] = " ".join(sorted(settings.architectures))
        release["Components"] = settings.component
        release["Acquire-By-Hash"] = "yes"
        for field_name, algo in INDEX_HASHES:
            hashes: Any = [{algo: digests[algo], "size": str(size), "name": name} for name, digests, size in entries]
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
            referenced |= {str(s["Filename"]) for s in _read_index(index)}
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


def remove_suite(root: Path, suite: str) -> None:
    shutil.rmtree(root / "dists" / suite, ignore_errors=True)
