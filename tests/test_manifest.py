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
        {
            "name": "arm64-rpm",
            "arch": "arm64",
            "format": "rpm",
            "build": ["make", "rpm"],
            "artifacts": ["out/*.rpm"],
            "size": "c2-8vcpu-16gb",
            "depends_on": ["amd64-deb"],
        },
    ],
}


def test_example_manifest_loads() -> None:
    manifest = load_manifest(EXAMPLE)
    assert [t.name for t in manifest.targets] == ["amd64-deb", "arm64-deb", "amd64-rpm", "arm64-rpm", "python-wheel"]
    assert [(j.name, j.kind.value, j.needs) for j in manifest.jobs] == [
        ("install-amd64-deb", "integration", ["amd64-deb"])
    ]
    assert manifest.target("arm64-rpm").arch is Arch.ARM64
    assert manifest.target("arm64-rpm").arch.rpm == "aarch64"
    assert manifest.target("amd64-rpm").format is PackageFormat.RPM
    assert manifest.classes.stable.suites == ["stable"]
    assert manifest.classes.development.suites == ["nightly"]


def test_defaults_fill_machine_spec() -> None:
    manifest = parse_manifest(BASE)
    assert manifest.machine_spec(manifest.target("amd64-deb")) == {
        "size": "s-2vcpu-4gb",
        "image": "debian-12-x64",
        "region": "nyc1",
    }
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
        (
            lambda d: d["targets"][0].__setitem__("arch", "sparc"),
            "proj/dropship.toml: targets[0].arch: expected one of 'amd64' or 'arm64', got 'sparc'",
        ),
        (
            lambda d: d["targets"][1].__setitem__("format", "apk"),
            "targets[1].format: expected one of 'deb', 'rpm' or 'oci'",
        ),
        (lambda d: d["targets"][0].pop("build"), "targets[0].build: required field is missing"),
        (lambda d: d["targets"][0].__setitem__("build", "make deb"), "targets[0].build: Input should be a valid list"),
        (lambda d: d["targets"][0].__setitem__("build", []), "targets[0].build: List should have at least 1 item"),
        (lambda d: d["project"].__setitem__("nmae", "x"), "project.nmae: unknown field (check the spelling)"),
        (lambda d: d["project"].__setitem__("name", "Hello World"), "project.name: 'Hello World' does not match"),
        (lambda d: d["targets"][1].__setitem__("depends_on", ["nope"]), "targets[1].depends_on: unknown target 'nope'"),
        (lambda d: d["targets"][0].__setitem__("depends_on", ["arm64-rpm"]), "depends_on: dependency cycle"),
        (
            lambda d: d["targets"].append(copy.deepcopy(d["targets"][0])),
            "targets[2].name: duplicate target name 'amd64-deb'",
        ),
        (
            lambda d: d["targets"][0].__setitem__("rebuild_patterns", ["("]),
            "targets[0].rebuild_patterns: '(' is not a regular expression",
        ),
        (
            lambda d: d["targets"][0].__setitem__("artifacts", ["../x.deb"]),
            "targets[0].artifacts: '../x.deb' must stay inside",
        ),
        (lambda d: d.__setitem__("targets", []), "targets: List should have at least 1 item"),
        (
            lambda d: d.__setitem__("repository", {"keep_versions": 0}),
            "repository.keep_versions: Input should be greater than or equal to 1",
        ),
        (lambda d: d.__setitem__("machines", {"provider": "aws"}), "machines.provider: 'aws' does not match"),
        (
            lambda d: d.__setitem__("classes", {"extra": {"suites": ["testing"]}}),
            "classes.extra: extra needs a pattern",
        ),
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


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["targets"][0].__setitem__("env", {"A=B": "x"}),
            "targets[0].env: 'A=B' is not an environment variable name",
        ),
        (
            lambda d: d["targets"][0].__setitem__("env", {"A": "x\0y"}),
            "targets[0].env: the value of A contains a NUL byte",
        ),
        (
            lambda d: d["targets"][0].__setitem__("env", {"DROPSHIP_VERSION": "1"}),
            "DROPSHIP_VERSION is set by dropship",
        ),
        (lambda d: d["targets"][0].__setitem__("env", {"PREFECT_API_URL": "x"}), "PREFECT_API_URL is set by dropship"),
        (lambda d: d["targets"][0].__setitem__("build", ["make", "a\0"]), "targets[0].build[1]: contains a NUL byte"),
        (
            lambda d: d["targets"][0].__setitem__("build", ["make", "\ud800"]),
            "targets[0].build[1]: Input should be a valid string, unable to parse raw data",
        ),
        (
            lambda d: d["targets"][0].__setitem__("env", {"A": "\udfff"}),
            "targets[0].env.A: Input should be a valid string",
        ),
        (lambda d: d["project"].__setitem__("test", ["sh", "-c", "x\0"]), "project.test[2]: contains a NUL byte"),
        (lambda d: d["targets"][0].__setitem__("artifacts", [""]), "targets[0].artifacts: '' names no file"),
        (lambda d: d["targets"][0].__setitem__("artifacts", ["."]), "targets[0].artifacts: '.' names no file"),
        (lambda d: d["targets"][0].__setitem__("artifacts", ["out/"]), "'out/' names no file"),
        (
            lambda d: d["targets"][0].__setitem__("build", ["make && make install"]),
            (
                "targets[0].build: the program 'make && make install' contains spaces or shell characters: a command is an "
                'argument list run without a shell; split it, or run a shell explicitly, e.g. ["sh", "-c", "make && make install"]'
            ),
        ),
        (
            lambda d: d["project"].__setitem__("test", ["./run tests", "x"]),
            "project.test: the program './run tests' contains",
        ),
        (
            lambda d: d.__setitem__("machines", {"build_timeout": 10**12}),
            "machines.build_timeout: Input should be less than or equal to 86400, got 1000000000000",
        ),
        (
            lambda d: d.__setitem__("machines", {"build_timeout": 60.0}),
            "machines.build_timeout: expected an integer, got 60.0",
        ),
        (
            lambda d: d.__setitem__("repository", {"valid_days": 999999999}),
            "repository.valid_days: Input should be less than or equal to 3650",
        ),
        (
            lambda d: d.__setitem__("repository", {"origin": "a\nb"}),
            "repository.origin: contains the control character '\\n'",
        ),
        (
            lambda d: d.__setitem__("repository", {"label": " x"}),
            "repository.label: ' x' has leading or trailing spaces",
        ),
        (
            lambda d: d.__setitem__("repository", {"keep_versions": True}),
            "repository.keep_versions: expected an integer, got True (true/false and strings are not numbers)",
        ),
        (
            lambda d: d.__setitem__("repository", {"keep_versions": "3"}),
            "repository.keep_versions: expected an integer, got '3'",
        ),
        (lambda d: d["project"].__setitem__("name", 7), "project.name: expected a string, got 7"),
        (lambda d: d["targets"][0].__setitem__("image", "debian 12"), "targets[0].image: 'debian 12' does not match"),
        (
            lambda d: d.__setitem__("blocks", {"repo_server": "Repo Server"}),
            "blocks.repo_server: 'Repo Server' does not match",
        ),
        (
            lambda d: d["targets"][0].__setitem__("rebuild_patterns", ["(a*)*"]),
            "targets[0].rebuild_patterns: '(a*)*' could backtrack",
        ),
        (
            lambda d: d.__setitem__("classes", {"extra": {"suites": ["stable"], "pattern": "v.*"}}),
            "classes.extra.suites: suite 'stable' is already the stable class's",
        ),
        (
            lambda d: d.__setitem__("classes", {"extra": {"suites": ["testing"], "pattern": "v(?=1).*"}}),
            "classes.extra.pattern: 'v(?=1).*' uses lookarounds",
        ),
        (
            lambda d: d["targets"].extend(copy.deepcopy(d["targets"][0]) | {"name": f"t{i}"} for i in range(70)),
            "targets: List should have at most 64 items",
        ),
        (lambda d: d.__setitem__("a\nb", 1), "proj/dropship.toml: ['a\\nb']: unknown field"),
    ],
)
def test_values_that_used_to_fail_on_a_machine_are_refused_at_load(mutate: Any, expected: str) -> None:
    message = _error(mutate)
    assert expected in message
    assert "\n" not in message


def test_non_utf8_deep_and_huge_files_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "dropship.toml"
    bad.write_bytes(b'[project]\nname = "h\xe9llo"\n')
    with pytest.raises(
        ManifestError, match=r"dropship.toml: is not UTF-8 text \(byte 0xe9 at offset 19\): save it as UTF-8"
    ):
        load_manifest(bad)
    bad.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ManifestError, match="is not valid TOML"):
        load_manifest(bad)
    bad.write_text("# " + "x" * (2 * 1024 * 1024) + "\n")
    with pytest.raises(ManifestError, match="is larger than 1024 KiB"):
        load_manifest(bad)


# --- image targets (format = "oci", [oci]): dropship/oci.py, examples/hello/oci.toml -----------------

IMAGE = {
    "name": "amd64-image",
    "arch": "amd64",
    "format": "oci",
    "build": ["make", "static"],
    "dockerfile": "Dockerfile",
    "setup": ["docker.io"],
}


def _with_image(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["targets"].append({**IMAGE, **changes})
    data["oci"] = {"repository": "registry.example.org/hello", "credentials": "hello-registry"}
    return data


def test_the_example_with_its_image_targets_loads() -> None:
    text = EXAMPLE.read_text() + "\n" + (EXAMPLE.parent / "oci.toml").read_text()
    import tomllib

    manifest = parse_manifest(tomllib.loads(text))
    images = [t for t in manifest.targets if t.format is PackageFormat.OCI]
    assert [(t.name, t.arch.value, t.dockerfile) for t in images] == [
        ("amd64-image", "amd64", "packaging/Dockerfile"),
        ("arm64-image", "arm64", "packaging/Dockerfile"),
    ]
    assert manifest.oci is not None and manifest.oci.credentials == "hello-registry"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {**copy.deepcopy(BASE), "targets": [*BASE["targets"], IMAGE]},
            'targets[2].format: an "oci" target needs an [oci] table',
        ),
        (
            _with_image(setup=[]),
            'targets[2].setup: an "oci" target builds its image with Docker on its machine: add "docker.io"',
        ),
        (_with_image(artifacts=["out/*"]), "targets[2].artifacts: an oci target's artifact is its image"),
        (_with_image(dockerfile="../Dockerfile"), "targets[2].dockerfile: '../Dockerfile' must name a file inside"),
        (
            {**_with_image(), "oci": {"repository": "hello"}},
            "oci.repository: 'hello' is not an image repository",
        ),
        (
            {**_with_image(), "oci": {"repository": "registry.example.org/Hello:1.0"}},
            "is not an image repository",
        ),
        (
            {**copy.deepcopy(BASE), "oci": {"repository": "registry.example.org/hello"}},
            'oci: no target has format = "oci"',
        ),
    ],
)
def test_image_target_errors_before_any_machine(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(data, "proj/dropship.toml")
    assert expected in str(info.value)


def test_one_image_target_per_arch_and_no_dockerfile_elsewhere() -> None:
    data = _with_image()
    data["targets"].append({**IMAGE, "name": "amd64-image-2"})
    with pytest.raises(ManifestError, match=r"targets\[3\].arch: 'amd64-image' already builds the amd64 image"):
        parse_manifest(data)
    data = copy.deepcopy(BASE)
    data["targets"][0]["dockerfile"] = "Dockerfile"
    with pytest.raises(ManifestError, match=r'targets\[0\].dockerfile: only a target with format = "oci"'):
        parse_manifest(data)


# --- build containers (container = "<image>"): dropship/containers.py ---------------------------------


def _in_container(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["targets"][0].update({"container": "registry.example.org/build/debian:12", "setup": ["docker.io"]})
    data["targets"][0].update(changes)
    return data


def test_a_container_target_loads_with_its_credentials_block() -> None:
    manifest = parse_manifest(_in_container(container_credentials="build-registry"))
    target = manifest.target("amd64-deb")
    assert target.container == "registry.example.org/build/debian:12"
    assert target.container_credentials == "build-registry"
    assert parse_manifest(_in_container()).target("amd64-deb").container_credentials == "dropship-registry"
    assert manifest.target("arm64-rpm").container is None
    data = _in_container(setup=[])
    data["defaults"] = {"setup": ["docker.io"]}  # docker from the defaults' setup is as good
    assert parse_manifest(data).target("amd64-deb").container is not None


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"container": "debian:12"},
            "proj/dropship.toml: targets[0].container: 'debian:12' is not an image reference: expected "
            "registry-host[:port]/name[:tag][@sha256:<64 hex>]",
        ),
        ({"container": "registry.example.org/Debian"}, "targets[0].container: 'registry.example.org/Debian' is not"),
        ({"container": 12}, "targets[0].container: expected a string, got 12"),
        (
            {"setup": ["dpkg-dev"]},
            'targets[0].setup: a target with a container builds in it with Docker on its machine: add "docker.io"',
        ),
        ({"container_credentials": "Bad Name"}, "targets[0].container_credentials: 'Bad Name' does not match"),
    ],
)
def test_container_errors_before_any_machine(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(_in_container(**changes), "proj/dropship.toml")
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_credentials_without_a_container_are_refused() -> None:
    data = copy.deepcopy(BASE)
    data["targets"][1]["container_credentials"] = "build-registry"
    with pytest.raises(ManifestError, match=r"targets\[1\].container_credentials: names a block but the target has"):
        parse_manifest(data)
