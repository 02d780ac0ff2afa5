"""What is being released: a tag or ref, its class, suites and package version.

The old scripts accepted any tag matching the unanchored `v\\d.+`; here a
stable tag is exactly `vX.Y.Z`, an extra tag must match the project's
configured pattern, and anything else is refused before a machine exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum

from dropship.errors import TagError
from dropship.manifest import Manifest

STABLE_TAG = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")
# A branch name or commit id for development builds; no `..`, no leading dash,
# no characters git forbids in ref names.
DEV_REF = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)(?!.*\.lock$)[A-Za-z0-9][A-Za-z0-9._/+-]{0,199}$")
MAX_TAG_LENGTH = 100


class ReleaseClass(str, Enum):
    STABLE = "stable"
    EXTRA = "extra"
    DEVELOPMENT = "development"


@dataclass(frozen=True)
class Classification:
    """The release's class and the suites its packages go to."""

    release_class: ReleaseClass
    name: str
    """The tag, or the ref for a development build."""
    suites: tuple[str, ...]
    is_tag: bool


def classify(manifest: Manifest, *, tag: str | None = None, ref: str | None = None) -> Classification:
    """Classify a tag (stable/extra) or a ref (development); refuse anything else."""
    if (tag is None) == (ref is None):
        raise TagError("give exactly one of a tag (a release) or a ref (a development build)")
    classes = manifest.classes
    if tag is not None:
        if len(tag) > MAX_TAG_LENGTH or not tag.isprintable() or tag != tag.strip():
            raise TagError(f"tag {tag!r} is not a valid tag")
        if STABLE_TAG.match(tag):
            return Classification(ReleaseClass.STABLE, tag, tuple(classes.stable.suites), True)
        pattern = classes.extra.pattern or ""
        if re.fullmatch(pattern, tag) and DEV_REF.match(tag):
            return Classification(ReleaseClass.EXTRA, tag, tuple(classes.extra.suites), True)
        raise TagError(
            f"tag {tag!r} is neither a stable release (vX.Y.Z, digits only) "
            f"nor an extra release (matching {pattern})"
        )
    assert ref is not None
    if not DEV_REF.match(ref):
        raise TagError(f"ref {ref!r} is not a valid branch name or commit id")
    return Classification(ReleaseClass.DEVELOPMENT, ref, tuple(classes.development.suites), False)


def package_version(classification: Classification, commit: str, commit_time: datetime) -> str:
    """The version packages are built with, valid for both dpkg and rpm.

    `v1.4.2` -> `1.4.2`; a pre-release tag `v1.5.0-rc1` -> `1.5.0~rc1`, which
    both dpkg and rpm sort before `1.5.0`; `v1.4.2+hotfix1` keeps its `+`, which
    sorts after `1.4.2`; a development build of commit abc1234
    -> `0~dev20261122181500.gabc1234`, ordered by commit time so the
    nightly suite's newest build is the newest version.
    """
    if classification.is_tag:
        return classification.name[1:].replace("-", "~")
    stamp = commit_time.astimezone(timezone.utc).strftime("%Y%m%d%H%M%S")
    return f"0~dev{stamp}.g{commit[:8]}"


def release_id(classification: Classification, started: datetime) -> str:
    """Folder name of the published release: sortable by time, readable by name."""
    safe = re.sub(r"[^A-Za-z0-9.~-]", "_", classification.name)
    return f"{started.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{safe}"
