"""RPM repository builder: rpmsign, createrepo_c --update, signed repomd.xml.

    rpm/<suite>/<arch>/packages/<name>-<version>-<release>.<arch>.rpm
    rpm/<suite>/<arch>/repodata/{repomd.xml,repomd.xml.asc,...}
    rpm/<suite>.repo

Packages are signed with `rpmsign --addsign` (SHA-256 digest, loopback
pinentry) in a scratch folder before they enter the tree, because rpmsign
rewrites files in place and the tree's files are hard links shared with the
previous release. `repomd.xml.asc` is written only after createrepo_c has
returned, from the repomd.xml it wrote: there is no window in which a
signature and its metadata disagree.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from dropship.errors import CommandError, RepositoryError
from dropship.process import run
from dropship.repos.files import link_or_copy, write_atomic
from dropship.signing import Signer

# SHA256HEADER and PAYLOADDIGEST identify a package's content; signing changes neither.
QUERY_FORMAT = "%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\t%{SHA256HEADER} %{PAYLOADDIGEST}\\n"


@dataclass(frozen=True)
class RpmHeader:
    name: str
    epoch: int
    version: str
    release: str
    arch: str
    identity: str = ""

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.release}.{self.arch}.rpm"


@dataclass
class RpmSuiteResult:
    suite: str
    arch: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def read_headers(paths: list[Path]) -> list[RpmHeader]:
    """Name, epoch, version, release and arch of each package, a few hundred per `rpm -qp`."""
    headers: list[RpmHeader] = []
    for start in range(0, len(paths), HEADER_BATCH):
        batch = paths[start : start + HEADER_BATCH]
        try:
            out = run(
                ["rpm", "-qp", "--nosignature", "--nodigest", "--queryformat", QUERY_FORMAT, *map(str, batch)],
                what="rpm -qp",
            )
        except CommandError as exc:
            names = ", ".join(p.name for p in batch[:3]) + (" ..." if len(batch) > 3 else "")
            raise RepositoryError(f"not a readable RPM among {names}: {exc.output.strip()[-300:]}") from exc
        lines = out.splitlines()
        if len(lines) != len(batch):
            raise RepositoryError(f"rpm -qp answered {len(lines)} lines for {len(batch)} packages")
        for line in lines:
            name, epoch, version, release, arch, identity = line.split("\t")
            headers.append(RpmHeader(name, int(epoch or 0), version, release, arch, identity))
    return headers


HEADER_BATCH = 400


def read_header(path: Path) -> RpmHeader:
    return read_headers([path])[0]


def rpmvercmp(a: str, b: str) -> int:
    """rpm's version comparison (segments of digits or letters, `~` sorts first)."""
    if a == b:
        return 0
    ia, ib = 0, 0
    while ia < len(a) or ib < len(b):
        while ia < len(a) and not a[ia].isalnum() and a[ia] not in "~^":
            ia += 1
        while ib < len(b) and not b[ib].isalnum() and b[ib] not in "~^":
            ib += 1
        ca = a[ia] if ia < len(a) else ""
        cb = b[ib] if ib < len(b) else ""
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            ia, ib = ia + 1, ib + 1
            continue
        if ca == "^" or cb == "^":
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            ia, ib = ia + 1, ib + 1
            continue
        if not ca or not cb:
            break
        pattern = r"\d+" if ca.isdigit() else r"[A-Za-z]+"
        ma = re.match(pattern, a[ia:])
        mb = re.match(pattern, b[ib:])
        seg_a = ma.group(0) if ma else ""
        if not mb:
            return 1 if ca.isdigit() else -1
        seg_b = mb.group(0)
        ia += len(seg_a)
        ib += len(seg_b)
        if ca.isdigit():
            na, nb = int(seg_a), int(seg_b)
            if na != nb:
                return 1 if na > nb else -1
        elif seg_a != seg_b:
            return 1 if seg_a > seg_b else -1
    rest_a, rest_b = ia < len(a), ib < len(b)
    return 0 if rest_a == rest_b else (1 if rest_a else -1)


def _evr_key(header: RpmHeader) -> tuple[int, _V, _V]:
    return (header.epoch, _V(header.version), _V(header.release))


class _V:
    """Orders strings with `rpmvercmp` for sorting."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __lt__(self, other: _V) -> bool:
        return rpmvercmp(self.text, other.text) < 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _V) and rpmvercmp(self.text, other.text) == 0


def sign_rpms(rpms: list[Path], signer: Signer, scratch: Path) -> list[Path]:
    """Signed copies of `rpms` in `scratch` (the inputs are left alone)."""
    scratch.mkdir(parents=True, exist_ok=True)
    copies = []
    for rpm in rpms:
        copy = scratch / rpm.name
        shutil.copyfile(rpm, copy)
        copies.append(copy)
    if not copies:
        return []
    extra = "--batch --no-tty --pinentry-mode loopback"
    passfile: Path | None = None
    if signer.passphrase is not None:
        passfile = signer.gnupghome / "rpmsign.pass"
        passfile.write_text(signer.passphrase)
        passfile.chmod(0o600)
        extra += f" --passphrase-file {passfile}"
    argv = [
        "rpmsign",
        "--addsign",
        # Debian's rpm expects /usr/bin/gpg2, which Debian's gnupg no longer ships.
        "--define",
        f"__gpg {shutil.which('gpg') or '/usr/bin/gpg'}",
        "--define",
        f"_gpg_path {signer.gnupghome}",
        "--define",
        f"_gpg_name {signer.fingerprints[0]}",
        "--define",
        "_gpg_digest_algo sha256",
        "--define",
        f"_gpg_sign_cmd_extra_args {extra}",
        *[str(c) for c in copies],
    ]
    try:
        run(argv, what="rpmsign", input_text="")
    except CommandError as exc:
        raise RepositoryError(f"rpmsign refused to sign: {exc.output.strip()[-400:]}") from exc
    finally:
        if passfile is not None:
            passfile.unlink(missing_ok=True)
    return copies


class RpmRepository:
    """Adds RPMs to `rpm/<suite>/<arch>/` trees under `root` and signs their metadata."""

    def __init__(self, root: Path, *, keep_versions: int = 3, base_url: str = "", key_url: str = "") -> None:
        self.root = root
        self.keep_versions = keep_versions
        self.base_url = base_url.rstrip("/")
        self.key_url = key_url

    def arch_dir(self, suite: str, arch: str) -> Path:
        return self.root / "rpm" / suite / arch

    def add(self, suite: str, rpms: list[Path], signer: Signer, project: str) -> list[RpmSuiteResult]:
        """Sign and add `rpms` to `suite`; regenerate and sign each touched arch's metadata.

        A package already published under the same file name is kept as it is
        (not re-signed) when it is the same package, and refused when its
        content differs: a published version never changes.
        """
        by_arch: dict[str, list[tuple[RpmHeader, Path]]] = defaultdict(list)
        for header, path in zip(read_headers(rpms), rpms, strict=True):
            by_arch[header.arch].append((header, path))
        results = []
        with tempfile.TemporaryDirectory(prefix="dropship-rpmsign-") as scratch:
            for arch, items in sorted(by_arch.items()):
                result = RpmSuiteResult(suite, arch)
                packages = self.arch_dir(suite, arch) / "packages"
                present = [packages / h.filename for h, _ in items if (packages / h.filename).exists()]
                published = {p.name: h for p, h in zip(present, read_headers(present), strict=True)}
                new = []
                for header, _path in items:
                    if header.filename not in published:
                        new.append(header)
                        continue
                    if published[header.filename].identity != header.identity:
                        raise RepositoryError(
                            f"{header.filename} is already published in {suite} with different content: "
                            "a version must not be rebuilt differently"
                        )
                signed = sign_rpms([path for h, path in items if h in new], signer, Path(scratch) / arch)
                for header, path in zip(new, signed, strict=True):
                    link_or_copy(path, packages / header.filename)
                    result.added.append(header.filename)
                result.removed = self._retain(packages)
                self._index(self.arch_dir(suite, arch), signer)
                results.append(result)
        self.write_repo_file(suite, project)
        return results

    def _retain(self, packages: Path) -> list[str]:
        groups: dict[tuple[str, str], list[tuple[RpmHeader, Path]]] = defaultdict(list)
        paths = sorted(packages.glob("*.rpm"))
        for header, path in zip(read_headers(paths), paths, strict=True):
            groups[(header.name, header.arch)].append((header, path))
        removed = []
        for group in groups.values():
            group.sort(key=lambda item: _evr_key(item[0]), reverse=True)
            for _, path in group[self.keep_versions :]:
                path.unlink()
                removed.append(path.name)
        return removed

    def _index(self, directory: Path, signer: Signer) -> None:
        repodata = directory / "repodata"
        # A hard-linked repodata from the previous release must not be edited
        # in place: createrepo_c writes a new folder and swaps it in, and the
        # signature is replaced, never appended to.
        argv = [
            "createrepo_c",
            "--quiet",
            "--update",
            "--checksum",
            "sha256",
            "--general-compress-type",
            "gz",
            str(directory),
        ]
        try:
            run(argv, what="createrepo_c")
        except CommandError as exc:
            raise RepositoryError(f"createrepo_c failed for {directory}: {exc.output.strip()[-400:]}") from exc
        repomd = (repodata / "repomd.xml").read_bytes()
        (repodata / "repomd.xml.asc").unlink(missing_ok=True)
        write_atomic(repodata / "repomd.xml.asc", signer.detach_sign(repomd))

    def write_repo_file(self, suite: str, project: str) -> Path:
        """`rpm/<suite>.repo`: gpgcheck and repo_gpgcheck on, key URL given."""
        text = (
            f"[{project}-{suite}]\n"
            f"name={project} ({suite})\n"
            f"baseurl={self.base_url}/rpm/{suite}/$basearch\n"
            "enabled=1\n"
            "gpgcheck=1\n"
            "repo_gpgcheck=1\n"
            f"gpgkey={self.key_url}\n"
        )
        path = self.root / "rpm" / f"{suite}.repo"
        write_atomic(path, text.encode())
        return path
