"""Content hashes of targets, and the store of what each hash built.

A target's content hash covers the git blob ids of the files its rebuild
patterns match at the release's commit (read from git objects: exact, no
working tree), the hashes of the targets it depends on (so transitively),
and its recipe (arch, format, build command, artifact globs, image, size,
environment, and the build container's image by digest). For a tag release the package version is included too: a new
tag must produce packages that carry the new version. A development build is
content-addressed only, so a commit that touches no target's files rebuilds
nothing.

The store keeps the artifacts of every successful build by content hash, with
their sha256; a lookup re-checks every file, so a tampered entry is a miss and
the target is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dropship.errors import StoreError
from dropship.manifest import Manifest, Target
from dropship.process import run
from dropship.repos.files import sha256_file

HASH_VERSION = "dropship-content-hash-v1"


@dataclass(frozen=True)
class TargetHash:
    target: str
    digest: str
    files: tuple[tuple[str, str], ...]
    """(path, blob id) of every file the rebuild patterns match."""


def tree_files(repo: Path, commit: str) -> list[tuple[str, str]]:
    """(path, object id) of every entry in the commit's tree."""
    out = run(["git", "-C", str(repo), "ls-tree", "-r", "-z", "--full-tree", commit], what="git ls-tree")
    files = []
    for record in out.split("\0"):
        if not record:
            continue
        meta, _, path = record.partition("\t")
        files.append((path, meta.split()[2]))
    return files


def recipe(manifest: Manifest, target: Target, container: str | None = None) -> dict[str, object]:
    """What the build does, besides its files. `container` is the target's build image pinned by
    digest (`registry/name@sha256:...`, resolved at plan time), or its reference as written when
    it was not resolved (a target this release does not build)."""
    spec = manifest.machine_spec(target)
    return {
        "arch": target.arch.value,
        "format": target.format.value if target.format else None,
        "build": list(target.build),
        "artifacts": list(target.artifacts),
        "env": dict(sorted(target.env.items())),
        "image": spec["image"],
        "size": spec["size"],
        # only when declared, so targets without language packages keep their hashes
        **({"packages": [p.model_dump(mode="json") for p in target.packages]} if target.packages else {}),
        # likewise only for a target built in a container: the image by digest, so a moved tag rebuilds
        **({"container": container or target.container} if target.container else {}),
    }


def _order(manifest: Manifest) -> list[Target]:
    """Targets with every dependency before its dependents (the manifest refuses cycles)."""
    done: dict[str, Target] = {}

    def visit(target: Target) -> None:
        if target.name not in done:
            for dep in target.depends_on:
                visit(manifest.target(dep))
            done[target.name] = target

    for target in manifest.targets:
        visit(target)
    return list(done.values())


def content_hashes(
    manifest: Manifest,
    files: list[tuple[str, str]],
    *,
    version: str | None,
    containers: dict[str, str] | None = None,
) -> dict[str, TargetHash]:
    """The content hash of every target of the manifest; `containers` maps a target to its build
    image pinned by digest (dropship/containers.py)."""
    hashes: dict[str, TargetHash] = {}
    for target in _order(manifest):
        patterns = [re.compile(p) for p in target.rebuild_patterns]
        matched = tuple(sorted((path, blob) for path, blob in files if any(p.search(path) for p in patterns)))
        digest = hashlib.sha256()
        digest.update(f"{HASH_VERSION}\n".encode())
        digest.update(
            json.dumps(recipe(manifest, target, (containers or {}).get(target.name)), sort_keys=True).encode() + b"\n"
        )
        for path, blob in matched:
            digest.update(f"file {blob} {path}\n".encode())
        for dep in sorted(target.depends_on):
            digest.update(f"dep {dep} {hashes[dep].digest}\n".encode())
        if version is not None:
            digest.update(f"version {version}\n".encode())
        hashes[target.name] = TargetHash(target.name, digest.hexdigest(), matched)
    return hashes


@dataclass
class StoredFile:
    name: str
    size: int
    sha256: str


@dataclass
class StoredBuild:
    digest: str
    target: str
    version: str
    created: str
    files: list[StoredFile]
    inputs: list[tuple[str, str]] = field(default_factory=list)
    """The (path, blob) the hash covered, to say later what changed."""


NOT_STORED = "not in the store"


@dataclass(frozen=True)
class Lookup:
    build: StoredBuild | None
    problem: str = ""
    """Why there is no usable build: missing, or which file failed its check."""


class LocalArtifactStore:
    """`<root>/objects/<digest>/` with the files and build.json; `<root>/targets/<t>.json` the latest."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, digest: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise StoreError(f"{digest[:80]!r} is not a content hash (64 hex digits): the store keeps builds by sha256")
        return self.root / "objects" / digest

    def put(
        self, digest: str, target: str, version: str, files: list[Path], inputs: tuple[tuple[str, str], ...]
    ) -> StoredBuild:
        final = self._dir(digest)
        staging = final.with_name(f".{digest}.{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        stored = []
        for path in files:
            shutil.copy2(path, staging / path.name)
            stored.append(StoredFile(path.name, path.stat().st_size, sha256_file(path)))
        build = StoredBuild(digest, target, version, datetime.now(UTC).isoformat(), stored, list(inputs))
        (staging / "build.json").write_text(json.dumps(asdict(build), indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.rename(staging, final)
        (self.root / "targets").mkdir(parents=True, exist_ok=True)
        latest = self.root / "targets" / f"{target}.json"
        latest.with_suffix(".tmp").write_text(json.dumps({"digest": digest}))
        latest.with_suffix(".tmp").replace(latest)
        return build

    def _load(self, digest: str) -> StoredBuild | None:
        """The build stored under `digest`; None when there is none or its build.json is unusable (rebuilt)."""
        try:
            data = json.loads((self._dir(digest) / "build.json").read_text())
            data["files"] = [StoredFile(**f) for f in data["files"]]
            data["inputs"] = [tuple(i) for i in data.get("inputs", [])]
            return StoredBuild(**data)
        except (OSError, ValueError, KeyError, TypeError, StoreError):
            return None

    def get(self, digest: str, destination: Path) -> Lookup:
        """Copy a build's files to `destination` after checking each one's sha256."""
        build = self._load(digest)
        if build is None:
            return Lookup(None, NOT_STORED)
        folder = self._dir(digest)
        for stored in build.files:
            path = folder / stored.name
            if not path.is_file() or sha256_file(path) != stored.sha256:
                return Lookup(None, f"{stored.name} in the store fails its sha256 check")
        destination.mkdir(parents=True, exist_ok=True)
        for stored in build.files:
            shutil.copy2(folder / stored.name, destination / stored.name)
        return Lookup(build)

    def last(self, target: str) -> StoredBuild | None:
        try:
            digest = json.loads((self.root / "targets" / f"{target}.json").read_text())["digest"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return self._load(str(digest))


def why_built(previous: StoredBuild | None, current: TargetHash, *, forced: bool) -> str:
    """A short reason for the summary: which matched files changed, or what else did."""
    if forced:
        return "forced"
    if previous is None:
        return "first build"
    before = dict(previous.inputs)
    after = dict(current.files)
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        return f"changed: {shown}"
    return "recipe, dependency or version changed"


@dataclass(frozen=True)
class Decision:
    """Build or reuse one target, and why: the one place that decides it."""

    reused: StoredBuild | None
    """The stored build whose checked files are now in the run (None: build it)."""
    reason: str
    """For the summary and the progress line: `cache hit <digest>`, `first build`, `changed: ...`,
    `forced`, or `rebuilt: cached build unusable (...)`."""


def build_or_reuse(
    store: LocalArtifactStore, target: str, current: TargetHash, destination: Path, *, forced: bool
) -> Decision:
    """Reuse the stored build of `current` (its files checked by sha256 and copied to
    `destination`) unless forced or unusable; otherwise say why the target is built."""
    if not forced:
        lookup = store.get(current.digest, destination)
        if lookup.build is not None:
            return Decision(lookup.build, f"cache hit {current.digest[:12]}")
        if lookup.problem != NOT_STORED:
            return Decision(None, f"rebuilt: cached build unusable ({lookup.problem})")
    return Decision(None, why_built(store.last(target), current, forced=forced))
