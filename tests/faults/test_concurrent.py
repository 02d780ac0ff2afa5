"""Two releases at once: both are in the served indices afterwards.

Each release runs in its own process, as two orchestrators would, against a
local folder and against a repository server over SSH; the repository's
lock makes reading `current`, signing on top of it and publishing one
critical section (without it, both start from the same tree and the later
switch drops the earlier release's packages).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropship.publish import LocalPublisher, SshPublisher
from tests.faults.harness import (
    indexed_releases,
    published_versions,
    publisher_from,
    spawn_release,
    ssh_spec,
)
from tests.servers import RepoServerHost, start_repo_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RepoServerHost]:
    host = start_repo_server(tmp_path / "server")
    yield host
    host.stop()


def _spec(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[dict[str, str], Path]:
    if kind == "local":
        return {"kind": "local", "root": str(tmp_path / "repo")}, tmp_path / "repo"
    server: RepoServerHost = request.getfixturevalue("server")
    return ssh_spec(server, tmp_path / "mirror-unused"), server.root


@pytest.mark.parametrize("kind", ["local", "ssh"])
def test_two_releases_at_once_both_stay_published(
    kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    signing_key: str,
    example_packages: dict[str, dict[str, Path]],
) -> None:
    spec, root = _spec(kind, tmp_path, request)
    first = spawn_release(
        {**spec, "mirror": str(tmp_path / "m0")} if kind == "ssh" else spec,
        tmp_path / "w0",
        "20260101T000000Z-v0.1.0",
        "0.1.0",
        example_packages["0.1.0"]["amd64-deb"],
        signing_key,
    )
    assert first.wait(timeout=120) == 0, first.stdout.read() if first.stdout else ""
    # Two orchestrators, each with its own mirror, started together.
    jobs = [
        spawn_release(
            {**spec, "mirror": str(tmp_path / f"m{i}")} if kind == "ssh" else spec,
            tmp_path / f"w{i}",
            f"2026010{i}T000000Z-v0.{i + 1}.0",
            f"0.{i + 1}.0",
            example_packages[f"0.{i + 1}.0"]["amd64-deb"],
            signing_key,
        )
        for i in (1, 2)
    ]
    outputs = []
    for job in jobs:
        status = job.wait(timeout=180)
        outputs.append(job.stdout.read() if job.stdout else "")
        assert status == 0, outputs[-1]
    current = root / "current"
    assert published_versions(current) == {"0.1.0", "0.2.0", "0.3.0"}, "a release vanished from the served index"
    assert indexed_releases(current) == {
        "20260101T000000Z-v0.1.0",
        "20260101T000000Z-v0.2.0",
        "20260102T000000Z-v0.3.0",
    }
    assert sorted(p.name for p in (root / "releases").iterdir() if not p.name.startswith(".")) == [
        "20260101T000000Z-v0.1.0",
        "20260101T000000Z-v0.2.0",
        "20260102T000000Z-v0.3.0",
    ]


@pytest.mark.parametrize("kind", ["local", "ssh"])
def test_a_waiting_publisher_is_told_who_holds_the_lock(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    spec, _ = _spec(kind, tmp_path, request)
    holder = publisher_from({**spec, "mirror": str(tmp_path / "a")})
    waiter = publisher_from({**spec, "mirror": str(tmp_path / "b")})
    assert isinstance(holder, (LocalPublisher, SshPublisher)) and isinstance(waiter, (LocalPublisher, SshPublisher))
    waiter.lock_timeout = 2
    heard: list[str] = []
    with holder.locked("flow run brave-otter (1234): publishing r9"):
        started = time.monotonic()
        with pytest.raises(Exception, match="publish lock") as failure, waiter.locked("other", heard.append):
            pass
        waited = time.monotonic() - started
    assert heard and "held by flow run brave-otter (1234): publishing r9" in heard[0], heard
    assert "current release unchanged" in str(failure.value)
    assert waited < 40
    with waiter.locked("other", heard.append):  # free again once the holder let go
        pass
    assert len(heard) == 1
    assert os.getpid() > 0
