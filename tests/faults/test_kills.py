"""An orchestrator killed with SIGKILL while signing or publishing.

The release runs in its own process and kills itself at the chosen point
(after the gpg-agent started; after staging, before the switch; mid-upload).
Afterwards: `current` is unchanged, the next publication takes the lock at
once (a flock ends with its holder; a Prefect slot would be held for its
300 s lease), rollback never picks the release that was never current, and
the keyring left behind (with its agent) is swept.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropship.errors import PublishError
from dropship.publish import LocalPublisher
from dropship.publish.base import BEEN_CURRENT
from dropship.reaper import sweep_run_secrets
from tests.faults.harness import (
    SLOW_SIGNING,
    agents_of,
    published_versions,
    publisher_from,
    spawn_release,
    ssh_spec,
)
from tests.servers import RepoServerHost, start_repo_server

R1, R2, R3 = "20260101T000000Z-v0.1.0", "20260102T000000Z-v0.2.0", "20260103T000000Z-v0.3.0"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RepoServerHost]:
    host = start_repo_server(tmp_path / "server")
    yield host
    host.stop()


def _release(
    spec: dict[str, str], work: Path, rid: str, version: str, deb: Path, key: str, kill_at: str | None = None
) -> int:
    job = spawn_release(spec, work, rid, version, deb, key, kill_at)
    status = job.wait(timeout=180)
    if kill_at is None:
        assert status == 0, job.stdout.read() if job.stdout else ""
    return status


def test_killed_while_signing_leaves_current_and_a_keyring_the_sweep_removes(
    tmp_path: Path,
    signing_key: str,
    example_packages: dict[str, dict[str, Path]],
) -> None:
    spec = {"kind": "local", "root": str(tmp_path / "repo")}
    runs = tmp_path / "runs"
    debs = {v: example_packages[v]["amd64-deb"] for v in ("0.1.0", "0.2.0", "0.3.0")}
    _release(spec, runs / "run-1", R1, "0.1.0", debs["0.1.0"], signing_key)
    assert _release(spec, runs / "run-2", R2, "0.2.0", debs["0.2.0"], signing_key, kill_at="signing") == -9

    current = tmp_path / "repo" / "current"
    assert os.readlink(current) == f"releases/{R1}" and published_versions(current) == {"0.1.0"}
    keyring = runs / "run-2" / "gnupg"
    assert list(keyring.glob("private-keys-v1.d/*.key")), "the kill left the unencrypted key behind"
    assert agents_of(keyring), "and its gpg-agent running"

    started = time.monotonic()
    _release(spec, runs / "run-3", R3, "0.3.0", debs["0.3.0"], signing_key)
    blocked = time.monotonic() - started - SLOW_SIGNING
    print(f"\nFIGURE kill-during-sign: next release not blocked ({blocked:.1f} s incl. process start)")
    assert blocked < 30
    assert published_versions(current) == {"0.1.0", "0.3.0"}

    swept = sweep_run_secrets(runs, lambda run_id: run_id != "run-live")
    assert "run-2/gnupg" in swept and not keyring.exists()
    deadline = time.monotonic() + 10
    while agents_of(keyring) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert agents_of(keyring) == [], "the dead run's gpg-agent was stopped"


@pytest.mark.parametrize(("kind", "kill_at"), [("local", "staged"), ("ssh", "upload")])
def test_killed_while_publishing_blocks_no_one_and_is_never_rolled_back_to(
    kind: str,
    kill_at: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    signing_key: str,
    example_packages: dict[str, dict[str, Path]],
) -> None:
    if kind == "local":
        spec, root = {"kind": "local", "root": str(tmp_path / "repo")}, tmp_path / "repo"
    else:
        server: RepoServerHost = request.getfixturevalue("server")
        spec, root = ssh_spec(server, tmp_path / "mirror"), server.root
    debs = {v: example_packages[v]["amd64-deb"] for v in ("0.1.0", "0.2.0", "0.3.0")}
    _release(spec, tmp_path / "w1", R1, "0.1.0", debs["0.1.0"], signing_key)
    assert _release(spec, tmp_path / "w2", R2, "0.2.0", debs["0.2.0"], signing_key, kill_at=kill_at) == -9
    assert os.readlink(root / "current") == f"releases/{R1}", "current unchanged after the kill"
    if kind == "local":
        assert (root / "releases" / R2).is_dir(), "the kill left a complete release that was never current"
        assert not (root / "releases" / R2 / BEEN_CURRENT).exists()

    started = time.monotonic()
    _release(spec, tmp_path / "w3", R3, "0.3.0", debs["0.3.0"], signing_key)
    took = time.monotonic() - started - SLOW_SIGNING
    print(f"\nFIGURE kill-during-publish ({kind}): next publish took {took:.1f} s (no stale lock)")
    assert took < 30, "a dead publisher's lock blocked the next publication"
    current = root / "current"
    assert os.readlink(current) == f"releases/{R3}"
    assert published_versions(current) == {"0.1.0", "0.3.0"}
    assert not list((root / "releases").glob(".incoming-*")), "the next publication swept the leftover"

    publisher = publisher_from(spec)
    previous, target = publisher.rollback()
    assert (previous, target) == (R3, R1), "rollback skipped the release that was never current"
    if kind == "local":
        assert isinstance(publisher, LocalPublisher)
        with pytest.raises(PublishError, match="that was ever current"):
            publisher.rollback()
