"""The sign stage: one repository tree with every suite of the release updated.

The tree starts as a hard-link copy of what is published now (so earlier
versions stay available, subject to retention) and ends complete and signed;
publication then only has to move it into place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dropship.manifest import Manifest, PackageFormat
from dropship.repos.apt import AptRepository, AptSettings
from dropship.repos.index import IndexedRelease, ReleaseIndex, locate_artifacts, update_index
from dropship.repos.keys import publish_keys, write_sources
from dropship.repos.rpm import RpmRepository
from dropship.signing import Signer


@dataclass
class TreeResult:
    root: Path
    suites: list[str]
    apt_added: list[str] = field(default_factory=list)
    apt_removed: list[str] = field(default_factory=list)
    rpm_added: list[str] = field(default_factory=list)
    rpm_removed: list[str] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)


def sign_release(
    tree: Path,
    manifest: Manifest,
    suites: list[str],
    debs: list[Path],
    rpms: list[Path],
    signer: Signer,
    *,
    base_url: str,
    now: datetime | None = None,
) -> TreeResult:
    """Add `debs` and `rpms` to every suite in `suites` and sign the result."""
    now = now or datetime.now(UTC)
    repo = manifest.repository
    result = TreeResult(tree, list(suites), fingerprints=signer.fingerprints)
    deb_arches = sorted({t.arch.value for t in manifest.targets if t.format is PackageFormat.DEB})
    if deb_arches:
        apt = AptRepository(
            tree,
            AptSettings(
                origin=repo.origin,
                label=repo.label or manifest.project.name,
                component=repo.component,
                architectures=tuple(deb_arches),
                keep_versions=repo.keep_versions,
                valid_for=timedelta(days=repo.valid_days) if repo.valid_days else None,
            ),
        )
        for suite in suites:
            added = apt.add(suite, debs, signer, now=now)
            result.apt_added += added.added
        result.apt_removed = apt.prune_pool()
    key_url = f"{base_url.rstrip('/')}/keys/{repo.key_name}.asc"
    if any(t.format is PackageFormat.RPM for t in manifest.targets):
        rpm = RpmRepository(tree, keep_versions=repo.keep_versions, base_url=base_url, key_url=key_url)
        for suite in suites:
            for added_rpm in rpm.add(suite, rpms, signer, manifest.project.name):
                result.rpm_added += [f"rpm/{suite}/{added_rpm.arch}/packages/{n}" for n in added_rpm.added]
                result.rpm_removed += [f"rpm/{suite}/{added_rpm.arch}/packages/{n}" for n in added_rpm.removed]
    publish_keys(tree, repo.key_name, signer)
    all_suites = sorted({p.name for p in (tree / "dists").iterdir()} if (tree / "dists").exists() else set(suites))
    write_sources(tree, manifest.project.name, base_url, all_suites, repo.component, repo.key_name)
    return result


def sign_and_index(
    tree: Path,
    manifest: Manifest,
    release: IndexedRelease,
    packages: dict[str, list[Path]],
    signer: Signer,
    *,
    base_url: str,
) -> TreeResult:
    """Add each target's `packages` to `release.suites`, sign, and record `release` in the tree's index.

    The one path for a built release and a promoted one: they differ only in
    where the packages come from and what the index says about them.
    """
    files = [f for fs in packages.values() for f in fs]
    result = sign_release(
        tree,
        manifest,
        list(release.suites),
        [f for f in files if f.suffix == ".deb"],
        [f for f in files if f.suffix == ".rpm"],
        signer,
        base_url=base_url,
    )
    release.artifacts = locate_artifacts(tree, {t: [f.name for f in fs] for t, fs in packages.items()}, release.suites)
    update_index(tree, ReleaseIndex(manifest.project.name, base_url, manifest.repository.key_name), release)
    return result
