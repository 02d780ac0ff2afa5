from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from dropship.builder import REPORT, BuildReport, build, unpack
from dropship.demo import prepare_repository
from dropship.errors import BuildFailed
from dropship.source import archive, resolve


@pytest.fixture
def source_archive(tmp_path: Path) -> Path:
    repo = prepare_repository(tmp_path / "hello", "v0.1.0")
    return archive(resolve(repo, "v0.1.0", is_tag=True), tmp_path / "src.tar.gz")


def _build(tmp_path: Path, src: Path, command: list[str], artifacts: list[str]) -> BuildReport:
    return build(
        target="amd64-deb",
        workspace=tmp_path / "ws",
        archive=src,
        command=command,
        artifacts=artifacts,
        version="0.1.0",
        env={},
        timeout=120,
    )


def test_real_build_reports_artifacts(tmp_path: Path, source_archive: Path) -> None:
    report = _build(tmp_path, source_archive, ["sh", "packaging/build.sh", "deb", "amd64"], ["out/*.deb"])
    (artifact,) = report.artifacts
    assert artifact.name == "hello_0.1.0_amd64.deb" and artifact.size == Path(artifact.path).stat().st_size
    assert BuildReport.from_json((tmp_path / "ws" / REPORT).read_text()) == report


def test_failing_command_and_missing_artifact(tmp_path: Path, source_archive: Path) -> None:
    with pytest.raises(BuildFailed, match="target amd64-deb: build of amd64-deb failed with exit code 7"):
        _build(tmp_path, source_archive, ["sh", "-c", "echo compiling; exit 7"], ["out/*.deb"])
    with pytest.raises(BuildFailed, match="artifact pattern 'out/\\*.deb' matched no file"):
        _build(tmp_path, source_archive, ["true"], ["out/*.deb"])
    assert not (tmp_path / "ws" / REPORT).exists()


def test_archive_escaping_the_workspace_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(tarfile.TarError):
        unpack(evil, tmp_path / "out")
    assert not (tmp_path / "escaped").exists()


def test_report_round_trip() -> None:
    data = {
        "target": "t",
        "version": "1",
        "seconds": 1.5,
        "output_tail": "",
        "artifacts": [{"name": "a.deb", "path": "/w/a.deb", "size": 3, "sha256": "ab"}],
    }
    assert json.loads(BuildReport.from_json(json.dumps(data)).to_json()) == data
