"""depends_on as a graph: what is ready, what is skipped, what travels with the source."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

from dropship.builder import build
from dropship.graph import (
    DEPS_DIR,
    archive_with_dependencies,
    dependencies,
    ready,
    skip_reason,
)
from dropship.manifest import Manifest, parse_manifest
from dropship.plan import select_targets


def _manifest() -> Manifest:
    def target(name: str, deps: list[str]) -> dict[str, object]:
        return {
            "name": name,
            "arch": "amd64",
            "format": "deb",
            "build": ["true"],
            "artifacts": ["*"],
            "depends_on": deps,
        }

    return parse_manifest(
        {
            "project": {"name": "g"},
            "targets": [
                target("lib", []),
                target("app", ["lib"]),
                target("plugin", ["app", "lib"]),
                target("alone", []),
            ],
        }
    )


def test_ready_follows_dependencies_and_failures_skip_dependants() -> None:
    manifest = _manifest()
    deps = dependencies(manifest, ["lib", "app", "plugin", "alone"])
    assert ready(deps, {}, set()) == ["lib", "alone"]
    assert ready(deps, {}, {"lib", "alone"}) == []
    assert ready(deps, {"lib": "built"}, {"alone"}) == ["app"]
    assert ready(deps, {"lib": "reused", "app": "built"}, {"alone"}) == ["plugin"]
    assert skip_reason(deps["app"], {"lib": "failed"}) == "dependency lib failed"
    assert skip_reason(deps["plugin"], {"lib": "built", "app": "skipped"}) == "dependency app skipped"
    assert skip_reason(deps["plugin"], {"lib": "built", "app": "reused"}) is None


def test_selecting_a_target_selects_what_it_depends_on() -> None:
    manifest = _manifest()
    assert select_targets(manifest, ["plugin"]) == ("lib", "app", "plugin")
    assert select_targets(manifest, ["alone"]) == ("alone",)


def test_dependency_artifacts_reach_the_build_in_dropship_deps(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "build.sh").write_text('cp "$DROPSHIP_DEPS/lib/liblib.a" out.a && ls "$DROPSHIP_DEPS" > deps.txt\n')
    subprocess.run(["tar", "-czf", str(tmp_path / "source.tar.gz"), "-C", str(source), "."], check=True)
    lib = tmp_path / "artifacts" / "lib"
    lib.mkdir(parents=True)
    (lib / "liblib.a").write_bytes(b"\x00archive")
    archive = archive_with_dependencies(
        tmp_path / "source.tar.gz", {"lib": [lib / "liblib.a"]}, tmp_path / "with-deps.tar.gz"
    )
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "./build.sh" in names and f"{DEPS_DIR}/lib/liblib.a" in names
    report = build(
        target="app",
        workspace=tmp_path / "machine",
        archive=archive,
        command=["sh", "build.sh"],
        artifacts=["out.a", "deps.txt"],
        version="1.0",
        env={},
        timeout=30,
    )
    by_name = {a.name: Path(a.path) for a in report.artifacts}
    assert by_name["out.a"].read_bytes() == b"\x00archive"
    assert by_name["deps.txt"].read_text().split() == ["lib"]
