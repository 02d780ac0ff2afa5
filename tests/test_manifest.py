from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from dropship.errors import ManifestError
from dropship.manifest import Arch, PackageFormat, load_manifest, parse_manifest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hello" / "dropship.toml"

BASE: dict[str, Any] = {
    "project": {"name": "hello", "test": ["true"]},
    "targets": [
        {"name": "amd64-deb", "arch": "amd64", "format": "deb", "build": ["make", "deb"], "artifacts": ["out/*.deb"]},
        {"name": "arm64-rpm", "arch": "arm64", "format": "rpm", "build": ["make", "rpm"], "artifacts": ["out/*.rpm"],
         "size": "c2-8vcpu-16gb", "depends_on": ["amd64-deb"]},
    ],
}


def test_example_manifest_loads() -> None:
    manifest = load_manifest(EXAMPLE)
    assert [t.name for t in manifest.targets] == ["amd64-deb", "arm64-deb", "amd64-rpm", "arm64-rpm", "python-wheel"]
    assert [(j.name, j.kind.value, j.needs) for j in manifest.jobs] == [("install-amd64-deb", "integration", ["amd64-deb"])]
    assert manifest.target("arm64-rpm").arch is Arch.ARM64
    assert manifest.target("arm64-rpm").arch.rpm == "aarch64"
    assert manifest.target("amd64-rpm").format is PackageFormat.RPM
    assert manifest.classes.stable.suites == ["stable"]
    assert manifest.classes.development.suites == ["nightly"]


def test_defaults_fill_machine_spec() -> None:
    manifest = parse_manifest(BASE)
    assert manifest.machine_spec(manifest.target("amd64-deb")) == {
        "size": "s-2vcpu-4gb", "image": "debian-12-x64", "region": "nyc1"}
    assert manifest.machine_spec(manifest.target("arm64-rpm"))["size"] == "c2-8vcpu-16gb"


def _error(mutate: Any) -> str:
    data = copy.deepcopy(BASE)
    mutate(data)
    with pytest.raises(ManifestError) as info:
        parse_manifest(data, "proj/dropship.toml")
    return str(info.value)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["targets"][0].__setitem__("arch", "sparc"),
         "proj/dropship.toml: targets[0].arch: expected one of 'amd64' or 'arm64', got 'sparc'"),
        (lambda d: d["targets"][1].__setitem__("format", "apk"), "targets[1].format: expected one of 'deb' or 'rpm'"),
        (lambda d: d["targets"][0].pop("build"), "targets[0].build: required field is missing"),
        (lambda d: d["targets"][0].__setitem__("build", "make deb"), "targets[0].build: Input should be a valid list"),
        (lambda d: d["targets"][0].__setitem__("build", []), "targets[0].build: List should have at least 1 item"),
        (lambda d: d["project"].__setitem__("nmae", "x"), "project.nmae: unknown field (check the spelling)"),
        (lambda d: d["project"].__setitem__("name", "Hello World"), "project.name: 'Hello World' does not match"),
        (lambda d: d["targets"][1].__setitem__("depends_on", ["nope"]), "targets[1].depends_on: unknown target 'nope'"),
        (lambda d: d["targets"][0].__setitem__("depends_on", ["arm64-rpm"]),
         "depends_on: dependency cycle"),
        (lambda d: d["targets"].append(copy.deepcopy(d["targets"][0])), "targets[2].name: duplicate target name 'amd64-deb'"),
        (lambda d: d["targets"][0].__setitem__("rebuild_patterns", ["("]), "targets[0].rebuild_patterns: '(' is not a regular expression"),
        (lambda d: d["targets"][0].__setitem__("artifacts", ["../x.deb"]), "targets[0].artifacts: '../x.deb' must stay inside"),
        (lambda d: d.__setitem__("targets", []), "targets: List should have at least 1 item"),
        (lambda d: d.__setitem__("repository", {"keep_versions": 0}), "repository.keep_versions: Input should be greater than or equal to 1"),
        (lambda d: d.__setitem__("machines", {"provider": "aws"}), "machines.provider: 'aws' does not match"),
        (lambda d: d.__setitem__("classes", {"extra": {"suites": ["testing"]}}), "classes.extra: extra needs a pattern"),
    ],
)
def test_errors_name_file_field_and_expectation(mutate: Any, expected: str) -> None:
    assert expected in _error(mutate)


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot be read"):
        load_manifest(tmp_path / "missing.toml")
    bad = tmp_path / "dropship.toml"
    bad.write_text("[project\nname = 1\n")
    with pytest.raises(ManifestError, match=r"dropship.toml: is not valid TOML"):
        load_manifest(bad)
