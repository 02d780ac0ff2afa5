"""What is being released: a tag or ref, its class, suites and package version.

The old scripts accepted any tag matching the unanchored `v\\d.+`; here a
stable tag is exactly `vMAJOR.MINOR.PATCH` in ASCII digits without leading
zeros (SemVer's rule: `v01.2.3` would be a second spelling of `1.2.3`, equal
for dpkg but different bytes), an extra tag is `vX.Y.Z` followed by a strict
SemVer-like suffix (`-rc1`, `-beta.2`, `+hotfix1`) that also matches the
project's pattern, and anything else is refused before a machine exists.
Every accepted tag has one canonical package version and the tag can be
rebuilt from it (`tag_of_version`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from dropship.errors import TagError
from dropship.manifest import Manifest
from dropship.patterns import compile_pattern

_NUMBER = r"(?:0|[1-9][0-9]*)"
_IDENT = r"[0-9A-Za-z]+"
_PRE_IDENT = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z][0-9A-Za-z]*)"
TAG_GRAMMAR = re.compile(
    rf"v(?P<major>{_NUMBER})\.(?P<minor>{_NUMBER})\.(?P<patch>{_NUMBER})"
    rf"(?:-(?P<pre>{_PRE_IDENT}(?:\.{_PRE_IDENT})*))?"
    rf"(?:\+(?P<build>{_IDENT}(?:\.{_IDENT})*))?",
    re.ASCII,
)
"""Every tag dropship releases (used with `fullmatch`): SemVer 2.0 with ASCII
letters and digits in identifiers (no `-` inside one, so the version's `~`
maps back to exactly one `-`), numeric pre-release identifiers without
leading zeros."""
MAX_TAG_LENGTH = 100
MAX_NUMBER_DIGITS = 9
"""A version number of at most 9 digits: a billion releases is enough, and
it stays within what rpm and dpkg compare as integers."""
MAX_REF_LENGTH = 200
_REF_CHARS = re.compile(r"[A-Za-z0-9._/+-]+", re.ASCII)


class ReleaseClass(StrEnum):
    """A StrEnum: its str(), f-string and JSON form is the value (`stable`), as summary.json and index.json say."""

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


@dataclass(frozen=True)
class TagVersion:
    """A parsed release tag; `str()` is the tag again, byte for byte."""

    major: int
    minor: int
    patch: int
    pre: str | None
    build: str | None

    @property
    def is_stable(self) -> bool:
        return self.pre is None and self.build is None

    @property
    def package_version(self) -> str:
        """`1.5.0~rc1` for `v1.5.0-rc1`: `~` sorts before the release in dpkg and rpm."""
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.pre is not None:
            text += f"~{self.pre}"
        if self.build is not None:
            text += f"+{self.build}"
        return text

    def __str__(self) -> str:
        return "v" + self.package_version.replace("~", "-")


def parse_tag(tag: str) -> TagVersion:
    """Read a tag by the release grammar; `TagError` says what is wrong."""
    if not isinstance(tag, str):
        raise TagError(f"tag must be text, not {type(tag).__name__}")
    shown = _show(tag)
    if len(tag) > MAX_TAG_LENGTH:
        raise TagError(f"tag {shown} is longer than {MAX_TAG_LENGTH} characters")
    match = TAG_GRAMMAR.fullmatch(tag)
    if match is None:
        raise TagError(
            f"tag {shown} is neither a stable release nor an extra release: expected vMAJOR.MINOR.PATCH in "
            "ASCII digits without leading zeros, optionally followed by -PRERELEASE and/or +BUILD "
            "(dot-separated ASCII letters and digits), "
            "e.g. v1.4.2, v1.5.0-rc1, v1.4.2+hotfix1"
        )
    numbers = [match["major"], match["minor"], match["patch"]]
    if any(len(n) > MAX_NUMBER_DIGITS for n in numbers):
        raise TagError(f"tag {shown}: version numbers have at most {MAX_NUMBER_DIGITS} digits")
    return TagVersion(int(numbers[0]), int(numbers[1]), int(numbers[2]), match["pre"], match["build"])


def tag_of_version(version: str) -> str:
    """The tag a release package version came from (`1.5.0~rc1` -> `v1.5.0-rc1`)."""
    tag = "v" + version.replace("~", "-")
    parse_tag(tag)
    return tag


def check_ref(ref: str) -> str:
    """A branch name or commit id for a development build, by git's ref rules (the common subset)."""
    if not isinstance(ref, str):
        raise TagError(f"ref must be text, not {type(ref).__name__}")
    shown = _show(ref)
    parts = ref.split("/")
    if (
        not ref
        or len(ref) > MAX_REF_LENGTH
        or not _REF_CHARS.fullmatch(ref)
        or ref.startswith("-")
        or ".." in ref
        or ref.endswith((".", "/", ".lock"))
        or any(not p or p.startswith(".") for p in parts)
    ):
        raise TagError(
            f"ref {shown} is not a valid branch name or commit id: ASCII letters, digits and ._/+- "
            f"(at most {MAX_REF_LENGTH}), no leading '-', no '..', no empty or dot-leading component, "
            "no trailing '.', '/' or '.lock'"
        )
    return ref


def _show(text: str) -> str:
    """A bounded, one-line rendering of untrusted text for messages."""
    shown = repr(text)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def classify(manifest: Manifest, *, tag: str | None = None, ref: str | None = None) -> Classification:
    """Classify a tag (stable/extra) or a ref (development); refuse anything else with `TagError`."""
    if (tag is None) == (ref is None):
        raise TagError("give exactly one of a tag (a release) or a ref (a development build)")
    classes = manifest.classes
    if tag is not None:
        version = parse_tag(tag)
        if version.is_stable:
            return Classification(ReleaseClass.STABLE, tag, tuple(classes.stable.suites), True)
        pattern = classes.extra.pattern or ""
        # Safe to run: the pattern passed the catastrophic-backtracking check at
        # load and the tag is at most MAX_TAG_LENGTH characters of the grammar.
        if compile_pattern(pattern).fullmatch(tag):
            return Classification(ReleaseClass.EXTRA, tag, tuple(classes.extra.suites), True)
        raise TagError(
            f"tag {_show(tag)} is a pre-release or build tag but does not match the project's extra pattern "
            f"{pattern!r} (classes.extra.pattern, matched against the whole tag)"
        )
    assert ref is not None
    return Classification(ReleaseClass.DEVELOPMENT, check_ref(ref), tuple(classes.development.suites), False)


def package_version(classification: Classification, commit: str, commit_time: datetime) -> str:
    """The version packages are built with, valid for both dpkg and rpm.

    `v1.4.2` -> `1.4.2`; a pre-release tag `v1.5.0-rc1` -> `1.5.0~rc1`, which
    both dpkg and rpm sort before `1.5.0`; `v1.4.2+hotfix1` keeps its `+`, which
    sorts after `1.4.2`; a development build of commit abc1234
    -> `0~dev20261122181500.gabc1234`, ordered by commit time so the
    nightly suite's newest build is the newest version.
    """
    if classification.is_tag:
        return parse_tag(classification.name).package_version
    stamp = commit_time.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    return f"0~dev{stamp}.g{commit[:8]}"


def release_id(classification: Classification, started: datetime) -> str:
    """Folder name of the published release: sortable by time, readable by name."""
    safe = re.sub(r"[^A-Za-z0-9.~-]", "_", classification.name)
    return f"{started.astimezone(UTC):%Y%m%dT%H%M%SZ}-{safe}"
