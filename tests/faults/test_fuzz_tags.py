"""Fuzzed tags: each is accepted with one canonical version that gives the tag back, or refused with
ConfigError, never another exception; accepted ones are SemVer (by semver.org's own expression).

`DROPSHIP_FUZZ_EXAMPLES` raises the example count for a one-off run (default 200 per test);
`pytest -s` prints the counts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropship.errors import ConfigError
from dropship.manifest import load_manifest
from dropship.tags import ReleaseClass, classify, parse_tag, tag_of_version
from tests.faults.strategies import Tally, near_valid, tags, valid_tags

EXAMPLES = int(os.environ.get("DROPSHIP_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANIFEST = load_manifest(Path(__file__).resolve().parents[2] / "examples" / "hello" / "dropship.toml")

# https://semver.org/#is-there-a-suggested-regular-expression-regex-to-check-a-semver-string, ASCII only.
SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?",
    re.ASCII,
)
PACKAGE_VERSION = re.compile(r"[0-9][0-9A-Za-z.+~]*", re.ASCII)


def judge(tag: str, tally: Tally) -> None:
    try:
        result = classify(MANIFEST, tag=tag)
    except ConfigError as exc:
        tally.counts["refused"] += 1
        assert "\n" not in str(exc), "one-line message"
        return
    except Exception as exc:  # noqa: BLE001 - what the fuzz is looking for
        tally.crash(f"{tag!r}: {type(exc).__name__}: {exc}")
        return
    tally.counts["accepted"] += 1
    version = parse_tag(tag)
    assert result.release_class in (ReleaseClass.STABLE, ReleaseClass.EXTRA)
    assert tag.isascii() and tag.startswith("v") and SEMVER.fullmatch(tag[1:]), tag
    assert str(version) == tag, "round trip: the tag is rebuilt byte for byte"
    assert PACKAGE_VERSION.fullmatch(version.package_version), version.package_version
    assert tag_of_version(version.package_version) == tag
    assert (result.release_class is ReleaseClass.STABLE) == version.is_stable


def test_fuzzed_tags_are_accepted_canonically_or_refused() -> None:
    tally = Tally()

    @FUZZ
    @given(tags)
    def check(tag: str) -> None:
        judge(tag, tally)

    check()
    tally.report("fuzz tags")


def test_two_spellings_never_give_the_same_version() -> None:
    """The battery's `v01.2.3` beside `v1.2.3`: an accepted tag is the only spelling of its version."""
    seen: dict[str, str] = {}

    @FUZZ
    @given(st.one_of(valid_tags, near_valid()))
    def check(tag: str) -> None:
        try:
            version = parse_tag(tag).package_version
        except ConfigError:
            return
        assert seen.setdefault(version, tag) == tag

    check()
