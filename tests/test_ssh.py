"""paramiko against a real sshd on 127.0.0.1 (a local machine)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropship.errors import (
    ChecksumMismatch,
    HostKeyMismatch,
    MachineError,
    TransferError,
)
from dropship.machines import Machine
from dropship.machines.local import LocalProvider
from dropship.ssh import (
    READ_SIZE,
    Endpoint,
    Expected,
    Hardlink,
    KeyPair,
    Mkdir,
    Operation,
    SshSession,
    Symlink,
    Upload,
    generate_keypair,
)
from tests.servers import RepoServerHost, start_repo_server
from tests.support import boot


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[tuple[Machine, KeyPair]]:
    provider = LocalProvider(tmp_path / "state")
    client = generate_keypair("client")
    made = boot(provider, client)
    yield made, client
    provider.delete(made.id)


def _endpoint(machine: Machine, host_key: str | None = None) -> Endpoint:
    return Endpoint(machine.host, machine.port, machine.user, host_key or machine.host_public_key)


def test_run_quotes_arguments(machine: tuple[Machine, KeyPair]) -> None:
    made, client = machine
    with SshSession(_endpoint(made), client.private_openssh) as session:
        assert session.run(["echo", "a; rm -rf /", "$HOME"]).strip() == "a; rm -rf / $HOME"
        with pytest.raises(MachineError, match="exited 3"):
            session.run(["sh", "-c", "exit 3"])


def test_put_get_verify_sha256(machine: tuple[Machine, KeyPair], tmp_path: Path) -> None:
    made, client = machine
    payload = tmp_path / "payload.bin"
    payload.write_bytes(bytes(range(256)) * 8192)
    with SshSession(_endpoint(made), client.private_openssh) as session:
        digest = session.put(payload, f"{made.work_dir}/sub/payload.bin")
        session.get(f"{made.work_dir}/sub/payload.bin", tmp_path / "back.bin", sha256=digest)
        assert (tmp_path / "back.bin").read_bytes() == payload.read_bytes()
        with pytest.raises(ChecksumMismatch, match="does not match the build report"):
            session.get(f"{made.work_dir}/sub/payload.bin", tmp_path / "bad.bin", sha256="0" * 64)
    assert not (tmp_path / "bad.bin").exists() and not (tmp_path / "bad.bin.part").exists()


def test_a_mismatch_names_where_the_expected_sha256_came_from(machine: tuple[Machine, KeyPair], tmp_path: Path) -> None:
    """Not every download checks against a build report: the publisher's mirror checks a release's listing."""
    made, client = machine
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"x" * 1000)
    listing = Expected("release r1's listing", "check the repository server")
    with SshSession(_endpoint(made), client.private_openssh) as session:
        session.put(payload, f"{made.work_dir}/payload.bin")
        with pytest.raises(ChecksumMismatch) as info:
            session.get(f"{made.work_dir}/payload.bin", tmp_path / "bad.bin", sha256="0" * 64, expected=listing)
    assert "does not match release r1's listing " + "0" * 64 in str(info.value)
    assert str(info.value).endswith("; check the repository server") and "build report" not in str(info.value)


def test_other_host_key_is_refused(machine: tuple[Machine, KeyPair]) -> None:
    made, client = machine
    impostor = generate_keypair("impostor").public_line
    with pytest.raises(HostKeyMismatch, match="instead of the pinned"):
        SshSession(_endpoint(made, impostor), client.private_openssh).connect()


def test_other_client_key_is_refused(machine: tuple[Machine, KeyPair]) -> None:
    made, _ = machine
    with pytest.raises(MachineError, match="refused our SSH key"):
        SshSession(_endpoint(made), generate_keypair("stranger").private_openssh).connect()


def test_unreachable_port_times_out_clearly(tmp_path: Path) -> None:
    ep = Endpoint("127.0.0.1", 9, "root", generate_keypair().public_line)
    with pytest.raises(MachineError, match="could not reach 127.0.0.1:9 over SSH within 1 s"):
        SshSession(ep, generate_keypair().private_openssh, connect_timeout=1).connect()


# -- pipelined transfers (get_many, apply) against an sshd whose connections a test can cut


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RepoServerHost]:
    host = start_repo_server(tmp_path / "server")
    yield host
    host.stop()


def _remote_files(server: RepoServerHost, sizes: dict[str, int]) -> dict[str, bytes]:
    made = {}
    for name, size in sizes.items():
        made[name] = os.urandom(size)
        (server.root / name).write_bytes(made[name])
    return made


def test_get_many_pulls_every_file_whole(server: RepoServerHost, tmp_path: Path) -> None:
    sizes = {"empty": 0, "one": 1, "small": 200_000, "edge": READ_SIZE, "big": 3 * READ_SIZE + 17}
    sizes |= {f"many{i:02}": 1000 * i for i in range(40)}  # more files than are open at once
    data = _remote_files(server, sizes)
    wanted = [(str(server.root / n), tmp_path / "out" / n, hashlib.sha256(d).hexdigest()) for n, d in data.items()]
    with SshSession(server.endpoint, server.private_key) as session:
        assert session.get_many(wanted) == [len(d) for d in data.values()]
    for name, content in data.items():
        assert (tmp_path / "out" / name).read_bytes() == content
    assert not list((tmp_path / "out").glob("*.part"))


@pytest.mark.parametrize("damage", ["truncated", "tampered"])
def test_get_refuses_a_file_that_is_not_the_reported_one(server: RepoServerHost, tmp_path: Path, damage: str) -> None:
    data = _remote_files(server, {"good": 100_000, "pkg.deb": 2 * READ_SIZE + 5})
    reported = hashlib.sha256(data["pkg.deb"]).hexdigest()
    remote = server.root / "pkg.deb"
    if damage == "truncated":
        remote.write_bytes(data["pkg.deb"][: READ_SIZE + 3])
    else:
        remote.write_bytes(data["pkg.deb"][:1000] + bytes([data["pkg.deb"][1000] ^ 1]) + data["pkg.deb"][1001:])
    out = tmp_path / "out"
    with SshSession(server.endpoint, server.private_key) as session:
        with pytest.raises(
            ChecksumMismatch, match=f"pkg.deb from 127.0.0.1: sha256 .* does not match the build report's {reported}"
        ):
            session.get_many(
                [
                    (str(server.root / "good"), out / "good", hashlib.sha256(data["good"]).hexdigest()),
                    (str(remote), out / "pkg.deb", reported),
                ]
            )
        assert not (out / "pkg.deb").exists() and not (out / "pkg.deb.part").exists()
        # the session stays usable after the refusal
        session.get(str(server.root / "good"), out / "again", sha256=hashlib.sha256(data["good"]).hexdigest())
    assert (out / "again").read_bytes() == data["good"]


def test_missing_remote_file_is_a_transfer_error(server: RepoServerHost, tmp_path: Path) -> None:
    with (
        SshSession(server.endpoint, server.private_key) as session,
        pytest.raises(TransferError, match=r"cannot open .*/absent"),
    ):
        session.get(str(server.root / "absent"), tmp_path / "absent", sha256="0" * 64)
    assert not list(tmp_path.glob("absent*"))


def test_connection_dropped_mid_download_leaves_no_file(server: RepoServerHost, tmp_path: Path) -> None:
    size = 96 << 20
    with (server.root / "huge.deb").open("wb") as out:
        for _ in range(size >> 20):
            out.write(os.urandom(1 << 20))
    local = tmp_path / "huge.deb"
    partial = tmp_path / "huge.deb.part"
    started = threading.Event()

    def cut_when_bytes_arrive() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if partial.exists() and partial.stat().st_size > 0:
                started.set()
                server.drop_connections()
                return
            time.sleep(0.001)

    cutter = threading.Thread(target=cut_when_bytes_arrive)
    with SshSession(server.endpoint, server.private_key) as session:
        _ = session.sftp  # connected before the cutter starts looking
        cutter.start()
        with pytest.raises(TransferError, match=r"download of .*/huge.deb from 127.0.0.1 failed: .*(dropped|lost)"):
            session.get(str(server.root / "huge.deb"), local, sha256="0" * 64)
    cutter.join()
    assert started.is_set(), "the connection was cut while bytes were arriving"
    assert not local.exists() and not partial.exists()


def test_apply_creates_folders_links_and_files_in_order(server: RepoServerHost, tmp_path: Path) -> None:
    base = str(server.root / "stage")
    (server.root / "old").write_bytes(b"old content")
    sources = {f"f{i}": os.urandom(i * 50_000) for i in range(6)}
    for name, content in sources.items():
        (tmp_path / name).write_bytes(content)
    digest = hashlib.sha256()
    steps: list[Operation] = [
        Mkdir(base),
        Mkdir(f"{base}/a"),
        Mkdir(f"{base}/a/b"),
        Hardlink(str(server.root / "old"), f"{base}/a/b/linked"),
        *[Upload(tmp_path / n, f"{base}/a/{n}") for n in sources],
        Upload(tmp_path / "f5", f"{base}/hashed", digest=digest),
        Symlink("a/f1", f"{base}/link"),
        Upload(None, f"{base}/a/b/data", data=b"inline"),
    ]
    seen: list[tuple[int, int]] = []
    with SshSession(server.endpoint, server.private_key) as session:
        sent = session.apply(steps, lambda done, total: seen.append((done, total)))
    stage = server.root / "stage"
    assert sent == sum(map(len, sources.values())) + len(sources["f5"]) + len(b"inline")
    assert all((stage / "a" / n).read_bytes() == c for n, c in sources.items())
    assert os.stat(stage / "a/b/linked").st_ino == os.stat(server.root / "old").st_ino
    assert os.readlink(stage / "link") == "a/f1" and (stage / "a/b/data").read_bytes() == b"inline"
    assert digest.hexdigest() == hashlib.sha256(sources["f5"]).hexdigest()
    assert seen == [(n, 8) for n in range(1, 9)]


def test_apply_stops_at_the_first_failure(server: RepoServerHost, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 1000)
    (server.root / "exists").mkdir()
    with SshSession(server.endpoint, server.private_key) as session:
        with pytest.raises(TransferError, match=r"mkdir .*/exists"):
            session.apply([Mkdir(str(server.root / "exists")), Upload(tmp_path / "f", str(server.root / "exists/f"))])
        with pytest.raises(TransferError, match=r"cannot create .*/nowhere/f"):
            session.apply([Upload(tmp_path / "f", str(server.root / "nowhere/f"))])
        assert session.apply([Upload(tmp_path / "f", str(server.root / "exists/g"))]) == 1000, "still usable"


@pytest.mark.parametrize("raised", [OSError("Socket is closed"), EOFError()], ids=["socket-closed", "eof"])
def test_a_cut_connection_reads_the_same_however_paramiko_says_it(raised: BaseException) -> None:
    from dropship.ssh import ssh_errors

    with (
        pytest.raises(TransferError, match=r"^download of f failed: the connection was lost \("),
        ssh_errors(TransferError, "download of f failed"),
    ):
        raise raised
