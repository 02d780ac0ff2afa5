"""The release plan: everything decided and checked before a machine exists.

Loading the manifest, classifying the tag, resolving it to a commit and
archiving that commit all happen here, so every kind of bad input ends the
release while it has cost nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from dropship.cache import TargetHash, content_hashes, tree_files
from dropship.containers import refuse_loopback_for_droplets
from dropship.errors import ConfigError
from dropship.manifest import Manifest, load_manifest
from dropship.run_folder import RunFolder
from dropship.source import archive, repository_path, resolve
from dropship.tags import Classification, ReleaseClass, classify, package_version, release_id

RUN_ID_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True)
class ReleasePlan:
    run_id: str
    manifest_path: str
    project: str
    release_class: ReleaseClass
    name: str
    """The tag, or the ref of a development build."""
    suites: tuple[str, ...]
    commit: str
    source_date_epoch: int
    """The commit's time: exported to builds so they can be reproducible."""
    version: str
    release_id: str
    run_dir: str
    archive: str
    targets: tuple[str, ...]
    dry_run: bool
    provider: str
    """local or digitalocean: the manifest's, unless the run overrides it."""
    content: dict[str, TargetHash]
    """Each target's content hash and the files it covers."""
    containers: dict[str, str] = field(default_factory=dict)
    """Build images of this release's targets with a `container`, pinned by digest (`registry/name@sha256:...`):
    what their hashes cover and what their machines pull."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @property
    def folder(self) -> RunFolder:
        """Every path of this run (dropship/run_folder.py)."""
        return RunFolder(Path(self.run_dir))

    @property
    def short_id(self) -> str:
        return self.run_id.replace("-", "")[:8]


def select_targets(manifest: Manifest, wanted: list[str] | None) -> tuple[str, ...]:
    names = [t.name for t in manifest.targets]
    if not wanted:
        return tuple(names)
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise ConfigError(f"unknown target(s) {', '.join(unknown)}; the manifest has {', '.join(names)}")
    selected = set(wanted)
    todo = list(wanted)
    while todo:  # a target's dependencies build with it: their artifacts are its inputs
        for dep in manifest.target(todo.pop()).depends_on:
            if dep not in selected:
                selected.add(dep)
                todo.append(dep)
    return tuple(n for n in names if n in selected)


def make_plan(
    manifest_path: str | Path,
    *,
    tag: str | None,
    ref: str | None,
    targets: list[str] | None,
    workdir: Path,
    run_id: str,
    started: datetime,
    dry_run: bool = False,
    provider: str | None = None,
    resolve_containers: Callable[[Manifest, tuple[str, ...]], dict[str, str]] | None = None,
) -> tuple[Manifest, ReleasePlan]:
    """Validate the inputs and archive the source; raise `ConfigError`s on bad input.

    `resolve_containers(manifest, targets)` pins the build image of every selected target with a
    `container` to a digest, asking its registry (the caller has the credentials); a target with a
    `container` and no resolver is refused here, before any machine."""
    if not RUN_ID_RE.match(run_id):
        raise ConfigError(f"invalid run id {run_id!r}")
    if provider not in (None, "local", "digitalocean"):
        raise ConfigError(f"unknown machine provider {provider!r}: use local or digitalocean")
    manifest_file = Path(manifest_path).resolve()
    manifest = load_manifest(manifest_file)
    classification: Classification = classify(manifest, tag=tag, ref=ref)
    selected = select_targets(manifest, targets)
    chosen = provider or manifest.machines.provider
    for name in selected:
        refuse_loopback_for_droplets(manifest, name, chosen)
    repo = repository_path(manifest.project.source, manifest_file.parent, workdir / "sources")
    revision = resolve(repo, classification.name, is_tag=classification.is_tag)
    folder = RunFolder.of(workdir, run_id)
    run_dir = folder.root
    run_dir.mkdir(parents=True, exist_ok=True)
    source_archive = archive(revision, run_dir / f"{manifest.project.name}-{revision.commit[:12]}.tar.gz")
    version = package_version(classification, revision.commit, revision.commit_time)
    wanted = tuple(n for n in selected if manifest.target(n).container)
    if wanted and resolve_containers is None:
        raise ConfigError(f"target(s) {', '.join(wanted)} build in a container: this caller cannot resolve images")
    containers = resolve_containers(manifest, wanted) if wanted and resolve_containers else {}
    content = content_hashes(
        manifest,
        tree_files(repo, revision.commit),
        version=version if classification.is_tag else None,
        containers=containers,
    )
    plan = ReleasePlan(
        run_id=run_id,
        manifest_path=str(manifest_file),
        project=manifest.project.name,
        release_class=classification.release_class,
        name=classification.name,
        suites=classification.suites,
        commit=revision.commit,
        source_date_epoch=int(revision.commit_time.timestamp()),
        version=version,
        release_id=release_id(classification, started),
        run_dir=str(run_dir),
        archive=str(source_archive),
        targets=selected,
        dry_run=dry_run,
        provider=chosen,
        content={name: content[name] for name in selected},
        containers=containers,
    )
    folder.plan.write_text(plan.to_json())
    return manifest, plan
