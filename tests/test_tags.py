from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dropship.errors import ManifestError, TagError
from dropship.manifest import Manifest, load_manifest, parse_manifest
from dropship.tags import (
    ReleaseClass,
    classify,
    package_version,
    parse_tag,
    release_id,
    tag_of_version,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hello" / "dropship.toml"
MANIFEST = load_manifest(EXAMPLE)


@pytest.mark.parametrize("tag", ["v1.4.2", "v0.0.1", "v10.20.30"])
def test_stable_tags(tag: str) -> None:
    result = classify(MANIFEST, tag=tag)
    assert result.release_class is ReleaseClass.STABLE
    assert result.suites == ("stable",)


@pytest.mark.parametrize("tag", ["v1.5.0-rc1", "v2.0.0-beta.2", "v1.4.2+hotfix1"])
def test_extra_tags(tag: str) -> None:
    result = classify(MANIFEST, tag=tag)
    assert result.release_class is ReleaseClass.EXTRA
    assert result.suites == ("testing",)


@pytest.mark.parametrize(
    "tag",
    [
        "v1.2",
        "1.2.3",
        "v1.2.3.4",
        "v1.2.3;rm -rf /",
        "v1.2.3 ",
        "vX.Y.Z",
        "v1.2.3-",
        "V1.2.3",
        "v1.2.3\n",
        "",
        "v1.2.3-rc1/../x",
        "v2.0.0~beta",
        "v" + "1" * 200 + ".0.0",
    ],
)
def test_refused_tags_name_the_problem(tag: str) -> None:
    with pytest.raises(TagError, match="tag"):
        classify(MANIFEST, tag=tag)


def test_development_refs() -> None:
    result = classify(MANIFEST, ref="main")
    assert result.release_class is ReleaseClass.DEVELOPMENT
    assert result.suites == ("nightly",)
    assert classify(MANIFEST, ref="feature/x").name == "feature/x"
    for bad in ["-x", "a..b", "a b", "a;b"]:
        with pytest.raises(TagError, match="ref"):
            classify(MANIFEST, ref=bad)


def test_exactly_one_of_tag_or_ref() -> None:
    with pytest.raises(TagError, match="exactly one"):
        classify(MANIFEST)
    with pytest.raises(TagError, match="exactly one"):
        classify(MANIFEST, tag="v1.0.0", ref="main")


def test_package_versions_sort_like_the_classes() -> None:
    when = datetime(2026, 11, 22, 18, 15, tzinfo=UTC)
    assert package_version(classify(MANIFEST, tag="v1.4.2"), "a" * 40, when) == "1.4.2"
    assert package_version(classify(MANIFEST, tag="v1.5.0-rc1"), "a" * 40, when) == "1.5.0~rc1"
    assert package_version(classify(MANIFEST, tag="v1.4.2+hotfix1"), "a" * 40, when) == "1.4.2+hotfix1"
    assert (
        package_version(classify(MANIFEST, ref="main"), "abcdef0123" + "0" * 30, when)
        == "0~dev20261122181500.gabcdef01"
    )


def test_release_id_is_sortable_and_safe() -> None:
    when = datetime(2026, 11, 22, 18, 15, 3, tzinfo=UTC)
    assert release_id(classify(MANIFEST, tag="v1.4.2"), when) == "20261122T181503Z-v1.4.2"
    assert release_id(classify(MANIFEST, ref="feature/x"), when) == "20261122T181503Z-feature_x"


@pytest.mark.parametrize(
    "tag",
    [
        "v١.٢.٣",
        "v１.２.３",
        "v1.2.३",
        "v01.2.3",
        "v1.02.3",
        "v1.2.03",
        "v00.0.0",
        "v1.2.3-rc1.",
        "v1.2.3-.rc1",
        "v1.2.3-rc..1",
        "v1.2.3-01",
        "v1.2.3+",
        "v1.2.3+a..b",
        "v1.2.3-rc_1",
        "v1.2.3-rc-1",
        "v1.2.3-ß",
        "v1234567890.0.0",
        "v1.2.3-rc1\n",
        "\u200bv1.2.3",
        "v1.2.3\u200b",
    ],
)
def test_non_ascii_digits_leading_zeros_and_loose_suffixes_are_refused(tag: str) -> None:
    with pytest.raises(TagError, match="tag"):
        classify(MANIFEST, tag=tag)


@pytest.mark.parametrize(
    ("tag", "version"),
    [
        ("v0.0.0", "0.0.0"),
        ("v1.0.0-0", "1.0.0~0"),
        ("v1.0.0-0a.1", "1.0.0~0a.1"),
        ("v1.2.3-rc1+b.7", "1.2.3~rc1+b.7"),
        ("v1.2.3+007", "1.2.3+007"),
        ("v999999999.0.0", "999999999.0.0"),
    ],
)
def test_accepted_tags_have_one_canonical_version_that_gives_the_tag_back(tag: str, version: str) -> None:
    parsed = parse_tag(tag)
    assert parsed.package_version == version
    assert str(parsed) == tag
    assert tag_of_version(version) == tag
    when = datetime(2026, 11, 22, tzinfo=UTC)
    assert package_version(classify(MANIFEST, tag=tag), "a" * 40, when) == version


def _with_pattern(pattern: str) -> Manifest:
    data = tomllib.loads(EXAMPLE.read_text())
    data["classes"] = {"extra": {"suites": ["testing"], "pattern": pattern}}
    return parse_manifest(data, str(EXAMPLE))


def test_the_extra_pattern_must_match_the_whole_tag() -> None:
    manifest = _with_pattern(r"v\d+\.\d+\.\d+-rc\d+")
    assert classify(manifest, tag="v1.0.0-rc1").release_class is ReleaseClass.EXTRA
    with pytest.raises(TagError, match="does not match the project's extra pattern"):
        classify(manifest, tag="v1.0.0-rc1.hotfix")  # re.search would have accepted it
    with pytest.raises(TagError, match="does not match"):
        classify(manifest, tag="v1.0.0-beta1")


def test_a_catastrophic_extra_pattern_is_refused_at_load_not_at_the_tag() -> None:
    with pytest.raises(ManifestError, match=r"classes.extra.pattern: .*backtrack catastrophically"):
        _with_pattern(r"v1\.0\.0-(a+)+b")
    with pytest.raises(ManifestError, match=r"classes.extra.pattern: .*took more than"):
        _with_pattern("v" + "[0-9a-z.+-]*" * 8 + "Q")


def test_development_refs_follow_git_rules() -> None:
    for good in ["main", "release/1.x", "feature/a-b_c", "a" * 40]:
        assert classify(MANIFEST, ref=good).name == good
    for bad in ["main\n", "a/", "a.", "a//b", "a/.b", ".a", "a.lock", "ü", "a" * 201, "a@{1}", "a b"]:
        with pytest.raises(TagError, match="ref"):
            classify(MANIFEST, ref=bad)
