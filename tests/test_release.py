from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from dropship.errors import TagError
from dropship.manifest import load_manifest
from dropship.release import ReleaseClass, classify, package_version, release_id

MANIFEST = load_manifest(Path(__file__).resolve().parents[1] / "examples" / "hello" / "dropship.toml")


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
    ["v1.2", "1.2.3", "v1.2.3.4", "v1.2.3;rm -rf /", "v1.2.3 ", "vX.Y.Z", "v1.2.3-", "V1.2.3", "v1.2.3\n", "",
     "v1.2.3-rc1/../x", "v2.0.0~beta", "v" + "1" * 200 + ".0.0"],
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
    when = datetime(2026, 11, 22, 18, 15, tzinfo=timezone.utc)
    assert package_version(classify(MANIFEST, tag="v1.4.2"), "a" * 40, when) == "1.4.2"
    assert package_version(classify(MANIFEST, tag="v1.5.0-rc1"), "a" * 40, when) == "1.5.0~rc1"
    assert package_version(classify(MANIFEST, tag="v1.4.2+hotfix1"), "a" * 40, when) == "1.4.2+hotfix1"
    assert package_version(classify(MANIFEST, ref="main"), "abcdef0123" + "0" * 30, when) == "0~dev20261122181500.gabcdef01"


def test_release_id_is_sortable_and_safe() -> None:
    when = datetime(2026, 11, 22, 18, 15, 3, tzinfo=timezone.utc)
    assert release_id(classify(MANIFEST, tag="v1.4.2"), when) == "20261122T181503Z-v1.4.2"
    assert release_id(classify(MANIFEST, ref="feature/x"), when) == "20261122T181503Z-feature_x"
