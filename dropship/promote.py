"""Promotion: a development build that was tested becomes a stable (or extra) release as it is.

Nothing is rebuilt and no machine is made: the packages are taken from the
published tree, where the development release put them, and added to the
stable suites, signed again (the RPM signature header is rewritten; the
.deb files are the same bytes, the suite's Release is what gets signed).
The packages keep the version they were built with (`0~dev<time>.g<sha>`):
the binaries embed it, so renaming it would ship a package whose version
lies about its contents. The release index records the tag it was promoted
as and where it came from.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from dropship.errors import ConfigError
from dropship.manifest import Manifest
from dropship.repos.index import IndexedRelease, load_index
from dropship.tags import Classification, ReleaseClass, classify


@dataclass(frozen=True)
class Promotion:
    source: IndexedRelease
    classification: Classification
    packages: dict[str, list[Path]]
    """Per target, copies of the packages taken from the published tree."""


def prepare_promotion(manifest: Manifest, tree: Path, build_id: str, as_tag: str, scratch: Path) -> Promotion:
    """Check the request against the published index; copy the build's packages out of `tree`."""
    classification = classify(manifest, tag=as_tag)
    if classification.release_class is ReleaseClass.DEVELOPMENT:
        raise ConfigError(f"{as_tag!r} is not a release tag")
    history = load_index(tree)
    source = next((r for r in history if r.id == build_id), None)
    if source is None:
        builds = [r.id for r in history if r.release_class == ReleaseClass.DEVELOPMENT.value]
        raise ConfigError(
            f"no published release {build_id!r}; development builds in the index: {', '.join(builds) or 'none'}"
        )
    if source.release_class != ReleaseClass.DEVELOPMENT.value:
        raise ConfigError(f"{build_id} is a {source.release_class} release, not a development build")
    if any(r.name == as_tag and r.release_class != ReleaseClass.DEVELOPMENT.value for r in history):
        raise ConfigError(f"{as_tag} is already released; a published version never changes")
    packages: dict[str, list[Path]] = {}
    seen: set[str] = set()
    for artifact in source.artifacts:
        if artifact.name in seen:
            continue  # an RPM is in every suite of the build; one copy is enough
        path = tree / artifact.path
        if not path.is_file():
            raise ConfigError(f"{artifact.name} of {build_id} is no longer in the repository (retention removed it)")
        seen.add(artifact.name)
        copy = scratch / artifact.target / artifact.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        packages.setdefault(artifact.target, []).append(copy)
    return Promotion(source, classification, packages)
