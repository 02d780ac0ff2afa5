"""Publication under live clients: real apt-get loops against Debian's nginx while
releases are published. The atomic SSH publisher must cause zero client
failures; a plain in-place upload of the same releases (what the old rsync
scripts did) must cause some, or this test proves nothing."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.synthetic import write_deb, write_debs
from dropship.publish import SshPublisher
from dropship.repos.apt import AptRepository, AptSettings
from dropship.signing import Signer
from dropship.ssh import SshSession
from tests.clients import AptClient, ClientFailed
from tests.servers import Nginx, RepoServerHost, start_nginx, start_repo_server

RELEASES = 20
CLIENTS = 3
PAUSE = 0.2
WAN_DELAY = 0.02  # seconds per file uploaded in place (a round trip on a real network)
ROUNDS = 3
"""Seconds between two publications, the same for both ways of publishing."""
SETTINGS = AptSettings(origin="load", label="load", component="main", architectures=("amd64",), keep_versions=2)


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory, signing_key: str) -> tuple[list[Path], bytes]:
    """21 signed APT trees: 150 packages, then one package more in each release."""
    base = tmp_path_factory.mktemp("load")
    debs = write_debs(base / "debs", 150)
    trees: list[Path] = []
    now = datetime(2026, 11, 1, tzinfo=UTC)
    with Signer([signing_key]) as signer:
        for k in range(RELEASES + 1):
            tree = base / f"tree{k:02}"
            if trees:
                shutil.copytree(trees[-1], tree, symlinks=True)
            added = debs if k == 0 else [write_deb(base / "debs", f"extra{k:02}", "1.0")]
            AptRepository(tree, SETTINGS).add("stable", added, signer, now=now + timedelta(minutes=k))
            trees.append(tree)
        keyring = signer.public_key_binary()
    return trees, keyring


class ClientLoop:
    """CLIENTS threads running `apt-get update` back to back until stopped."""

    def __init__(self, folder: Path, url: str, keyring: Path) -> None:
        self.clients = [AptClient(folder / f"c{i}", url, keyring, "stable") for i in range(CLIENTS)]
        self.runs = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, args=(c,), daemon=True) for c in self.clients]

    def _loop(self, client: AptClient) -> None:
        while not self._stop.is_set():
            try:
                client.update()
                failure = None
            except ClientFailed as exc:
                failure = exc.output
            with self._lock:
                self.runs += 1
                if failure is not None:
                    self.failures.append(failure)

    def __enter__(self) -> ClientLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RepoServerHost]:
    host = start_repo_server(tmp_path / "server")
    yield host
    host.stop()


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[Path], Nginx]]:
    started: list[Nginx] = []

    def start(root: Path) -> Nginx:
        started.append(start_nginx(tmp_path / f"nginx{len(started)}", root))
        return started[-1]

    yield start
    for instance in started:
        instance.stop()


def _under_clients(tmp_path: Path, url: str, keyring: bytes, publish: Callable[[int], None]) -> ClientLoop:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "keyring.gpg").write_bytes(keyring)
    loop = ClientLoop(tmp_path / "clients", url, tmp_path / "keyring.gpg")
    with loop:
        time.sleep(0.5)
        for k in range(1, RELEASES + 1):
            publish(k)
            time.sleep(PAUSE)
        time.sleep(0.5)
    return loop


def test_atomic_publication_never_fails_a_client(tmp_path: Path, server: RepoServerHost, nginx, releases) -> None:
    trees, keyring = releases
    publisher = SshPublisher(server.endpoint, server.private_key, str(server.root), mirror=tmp_path / "mirror")
    publisher.publish(trees[0], "r00")
    web = nginx(server.root / "current")
    loop = _under_clients(tmp_path, web.url, keyring, lambda k: publisher.publish(trees[k], f"r{k:02}"))
    assert loop.runs >= 2 * RELEASES, f"only {loop.runs} apt-get runs overlapped the publications"
    assert loop.failures == [], f"{len(loop.failures)} of {loop.runs} clients failed:\n{loop.failures[0]}"
    assert os.readlink(server.root / "current") == f"releases/r{RELEASES:02}"
    print(f"atomic SSH publication: 0 of {loop.runs} apt-get runs failed")


def _upload_in_place(session: SshSession, tree: Path, live: str, previous: Path | None) -> None:
    """The old way, rsync-style: upload each changed file over its live copy in name order, then delete extras."""
    wanted = set()
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        relative = path.relative_to(tree).as_posix()
        wanted.add(relative)
        old = previous / relative if previous else None
        if old is not None and old.is_file() and old.read_bytes() == path.read_bytes():
            continue
        session.makedirs(f"{live}/{Path(relative).parent}")
        with path.open("rb") as src, session.sftp.open(f"{live}/{relative}", "wb") as dst:
            dst.write(src.read())
        # A file costs a round trip or more on a real network; loopback (with the pipelined,
        # TCP_NODELAY session) made the in-place window too short for clients to ever fall into.
        time.sleep(WAN_DELAY)
    for path in sorted(p for p in Path(live).rglob("*") if p.is_file()):
        if path.relative_to(live).as_posix() not in wanted:
            session.sftp.remove(str(path))


def test_in_place_upload_baseline_fails_clients(tmp_path: Path, server: RepoServerHost, nginx, releases) -> None:
    """The same 20 publications done in place. A failure needs a client to fetch the new InRelease in
    the few milliseconds before the new by-hash indices arrive, so one round fails a client only most
    of the time; up to ROUNDS rounds (fresh folder, fresh clients) are run until one does."""
    trees, keyring = releases
    runs = failures = 0
    with SshSession(server.endpoint, server.private_key) as session:
        for round_ in range(ROUNDS):
            live = server.root / f"live{round_}"
            live.mkdir()
            _upload_in_place(session, trees[0], str(live), None)
            web = nginx(live)
            loop = _under_clients(
                tmp_path / f"round{round_}",
                web.url,
                keyring,
                lambda k, live=live: _upload_in_place(session, trees[k], str(live), trees[k - 1]),
            )
            runs, failures = runs + loop.runs, failures + len(loop.failures)
            if failures:
                break
    print(f"in-place baseline: {failures} of {runs} apt-get runs failed in {round_ + 1} round(s)")
    assert failures, f"the in-place baseline caused no failure in {runs} runs: the test cannot tell"
