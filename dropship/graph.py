"""`depends_on` as a build graph.

A target starts once every target it depends on has its artifacts in the
run (built or taken from the store); those artifacts travel to its machine
inside its source archive, under `.dropship-deps/<dependency>/`, and the
build finds that folder in `$DROPSHIP_DEPS`. A target whose dependency
failed (or was itself skipped) is skipped: no machine is created for it.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from dropship.manifest import Manifest
from dropship.summary import TargetStatus

DEPS_DIR = ".dropship-deps"
"""In the unpacked source on the machine; the build gets its absolute path as $DROPSHIP_DEPS."""


def dependencies(manifest: Manifest, targets: Sequence[str]) -> dict[str, list[str]]:
    """Each selected target's direct dependencies (the plan selects dependencies with their dependants)."""
    return {name: list(manifest.target(name).depends_on) for name in targets}


def ready(deps: Mapping[str, list[str]], finished: Mapping[str, TargetStatus], started: set[str]) -> list[str]:
    """Targets not started whose dependencies all finished (`finished`: target -> status), in manifest order."""
    return [n for n, d in deps.items() if n not in started and n not in finished and all(x in finished for x in d)]


def skip_reason(target_deps: Sequence[str], finished: Mapping[str, TargetStatus]) -> str | None:
    """Why a target can't build: the first dependency that failed or was skipped."""
    for dep in target_deps:
        status = finished.get(dep)
        if status is not None and TargetStatus(status).unusable:
            return f"dependency {dep} {status}"
    return None


def archive_with_dependencies(archive: Path, artifacts: Mapping[str, Sequence[Path]], destination: Path) -> Path:
    """A copy of the source archive with each dependency's artifacts under `.dropship-deps/<name>/`."""
    with (
        tarfile.open(archive, "r:gz") as source,
        gzip.GzipFile(destination, "wb", mtime=0) as raw,
        tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as out,
    ):
        for member in source:
            out.addfile(member, source.extractfile(member) if member.isfile() else None)
        for folder in sorted({DEPS_DIR, *(f"{DEPS_DIR}/{n}" for n in artifacts)}):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            out.addfile(info)
        for name, files in sorted(artifacts.items()):
            for path in sorted(files):
                data = path.read_bytes()
                info = tarfile.TarInfo(f"{DEPS_DIR}/{name}/{path.name}")
                info.size, info.mode = len(data), 0o644
                out.addfile(info, io.BytesIO(data))
    return destination
