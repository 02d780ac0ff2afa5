"""SshPublisher against a real sshd on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropship.errors import PublishError
from dropship.publish import SshPublisher
from dropship.publish.listing import META_FILE
from tests.servers import RepoServerHost, start_repo_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RepoServerHost]:
    host = start_repo_server(tmp_path / "server")
    yield host
    host.stop()


def _publisher(server: RepoServerHost, mirror: Path, keep: int = 3) -> SshPublisher:
    return SshPublisher(server.endpoint, server.private_key, str(server.root), mirror=mirror, keep_releases=keep)


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_publish_uploads_only_new_files_and_switches(server: RepoServerHost, tmp_path: Path) -> None:
    publisher = _publisher(server, tmp_path / "mirror")
    packages = {f"pool/p{i:03}.deb": os.urandom(2000) for i in range(200)}
    first = publisher.publish(_tree(tmp_path / "t1", {**packages, "dists/InRelease": b"one"}), "r1")
    assert first.uploaded == 201 and first.reused == 0
    assert os.readlink(server.root / "current") == "releases/r1"

    seeded = tmp_path / "t2"
    publisher.fetch_current(seeded)
    assert (seeded / "pool/p007.deb").read_bytes() == packages["pool/p007.deb"]
    (seeded / "pool/new.deb").write_bytes(os.urandom(3000))
    (seeded / "dists/InRelease").unlink()
    (seeded / "dists/InRelease").write_bytes(b"two")
    second = publisher.publish(seeded, "r2")

    assert (second.uploaded, second.reused) == (2, 200)
    assert second.bytes_uploaded == 3000 + 3, "only the new package and the changed index crossed the network"
    assert (server.root / "current/dists/InRelease").read_bytes() == b"two"
    old, new = server.root / "releases/r1/pool/p007.deb", server.root / "releases/r2/pool/p007.deb"
    assert os.stat(old).st_ino == os.stat(new).st_ino, "unchanged files are hard links on the server"
    assert (server.root / "releases/r2" / META_FILE).is_file()


def test_fetch_current_downloads_only_what_the_mirror_lacks(server: RepoServerHost, tmp_path: Path) -> None:
    _publisher(server, tmp_path / "a").publish(_tree(tmp_path / "t1", {"x": b"1", "d/y": b"2"}), "r1")
    other = _publisher(server, tmp_path / "b")  # another orchestrator, empty mirror
    other.fetch_current(tmp_path / "copy")
    assert (tmp_path / "copy/d/y").read_bytes() == b"2"
    assert sorted(p.name for p in (tmp_path / "b/objects").iterdir()) == sorted(
        hashlib.sha256(d).hexdigest() for d in (b"1", b"2")
    )


def test_fetch_current_only_downloads_just_those_files_and_keeps_the_mirror(
    server: RepoServerHost, tmp_path: Path
) -> None:
    big = os.urandom(200_000)
    _publisher(server, tmp_path / "a").publish(_tree(tmp_path / "t1", {"index.json": b"{}", "pool/p.deb": big}), "r1")
    other = _publisher(server, tmp_path / "b")
    other.fetch_current(tmp_path / "all")  # the mirror now holds both
    other.fetch_current(tmp_path / "index", only={"index.json", "missing.json"})
    assert sorted(p.relative_to(tmp_path / "index").as_posix() for p in (tmp_path / "index").rglob("*")) == [
        "index.json"
    ]
    assert (tmp_path / "b/objects" / hashlib.sha256(big).hexdigest()).exists(), "a partial fetch pruned the mirror"
    fresh = _publisher(server, tmp_path / "c")  # an empty mirror: the package is never downloaded
    fresh.fetch_current(tmp_path / "index2", only={"index.json"})
    assert [p.name for p in (tmp_path / "c/objects").iterdir()] == [hashlib.sha256(b"{}").hexdigest()]


def test_interrupted_upload_leaves_current_and_next_publish_succeeds(server: RepoServerHost, tmp_path: Path) -> None:
    publisher = _publisher(server, tmp_path / "mirror")
    publisher.publish(_tree(tmp_path / "t1", {"a": b"old"}), "r1")
    big = _tree(tmp_path / "t2", {f"f{i:02}": os.urandom(50_000) for i in range(40)})

    def drop(step: str, done: int, total: int) -> None:
        if step == "upload" and done == 10:
            server.drop_connections()

    with pytest.raises(PublishError, match="current release unchanged"):
        publisher.publish(big, "r2", progress=drop)
    assert os.readlink(server.root / "current") == "releases/r1"
    assert (server.root / "current/a").read_bytes() == b"old"
    assert list((server.root / "releases").glob(".incoming-*")), "the half upload stays staged, unseen"

    publisher.publish(big, "r2")
    assert os.readlink(server.root / "current") == "releases/r2"
    assert not list((server.root / "releases").glob(".incoming-*")), "the next publication swept it"


def test_retention_and_rollback(server: RepoServerHost, tmp_path: Path) -> None:
    publisher = _publisher(server, tmp_path / "mirror", keep=2)
    for n in (1, 2, 3):
        publisher.publish(_tree(tmp_path / f"t{n}", {"v": str(n).encode()}), f"r{n}")
    assert publisher.release_ids() == ["r2", "r3"]
    assert publisher.rollback() == ("r3", "r2")
    assert (server.root / "current/v").read_bytes() == b"2"
    with pytest.raises(PublishError, match="no release older"):
        publisher.rollback()
    with pytest.raises(PublishError, match="not on the server"):
        publisher.rollback("r1")
    publisher.publish(_tree(tmp_path / "t4", {"v": b"4"}), "r4")
    assert publisher.release_ids() == ["r3", "r4"]


def test_half_staged_release_cannot_be_switched_to(server: RepoServerHost, tmp_path: Path) -> None:
    publisher = _publisher(server, tmp_path / "mirror")
    publisher.publish(_tree(tmp_path / "t1", {"a": b"1"}), "r1")
    (server.root / "releases/broken").mkdir()
    with pytest.raises(PublishError, match="no readable listing"):
        publisher.switch("broken")
    assert os.readlink(server.root / "current") == "releases/r1"


def test_wrong_host_key_is_refused_before_anything_is_sent(server: RepoServerHost, tmp_path: Path) -> None:
    from dataclasses import replace

    from dropship.ssh import generate_keypair

    wrong = replace(server.endpoint, host_public_key=generate_keypair().public_line)
    publisher = SshPublisher(wrong, server.private_key, str(server.root), mirror=tmp_path / "m")
    with pytest.raises(PublishError, match="pinned"):
        publisher.publish(_tree(tmp_path / "t", {"a": b"1"}), "r1")
    assert not (server.root / "releases").exists()


def test_two_publishers_at_once_do_not_interleave(server: RepoServerHost, tmp_path: Path) -> None:
    """Two orchestrators (own mirrors) publish at the same moment: the server's lock serialises them."""
    import threading
    import time

    uploads: dict[str, list[float]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def publish(name: str) -> None:
        tree = _tree(tmp_path / f"t-{name}", {f"{name}/{i:02}": os.urandom(20_000) for i in range(30)})
        try:
            _publisher(server, tmp_path / f"mirror-{name}").publish(
                tree, f"r-{name}", progress=lambda step, done, total: uploads[name].append(time.monotonic())
            )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    first, second = sorted(uploads.values(), key=lambda times: times[0])
    assert first[-1] < second[0], "the second upload started before the first publication ended"
    for name in ("a", "b"):
        assert sorted(p.name for p in (server.root / "releases" / f"r-{name}" / name).iterdir()) == [
            f"{i:02}" for i in range(30)
        ]


def test_moved_and_copied_files_are_linked_and_symlinks_kept(server: RepoServerHost, tmp_path: Path) -> None:
    a, b = os.urandom(5000), os.urandom(6000)
    publisher = _publisher(server, tmp_path / "mirror")
    first = _tree(tmp_path / "t1", {"pool/a.deb": a, "pool/b.deb": b, "dists/x": b"1"})
    os.symlink("pool/a.deb", first / "latest.deb")
    publisher.publish(first, "r1")

    second = _tree(tmp_path / "t2", {"pool/sub/a.deb": a, "pool/b.deb": b, "copy/b2.deb": b, "dists/x": b"2"})
    os.symlink("pool/sub/a.deb", second / "latest.deb")
    result = publisher.publish(second, "r2")

    assert (result.uploaded, result.reused, result.bytes_uploaded) == (1, 3, 1)
    r1, r2 = server.root / "releases/r1", server.root / "releases/r2"
    assert os.stat(r2 / "pool/sub/a.deb").st_ino == os.stat(r1 / "pool/a.deb").st_ino
    assert os.stat(r2 / "copy/b2.deb").st_ino == os.stat(r1 / "pool/b.deb").st_ino == os.stat(r2 / "pool/b.deb").st_ino
    assert os.readlink(r2 / "latest.deb") == "pool/sub/a.deb" and (server.root / "current/latest.deb").read_bytes() == a
    assert (server.root / "current/dists/x").read_bytes() == b"2"


def test_a_file_changed_on_the_server_before_the_switch_stops_the_publication(
    server: RepoServerHost, tmp_path: Path
) -> None:
    publisher = _publisher(server, tmp_path / "mirror")
    publisher.publish(_tree(tmp_path / "t1", {"a": b"one"}), "r1")

    def tamper(step: str, done: int, total: int) -> None:
        if step == "upload" and done == total:
            (server.root / "releases/.incoming-r2/b").write_bytes(b"not what was sent")

    with pytest.raises(PublishError, match="did not check out, current release unchanged"):
        publisher.publish(_tree(tmp_path / "t2", {"a": b"one", "b": os.urandom(3000)}), "r2", progress=tamper)
    assert os.readlink(server.root / "current") == "releases/r1"
    assert not (server.root / "releases/r2").exists()


def test_a_refused_publication_leaves_the_server_as_it_was(server: RepoServerHost, tmp_path: Path) -> None:
    """The switch command is started before the lock: a publication refused under the lock must not run it."""
    publisher = _publisher(server, tmp_path / "mirror")
    publisher.publish(_tree(tmp_path / "t1", {"a": b"one"}), "r1")
    before = sorted(p.relative_to(server.root).as_posix() for p in server.root.rglob("*"))
    with pytest.raises(PublishError, match="already published"):
        publisher.publish(_tree(tmp_path / "t2", {"a": b"two"}), "r1")
    assert sorted(p.relative_to(server.root).as_posix() for p in server.root.rglob("*")) == before
    assert (server.root / "current/a").read_bytes() == b"one"
