"""Language packages (wheels, sdists) checked and published to PyPI-compatible indexes.

The orchestrator publishes, never a build machine, and only after every
target and job succeeded. Credentials arrive as arguments (from a
`RegistryCredentials` block), travel to `twine` in its environment, never
on a command line, and are cut out of any output that reaches an error.

Publishing is idempotent: a file the index already serves with the same
sha256 counts as published; the same file name with other bytes is refused
before anything is uploaded (`RegistryError`), since a published version
never changes.
"""

from __future__ import annotations

import base64
import email.parser
import fnmatch
import re
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dropship.errors import CommandError, RegistryError
from dropship.jobs import LanguageKind, Registry
from dropship.manifest import Manifest
from dropship.process import run
from dropship.repos.files import sha256_file


@dataclass(frozen=True)
class LanguageFile:
    path: Path
    kind: LanguageKind
    name: str
    version: str
    sha256: str
    target: str
    registry: str | None


@dataclass(frozen=True)
class Published:
    file: str
    registry: str
    status: str
    """uploaded | already published"""
    sha256: str


def normalize(name: str) -> str:
    """PEP 503 project name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata(text: str) -> tuple[str, str]:
    message = email.parser.HeaderParser().parsestr(text)
    name, version = message.get("Name"), message.get("Version")
    if not name or not version:
        raise ValueError("metadata has no Name or Version")
    return str(name), str(version)


def inspect(path: Path, kind: LanguageKind) -> tuple[str, str]:
    """Name and version from the package's own metadata; refuse what is not a well-formed package."""
    try:
        if kind is LanguageKind.WHEEL:
            with zipfile.ZipFile(path) as wheel:
                metas = [n for n in wheel.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
                if len(metas) != 1:
                    raise ValueError("no single *.dist-info/METADATA")
                name, version = _metadata(wheel.read(metas[0]).decode())
            expected = f"{normalize(name).replace('-', '_')}-{version}-"
            if not path.name.lower().startswith(expected.lower()):
                raise ValueError(f"file name does not start with {expected}")
            return name, version
        if kind is LanguageKind.SDIST:
            with tarfile.open(path, "r:gz") as sdist:
                infos = [m for m in sdist.getmembers() if re.fullmatch(r"[^/]+/PKG-INFO", m.name)]
                handle = sdist.extractfile(infos[0]) if len(infos) == 1 else None
                if handle is None:
                    raise ValueError("no single <name>-<version>/PKG-INFO")
                return _metadata(handle.read().decode())
    except (OSError, zipfile.BadZipFile, tarfile.TarError, UnicodeDecodeError, ValueError) as exc:
        raise RegistryError(f"{path.name} is not a well-formed {kind.value}: {exc}") from exc
    raise RegistryError(f"{path.name}: {kind.value} packages are not supported yet")


def language_files(manifest: Manifest, targets: Sequence[str], artifacts: Path) -> list[LanguageFile]:
    """The collected language packages of `targets` (artifacts/<target>/), each inspected."""
    found: list[LanguageFile] = []
    for name in targets:
        target = manifest.target(name)
        for package in target.packages:
            pattern = Path(package.glob).name
            files = sorted(p for p in (artifacts / name).glob("*") if fnmatch.fnmatch(p.name, pattern))
            if not files:
                raise RegistryError(f"target {name}: no collected file matches {package.glob}")
            for path in files:
                pkg_name, version = inspect(path, package.kind)
                found.append(
                    LanguageFile(path, package.kind, pkg_name, version, sha256_file(path), name, package.registry)
                )
    return found


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class PypiIndex:
    """A PyPI-compatible index: read its simple API, upload with twine."""

    def __init__(self, registry: Registry, username: str, password: str, *, twine: Sequence[str] = ("twine",)) -> None:
        self.registry = registry
        self.username = username
        self.password = password
        self.twine = list(twine)
        self.index = (registry.index or registry.url.rstrip("/") + "/simple/").rstrip("/") + "/"

    def served(self, project: str) -> dict[str, str]:
        """{file name: sha256} the index serves for `project` (PEP 503 links with #sha256=)."""
        url = urllib.parse.urljoin(self.index, normalize(project) + "/")
        request = urllib.request.Request(url, headers={"Accept": "text/html"})
        if self.username or self.password:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                page = answer.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return {}
            raise RegistryError(f"registry {self.registry.name}: {url} answered {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise RegistryError(
                f"registry {self.registry.name}: cannot read {url}: {getattr(exc, 'reason', exc)}"
            ) from exc
        served: dict[str, str] = {}
        for href in re.findall(r'href="([^"]+)"', page):
            path, _, fragment = href.partition("#")
            filename = urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])
            digest = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else ""
            served[filename] = digest
        return served

    def upload(self, files: Sequence[Path]) -> str:
        env = {"TWINE_USERNAME": self.username, "TWINE_PASSWORD": self.password, "TWINE_NON_INTERACTIVE": "1"}
        argv = [
            *self.twine,
            "upload",
            "--repository-url",
            self.registry.url,
            "--non-interactive",
            "--disable-progress-bar",
            *map(str, files),
        ]
        try:
            return redact(run(argv, env=env, what="twine upload", timeout=600), [self.password])
        except CommandError as exc:
            tail = redact(" / ".join(exc.output.strip().splitlines()[-4:]), [self.password])
            raise RegistryError(
                f"registry {self.registry.name}: twine upload exited {exc.returncode}: {tail}"
            ) from None


def conflicts(files: Sequence[LanguageFile], index: PypiIndex) -> dict[str, str]:
    """{file: "new" | "already published"}; `RegistryError` if one is served with other bytes."""
    served: dict[str, str] = {}
    for project in sorted({f.name for f in files}):
        served.update(index.served(project))
    status: dict[str, str] = {}
    for file in files:
        have = served.get(file.path.name)
        if have is None:
            status[file.path.name] = "new"
        elif have == file.sha256:
            status[file.path.name] = "already published"
        else:
            raise RegistryError(
                f"registry {index.registry.name} already has {file.path.name} with sha256 {have[:12] or 'unknown'}..., "
                f"this build's is {file.sha256[:12]}...: a published version never changes; release a new version"
            )
    return status


def publish(files: Sequence[LanguageFile], index: PypiIndex) -> list[Published]:
    """Upload what the index lacks; refuse everything if one file name is served with other bytes."""
    status = conflicts(files, index)
    results = [
        Published(f.path.name, index.registry.name, "already published", f.sha256)
        for f in files
        if status[f.path.name] == "already published"
    ]
    missing = [f for f in files if status[f.path.name] == "new"]
    if missing:
        index.upload([f.path for f in missing])
        after: dict[str, str] = {}
        for project in sorted({f.name for f in missing}):
            after.update(index.served(project))
        for file in missing:
            if after.get(file.path.name) != file.sha256:
                raise RegistryError(
                    f"registry {index.registry.name}: {file.path.name} is not served with the "
                    f"uploaded sha256 after the upload"
                )
            results.append(Published(file.path.name, index.registry.name, "uploaded", file.sha256))
    return results
