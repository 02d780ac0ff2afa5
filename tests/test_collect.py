"""collect() against a real sshd: every artifact of the build report, sha256-checked."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dropship.builder import REPORT, ArtifactReport, BuildReport
from dropship.collect import collect
from dropship.errors import ChecksumMismatch, TransferError
from dropship.machines import Machine
from tests.servers import RepoServerHost, start_repo_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RepoServerHost]:
    host = start_repo_server(tmp_path / "server")
    yield host
    host.stop()


def _machine(server: RepoServerHost, artifacts: dict[str, bytes], reported: dict[str, bytes] | None = None) -> Machine:
    work = server.root / "work"
    work.mkdir()
    entries = []
    for name, data in artifacts.items():
        (work / name.replace("/", "_")).write_bytes(data)
        claimed = (reported or {}).get(name, data)
        entries.append(
            ArtifactReport(name, str(work / name.replace("/", "_")), len(claimed), hashlib.sha256(claimed).hexdigest())
        )
    (work / REPORT).write_text(BuildReport("t", "1.0", 1.0, tuple(entries), "").to_json())
    ep = server.endpoint
    return Machine("m", "m", "local", (), ep.host, ep.port, ep.user, str(work), datetime.now(UTC), ep.host_public_key)


def test_collect_pulls_every_artifact(server: RepoServerHost, tmp_path: Path) -> None:
    artifacts = {f"pkg{i}_1.0_amd64.deb": os.urandom(i * 70_000) for i in range(25)}
    report, pulled = collect(_machine(server, artifacts), server.private_key, tmp_path / "out")
    assert [p.name for p in pulled] == list(artifacts) and len(report.artifacts) == 25
    assert all(p.read_bytes() == artifacts[p.name] for p in pulled)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(artifacts)


def test_collect_refuses_an_artifact_that_differs_from_the_report(server: RepoServerHost, tmp_path: Path) -> None:
    artifacts = {"a.deb": os.urandom(1000), "b.deb": os.urandom(300_000)}
    machine = _machine(server, artifacts, reported={"b.deb": artifacts["b.deb"][:-1] + b"!"})
    with pytest.raises(ChecksumMismatch, match="b.deb from 127.0.0.1"):
        collect(machine, server.private_key, tmp_path / "out")
    assert not (tmp_path / "out/b.deb").exists() and not list((tmp_path / "out").glob("*.part"))


def test_collect_refuses_a_path_as_artifact_name_before_downloading(server: RepoServerHost, tmp_path: Path) -> None:
    machine = _machine(server, {"ok.deb": b"1", "../escape.deb": b"2"})
    with pytest.raises(TransferError, match="refusing artifact name '../escape.deb'"):
        collect(machine, server.private_key, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
