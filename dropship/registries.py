"""Language packages checked and published to their registries: wheels and
sdists to PyPI-compatible indexes (`twine`), npm tarballs to npm registries
(`npm publish`).

The orchestrator publishes, never a build machine, and only after every
target and job succeeded. Credentials arrive as arguments (from a
`RegistryCredentials` block) and never appear on a command line: `twine`
gets them in its environment, `npm` in a temporary user config (mode 0600,
in a private folder removed after the upload). They are cut out of any
output that reaches an error.

Publishing is idempotent: a file the registry already serves with the same
digest (PyPI: the file name's sha256; npm: `name@version`'s `dist.integrity`)
counts as published; the same file or version with other bytes is refused
before anything is uploaded (`RegistryError`), since a published version
never changes.
"""

from __future__ import annotations

import base64
import email.parser
import fnmatch
import hashlib
import json
import os
import re
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dropship.errors import CommandError, RegistryError
from dropship.jobs import LanguageKind, Registry
from dropship.manifest import Manifest
from dropship.process import run
from dropship.redaction import basic_token, redact_secrets
from dropship.repos.files import sha256_file
from dropship.summary import Published


@dataclass(frozen=True)
class LanguageFile:
    path: Path
    kind: LanguageKind
    name: str
    version: str
    sha256: str
    target: str
    registry: str | None


def normalize(name: str) -> str:
    """PEP 503 project name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata(text: str) -> tuple[str, str]:
    message = email.parser.HeaderParser().parsestr(text)
    name, version = message.get("Name"), message.get("Version")
    if not name or not version:
        raise ValueError("metadata has no Name or Version")
    return str(name), str(version)


NPM_NAME = re.compile(r"(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*")
SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)


def _npm_package(path: Path) -> tuple[str, str]:
    """name and version from an npm tarball's package/package.json (what `npm pack` writes)."""
    with tarfile.open(path, "r:gz") as tgz:
        try:
            member = tgz.getmember("package/package.json")
        except KeyError:
            raise ValueError("no package/package.json inside") from None
        handle = tgz.extractfile(member)
        if handle is None:
            raise ValueError("package/package.json is not a file")
        data = json.loads(handle.read().decode())
    if not isinstance(data, dict):
        raise ValueError("package/package.json is not a JSON object")
    name, version = data.get("name"), data.get("version")
    if not isinstance(name, str) or len(name) > 214 or not NPM_NAME.fullmatch(name):
        raise ValueError(f"package.json name {name!r} is not a valid npm package name")
    if not isinstance(version, str) or not SEMVER.fullmatch(version):
        raise ValueError(f"package.json version {version!r} is not a semantic version (npm needs one)")
    if data.get("private") is True:
        raise ValueError('package.json says "private": true, which npm refuses to publish')
    return name, version


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
        if kind is LanguageKind.NPM:
            return _npm_package(path)
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, UnicodeDecodeError, ValueError) as exc:
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


class LanguageRegistry(Protocol):
    """What `conflicts` and `publish` need of a registry."""

    @property
    def registry(self) -> Registry: ...

    def key(self, file: LanguageFile) -> str:
        """What the registry knows the file as (PyPI: its file name; npm: name@version)."""
        ...

    def served(self, name: str) -> dict[str, str]:
        """{key: digest} of what the registry serves for the package `name`."""
        ...

    def differs(self, file: LanguageFile, have: str) -> str | None:
        """None if `have` (a served digest) is this file's bytes; else both digests, for the error."""
        ...

    def upload(self, files: Sequence[Path]) -> str: ...


def _get(url: str, what: str, authorization: str | None, accept: str) -> bytes | None:
    """The body at `url`, None on 404; `RegistryError` otherwise."""
    request = urllib.request.Request(url, headers={"Accept": accept})
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            body: bytes = answer.read()
            return body
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        hint = ": check its credentials block" if exc.code in (401, 403) else ""
        raise RegistryError(f"registry {what}: {url} answered {exc.code}{hint}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise RegistryError(f"registry {what}: cannot read {url}: {getattr(exc, 'reason', exc)}") from exc


class PypiIndex:
    """A PyPI-compatible index: read its simple API, upload with twine."""

    def __init__(self, registry: Registry, username: str, password: str, *, twine: Sequence[str] = ("twine",)) -> None:
        self.registry = registry
        self.username = username
        self.password = password
        self.twine = list(twine)
        self.index = (registry.index or registry.url.rstrip("/") + "/simple/").rstrip("/") + "/"

    def key(self, file: LanguageFile) -> str:
        return file.path.name

    def differs(self, file: LanguageFile, have: str) -> str | None:
        if have == file.sha256:
            return None
        return f"sha256 {have[:12] or 'unknown'}..., this build's is {file.sha256[:12]}..."

    def served(self, project: str) -> dict[str, str]:
        """{file name: sha256} the index serves for `project` (PEP 503 links with #sha256=)."""
        url = urllib.parse.urljoin(self.index, normalize(project) + "/")
        authorization = None
        if self.username or self.password:
            authorization = f"Basic {basic_token(self.username, self.password)}"
        body = _get(url, self.registry.name, authorization, "text/html")
        if body is None:
            return {}
        page = body.decode(errors="replace")
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
            return redact_secrets(run(argv, env=env, what="twine upload", timeout=600), self.username, self.password)
        except CommandError as exc:
            tail = redact_secrets(" / ".join(exc.output.strip().splitlines()[-4:]), self.username, self.password)
            raise RegistryError(
                f"registry {self.registry.name}: twine upload exited {exc.returncode}: {tail}"
            ) from None


def integrity(path: Path) -> str:
    """The Subresource Integrity string npm records as `dist.integrity` (sha512, base64)."""
    digest = hashlib.sha512()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def _semver_key(version: str) -> tuple[int, int, int, int] | None:
    found = SEMVER.fullmatch(version)
    if found is None:
        return None
    return int(found[1]), int(found[2]), int(found[3]), 0 if found[4] else 1


def dist_tag(version: str, latest: str | None) -> str:
    """The dist-tag `npm publish` gets (npm 11 wants one for these cases rather than guessing).

    A prerelease goes to `next`; a release older than the registry's `latest`
    (a maintenance release) to `latest-<major>`, as npm's own older lines;
    any other release becomes `latest`.
    """
    key = _semver_key(version)
    if key is None or key[3] == 0:
        return "next"
    current = _semver_key(latest) if latest else None
    if current is not None and current > key:
        return f"latest-{key[0]}"
    return "latest"


class NpmRegistry:
    """An npm registry: read packuments over HTTP, upload tarballs with `npm publish`.

    A `username` of `__token__` (the credentials block's default) or empty
    means the password is a token (`_authToken`, `Authorization: Bearer`);
    otherwise user and password go as basic auth (`_auth`).
    """

    def __init__(self, registry: Registry, username: str, password: str, *, npm: Sequence[str] = ("npm",)) -> None:
        if any(c in password for c in "\r\n"):  # it goes into an npmrc line and an HTTP header
            raise RegistryError(
                f"registry {registry.name}: the password or token has a line break: fix its credentials block"
            )
        self.registry = registry
        self.username = username
        self.password = password
        self.npm = list(npm)
        self.url = registry.url.rstrip("/") + "/"
        self.token = username in ("", "__token__")
        self._basic = basic_token(username, password)
        self._latest: dict[str, str | None] = {}

    def _authorization(self) -> str | None:
        if not self.password:
            return None
        return f"Bearer {self.password}" if self.token else f"Basic {self._basic}"

    def key(self, file: LanguageFile) -> str:
        return f"{file.name}@{file.version}"

    def differs(self, file: LanguageFile, have: str) -> str | None:
        if have.startswith("sha512-"):
            mine = integrity(file.path)
        elif have.startswith("sha1:"):
            mine = "sha1:" + hashlib.sha1(file.path.read_bytes()).hexdigest()
        else:
            return f"no digest, this build's is {integrity(file.path)[:19]}..."
        return None if have == mine else f"{have[:19]}..., this build's is {mine[:19]}..."

    def served(self, name: str) -> dict[str, str]:
        """{name@version: dist.integrity (or sha1:<shasum>)} from the packument at <url>/<name>."""
        url = self.url + urllib.parse.quote(name, safe="@")
        body = _get(url, self.registry.name, self._authorization(), "application/json")
        if body is None:
            self._latest[name] = None
            return {}
        try:
            packument = json.loads(body)
            versions = packument.get("versions") or {}
            tags = packument.get("dist-tags") or {}
            latest = tags.get("latest")
            served: dict[str, str] = {}
            for version, meta in versions.items():
                dist = meta.get("dist") or {}
                sri = str(dist.get("integrity") or "")
                have = next((part for part in sri.split() if part.startswith("sha512-")), "")
                if not have and dist.get("shasum"):
                    have = "sha1:" + str(dist["shasum"]).lower()
                served[f"{name}@{version}"] = have
        except (ValueError, AttributeError, TypeError) as exc:
            raise RegistryError(f"registry {self.registry.name}: {url} is not an npm packument: {exc}") from exc
        self._latest[name] = latest if isinstance(latest, str) else None
        return served

    def _userconfig(self, folder: Path) -> Path:
        """An npmrc with this registry's credentials only, readable by its owner only."""
        parts = urllib.parse.urlsplit(self.url)
        nerf = f"//{parts.netloc}{parts.path}"
        auth = f"{nerf}:_authToken={self.password}" if self.token else f"{nerf}:_auth={self._basic}"
        path = folder / "npmrc"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(f"registry={self.url}\n{auth}\nupdate-notifier=false\nfund=false\naudit=false\n")
        return path

    def upload(self, files: Sequence[Path]) -> str:
        """`npm publish` each tarball (its lifecycle scripts not run), with an explicit dist-tag."""
        outputs = []
        with tempfile.TemporaryDirectory(prefix="dropship-npm-") as tmp:  # mode 0700
            folder = Path(tmp)
            userconfig = self._userconfig(folder)
            for path in files:
                name, version = inspect(path, LanguageKind.NPM)
                if name not in self._latest:
                    self.served(name)
                tag = dist_tag(version, self._latest.get(name))
                argv = [
                    *self.npm,
                    "publish",
                    str(path.resolve()),
                    "--registry",
                    self.url,
                    "--userconfig",
                    str(userconfig),
                    "--tag",
                    tag,
                    "--ignore-scripts",
                    "--logs-max=0",
                    "--cache",
                    str(folder / "cache"),
                ]
                try:
                    outputs.append(run(argv, cwd=folder, what="npm publish", timeout=600))
                    if tag == "latest":  # the next tarball of this call compares with this one
                        self._latest[name] = version
                except CommandError as exc:
                    if exc.returncode == 127:
                        raise RegistryError(
                            f"registry {self.registry.name}: npm is not installed on the orchestrator "
                            "(it uploads npm packages): install Node.js and npm"
                        ) from None
                    raw = exc.output.strip().splitlines()
                    errors = [  # npm 9 says "npm ERR!", npm 10 and 11 "npm error"
                        re.sub(r"^npm (ERR!|error)", "", line).strip()
                        for line in raw
                        if re.match(r"npm (ERR!|error)", line) and "Log files were not written" not in line
                    ]
                    said = " / ".join(line for line in errors if line) or " / ".join(raw[-4:])
                    tail = redact_secrets(said, self.username, self.password)[
                        -600:
                    ]  # cut after redacting: no half secret left
                    raise RegistryError(
                        f"registry {self.registry.name}: npm publish {path.name} exited {exc.returncode}: {tail}"
                    ) from None
        return redact_secrets("".join(outputs), self.username, self.password)


def conflicts(files: Sequence[LanguageFile], index: LanguageRegistry) -> dict[str, str]:
    """{file: "new" | "already published"}; `RegistryError` if one is served with other bytes."""
    served: dict[str, str] = {}
    for name in sorted({f.name for f in files}):
        served.update(index.served(name))
    status: dict[str, str] = {}
    for file in files:
        key = index.key(file)
        have = served.get(key)
        if have is None:
            status[file.path.name] = "new"
            continue
        difference = index.differs(file, have)
        if difference is None:
            status[file.path.name] = "already published"
        else:
            raise RegistryError(
                f"registry {index.registry.name} already has {key} with {difference}: "
                "a published version never changes; release a new version"
            )
    return status


def publish(files: Sequence[LanguageFile], index: LanguageRegistry) -> list[Published]:
    """Upload what the registry lacks; refuse everything if one file is served with other bytes."""
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
        for name in sorted({f.name for f in missing}):
            after.update(index.served(name))
        for file in missing:
            have = after.get(index.key(file))
            if have is None or index.differs(file, have) is not None:
                raise RegistryError(
                    f"registry {index.registry.name}: {index.key(file)} is not served with the "
                    f"uploaded bytes after the upload"
                )
            results.append(Published(file.path.name, index.registry.name, "uploaded", file.sha256))
    return results
