"""SSH to build machines and the repository server, with pinned host keys.

The orchestrator generates each machine's host key itself and hands it to the
machine in its user_data, so the key is known before the first connection:
nothing is trusted on first use, and a machine presenting any other key is
refused (`HostKeyMismatch`). Every file moved is checked by sha256.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import shlex
import socket
import struct
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import paramiko
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_HANDLE,
    CMD_MKDIR,
    CMD_OPEN,
    CMD_READ,
    CMD_STAT,
    CMD_STATUS,
    CMD_SYMLINK,
    CMD_WRITE,
    SFTP_EOF,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_READ,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTP_OK,
    SFTPError,
    int64,
)
from paramiko.sftp_attr import SFTPAttributes

from dropship.errors import ChecksumMismatch, DropshipError, HostKeyMismatch, MachineError, TransferError
from dropship.process import run

SSH_ERRORS = (OSError, EOFError, paramiko.SSHException, SFTPError)
"""What paramiko and the socket under it raise when a connection, command or transfer fails
(TimeoutError and socket.timeout are OSErrors)."""


@contextmanager
def ssh_errors(error: type[DropshipError], what: str) -> Iterator[None]:
    """The one converter of paramiko's errors, as httpx maps httpcore's: inside it, any of
    `SSH_ERRORS` becomes `error("<what>: <reason>")`, the original kept as `__cause__`.
    (`SshSession.connect` classifies its own: a changed host key, a refused key, a retry.)"""
    try:
        yield
    except SSH_ERRORS as exc:
        raise error(f"{what}: {_reason(exc)}") from exc


@dataclass(frozen=True)
class KeyPair:
    private_openssh: str
    public_line: str
    """`ssh-ed25519 AAAA... comment`"""


def generate_keypair(comment: str = "dropship") -> KeyPair:
    """A fresh ed25519 key pair (paramiko can't generate ed25519; ssh-keygen can)."""
    with tempfile.TemporaryDirectory(prefix="dropship-keygen-") as tmp:
        path = Path(tmp) / "key"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], what="ssh-keygen")
        return KeyPair(path.read_text(), (path.with_suffix(".pub")).read_text().strip())


def write_keypair(path: Path, comment: str) -> KeyPair:
    """Generate a key pair into `path` (0600, folder 0700) and `path`.pub."""
    pair = generate_keypair(comment)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(pair.private_openssh)
    path.with_suffix(".pub").write_text(pair.public_line + "\n")
    return pair


def _load_private_key(text: str) -> paramiko.PKey:
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise MachineError("the SSH private key is not an unencrypted ed25519, ECDSA or RSA key")


def _public_key(line: str) -> paramiko.PKey:
    parts = line.split()
    if len(parts) < 2:
        raise MachineError(f"not an OpenSSH public key line: {line[:40]!r}")
    try:
        return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))
    except (paramiko.SSHException, ValueError) as exc:
        raise MachineError(f"unusable host public key: {exc}") from exc


@dataclass(frozen=True)
class Expected:
    """Where a download's expected sha256 comes from, and what to do when the bytes differ."""

    source: str
    fix: str


BUILD_REPORT = Expected("the build report's", "build it again")


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect, and the host key to expect."""

    host: str
    port: int
    user: str
    host_public_key: str


@dataclass
class Held:
    """A remote command kept running (see `SshSession.hold`); `close()` ends it."""

    stdin: paramiko.ChannelFile
    channel: paramiko.Channel

    def close(self) -> None:
        with suppress(*SSH_ERRORS):  # the connection is gone: so is the command, and with it the lock
            self.stdin.close()
            self.channel.close()


@dataclass
class Started:
    """A remote command started ahead of need (see `SshSession.start`)."""

    command: str
    stdin: paramiko.ChannelFile
    stdout: paramiko.ChannelFile
    stderr: paramiko.ChannelFile

    def finish(self, data: bytes) -> str:
        """Send `data` as the command's whole stdin, wait for it to end, return its stdout."""
        with ssh_errors(MachineError, f"remote command {self.command!r} failed"):
            self.stdin.write(data)
            self.stdin.flush()
            self.stdin.channel.shutdown_write()
            out: str = self.stdout.read().decode(errors="replace")
            err: str = self.stderr.read().decode(errors="replace")
            status = self.stdout.channel.recv_exit_status()
        if status != 0:
            raise MachineError(f"remote command {self.command!r} exited {status}: {(err or out).strip()[-500:]}")
        return out

    def close(self) -> None:
        with suppress(*SSH_ERRORS):  # the connection is gone, and the command with it
            self.stdin.close()
            self.stdin.channel.close()


class SshSession:
    """One authenticated SSH connection; use as a context manager."""

    def __init__(
        self, endpoint: Endpoint, private_key: str, *, connect_timeout: float = 60.0, retry_interval: float = 0.5
    ) -> None:
        self.endpoint = endpoint
        self._key = _load_private_key(private_key)
        self._connect_timeout = connect_timeout
        self._retry_interval = retry_interval
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def __enter__(self) -> SshSession:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def connect(self) -> None:
        """Connect, retrying while the machine boots; never accept an unknown key."""
        ep = self.endpoint
        pinned = _public_key(ep.host_public_key)
        deadline = time.monotonic() + self._connect_timeout
        last: Exception | None = None
        while True:
            client = paramiko.SSHClient()
            host_id = ep.host if ep.port == 22 else f"[{ep.host}]:{ep.port}"
            client.get_host_keys().add(host_id, pinned.get_name(), pinned)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                client.connect(
                    ep.host,
                    port=ep.port,
                    username=ep.user,
                    pkey=self._key,
                    allow_agent=False,
                    look_for_keys=False,
                    timeout=10,
                    banner_timeout=10,
                    auth_timeout=10,
                )
                self._client = client
                return
            except paramiko.BadHostKeyException as exc:
                client.close()
                raise HostKeyMismatch(
                    f"{ep.host}:{ep.port} presented a {exc.key.get_name()} host key "
                    f"{exc.key.fingerprint} instead of the pinned {pinned.fingerprint}: refusing to connect"
                ) from exc
            except paramiko.AuthenticationException as exc:
                client.close()
                raise MachineError(f"{ep.user}@{ep.host}:{ep.port} refused our SSH key") from exc
            except SSH_ERRORS as exc:
                client.close()
                if "known_hosts" in str(exc):  # RejectPolicy: no key of the pinned type offered
                    raise HostKeyMismatch(f"{ep.host}:{ep.port} offered no host key of the pinned type") from exc
                last = exc
                if time.monotonic() >= deadline:
                    raise MachineError(
                        f"could not reach {ep.host}:{ep.port} over SSH within {self._connect_timeout:.0f} s: {last}"
                    ) from exc
                time.sleep(self._retry_interval)

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._client is None:
            raise MachineError("SSH session is not connected")
        if self._sftp is None:
            transport = self._client.get_transport()
            if transport is None:
                raise MachineError("SSH session is not connected")
            # Small requests (SFTP, channel opens) must not wait for delayed ACKs.
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sftp = paramiko.SFTPClient.from_transport(
                transport, window_size=SFTP_WINDOW, max_packet_size=SFTP_MAX_PACKET
            )
        return self._sftp

    def run(self, argv: Sequence[str], *, timeout: float = 600.0, stdin: bytes | None = None) -> str:
        """Run a command remotely; each argument is quoted, never interpolated.

        Lists of paths travel on `stdin` (NUL-separated, for `xargs -0`), so no
        file name is ever part of a command line the remote shell parses.
        """
        if self._client is None:
            raise MachineError("SSH session is not connected")
        command = shlex.join(argv)
        with ssh_errors(MachineError, f"remote command {command!r} failed"):
            channel_in, stdout, stderr = self._client.exec_command(command, timeout=timeout)
            if stdin is not None:
                channel_in.write(stdin)
                channel_in.flush()
            channel_in.channel.shutdown_write()
            out: str = stdout.read().decode(errors="replace")
            err: str = stderr.read().decode(errors="replace")
            status = stdout.channel.recv_exit_status()
        if status != 0:
            raise MachineError(f"remote command {command!r} exited {status}: {(err or out).strip()[-500:]}")
        return out

    def hold(
        self, argv: Sequence[str], *, ready: str, timeout: float, on_line: Callable[[str], None] | None = None
    ) -> Held:
        """Start a remote command that runs until we close it; wait for `ready` on its stdout.

        Used for the repository server's lock: `flock` keeps the lock exactly as
        long as this channel lives, so a dropped orchestrator never leaves a
        stale lock behind. The command's stdin stays open until `close()`
        (closing paramiko's stdin file, even by garbage collection, sends EOF).
        Lines before `ready` go to `on_line` (e.g. who holds the lock meanwhile).
        """
        if self._client is None:
            raise MachineError("SSH session is not connected")
        command = shlex.join(argv)
        with ssh_errors(MachineError, f"remote command {command!r} failed"):
            stdin, stdout, _ = self._client.exec_command(command, timeout=timeout)
            line = stdout.readline().strip()
            while on_line is not None and line and line != ready:
                on_line(line)
                line = stdout.readline().strip()
        if line != ready:
            status = stdout.channel.recv_exit_status() if stdout.channel.exit_status_ready() else None
            raise MachineError(f"remote command {command!r} did not get ready (exit {status}, said {line!r})")
        return Held(stdin, stdout.channel)

    def start(self, argv: Sequence[str], *, timeout: float) -> Started:
        """Start a remote command now, to be given its stdin (and awaited) later with `Started.finish`.

        The server spends about 0.1 s setting up each command's session: a
        command started before it is needed costs nothing when it is. Until
        `finish`, the command sees no input; `close()` instead gives it EOF.
        """
        if self._client is None:
            raise MachineError("SSH session is not connected")
        command = shlex.join(argv)
        with ssh_errors(MachineError, f"remote command {command!r} failed"):
            stdin, stdout, stderr = self._client.exec_command(command, timeout=timeout)
        return Started(command, stdin, stdout, stderr)

    def makedirs(self, path: str) -> None:
        current = ""
        for part in [p for p in path.split("/") if p]:
            current += "/" + part
            try:
                self.sftp.stat(current)
            except FileNotFoundError:
                self.sftp.mkdir(current)

    def put(self, local: Path, remote: str) -> str:
        """Upload (to `remote`.part, then renamed) and verify by reading the remote file's sha256 back; return it."""
        expected = hashlib.sha256()
        failed = f"upload of {local.name} to {self.endpoint.host}:{remote} failed"
        with ssh_errors(TransferError, failed):
            self.makedirs(str(Path(remote).parent))
        self.apply([Upload(local, remote + ".part", expected)])
        with ssh_errors(TransferError, failed):
            self.sftp.posix_rename(remote + ".part", remote)
        actual = self.remote_sha256(remote)
        if actual != expected.hexdigest():
            raise ChecksumMismatch(f"{remote}: sha256 after upload is {actual}, expected {expected.hexdigest()}")
        return actual

    def remote_sha256(self, remote: str) -> str:
        """sha256 of a remote file, read over SFTP (no remote tool assumed)."""
        digest = hashlib.sha256()
        self._download([_Download(remote, None, "", digest)])
        return digest.hexdigest()

    def get(self, remote: str, local: Path, *, sha256: str, expected: Expected = BUILD_REPORT) -> int:
        """Download to `local` if and only if its sha256 is `sha256`; return the size."""
        return self.get_many([(remote, local, sha256)], expected=expected)[0]

    def get_many(self, files: Sequence[tuple[str, Path, str]], *, expected: Expected = BUILD_REPORT) -> list[int]:
        """Download each (remote, local, sha256), several at once over this one connection; return the sizes.

        Reads are pipelined (many requests in flight, like OpenSSH's sftp) and
        each file is hashed as its bytes arrive, into `local`.part; only a file
        whose sha256 matches is renamed to `local`. On any failure no partial
        file is left and nothing unverified has the final name. A mismatch
        names where the sha256 came from and what to do (`expected`).
        """
        downloads = []
        for remote, local, sha256 in files:
            local.parent.mkdir(parents=True, exist_ok=True)
            downloads.append(_Download(remote, local, sha256, hashlib.sha256(), expected=expected))
        self._download(downloads)
        return [d.written for d in downloads]

    def _download(self, downloads: list[_Download]) -> None:
        pipeline = _Pipeline(self.sftp)
        waiting = list(reversed(downloads))
        active: list[_Download] = []
        current: _Download | None = None
        try:
            while waiting or active:
                while waiting and len(active) < FILES_AT_ONCE:
                    current = waiting.pop()
                    current.start(pipeline)
                    active.append(current)
                for download in active:
                    current = download
                    download.request(pipeline)
                finished = [d for d in active if d.finished]
                for download in finished:
                    current = download
                    active.remove(download)
                    download.close(pipeline, self.endpoint.host)
                if not finished:
                    current = None
                    pipeline.wait()
            current = None
            pipeline.drain()
        except SSH_ERRORS as exc:
            self._abandon(pipeline)
            names = [current.remote] if current else [d.remote for d in active]
            what = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise TransferError(
                f"download of {what} from {self.endpoint.host} failed: {_reason(exc)}; no unverified file was kept"
            ) from exc
        except BaseException:  # a refused file: the replies still due for the others must not reach anyone
            self._abandon(pipeline)
            raise
        finally:
            for download in [*active, *waiting]:
                download.discard()

    def apply(self, operations: Sequence[Operation], progress: Callable[[int, int], None] | None = None) -> int:
        """Carry out SFTP operations in order, pipelined on one channel; return the file bytes sent.

        The server handles requests in the order they are sent, so a folder
        listed before the files in it exists when they are created. Uploads go
        several files at once, each file's writes in flight together;
        `progress(done, total)` follows the uploads. The first failure stops
        everything and raises `TransferError` naming its operation.
        """
        pipeline = _Pipeline(self.sftp)
        uploads = sum(isinstance(op, Upload) and op.counted for op in operations)
        reported = 0
        running: list[_Upload] = []
        done = sent = 0
        position = 0
        failed: list[str] = []
        current = ""
        try:
            while position < len(operations) or running:
                requests, finished = pipeline.requests, done
                while position < len(operations) and len(running) < FILES_AT_ONCE and pipeline.in_flight < MAX_REQUESTS:
                    op = operations[position]
                    position += 1
                    current = op.describe()
                    if isinstance(op, Upload):
                        running.append(_Upload(op, pipeline, failed))
                    else:
                        op.send(pipeline, failed)
                for upload in running:
                    current = upload.op.describe()
                    sent += upload.write(pipeline)
                for upload in [u for u in running if u.finished]:
                    running.remove(upload)
                    done += 1
                    if progress is not None and upload.op.counted:
                        reported += 1
                        progress(reported, uploads)
                if failed:
                    raise OSError(failed[0])
                if pipeline.requests == requests and done == finished:  # nothing more to send until replies come
                    current = ""
                    pipeline.wait()
                    if failed:
                        raise OSError(failed[0])
            pipeline.drain()
            if failed:
                raise OSError(failed[0])
        except SSH_ERRORS as exc:
            self._abandon(pipeline)
            for upload in running:
                upload.discard()
            where = f" ({current})" if current and not failed else ""
            raise TransferError(f"SFTP on {self.endpoint.host} failed{where}: {_reason(exc)}") from exc
        except BaseException:
            self._abandon(pipeline)
            for upload in running:
                upload.discard()
            raise
        return sent

    def _abandon(self, pipeline: _Pipeline) -> None:
        """After a failure replies may still be due: start the next SFTP use on a fresh channel."""
        if pipeline.in_flight and self._sftp is not None:
            with suppress(*SSH_ERRORS):
                self._sftp.close()
            self._sftp = None

    def read_text(self, remote: str) -> str:
        with (
            ssh_errors(TransferError, f"cannot read {self.endpoint.host}:{remote}"),
            self.sftp.open(remote, "r") as handle,
        ):
            return bytes(handle.read()).decode()


# -- pipelined SFTP ---------------------------------------------------------
#
# paramiko's SFTPClient waits for each reply before sending the next request
# (only a single file's prefetch runs ahead). OpenSSH's sftp/scp keep many
# requests in flight; so does this, through paramiko's own request plumbing
# (`_async_request` sends one and names who gets the reply, `_read_response`
# reads one reply and hands it over).

READ_SIZE = 255 * 1024
"""Bytes per read or write request: OpenSSH's sftp-server takes messages up to 256 KiB."""
MAX_IN_FLIGHT = 2 << 20
"""Bytes requested but not yet answered, all files together (OpenSSH's sftp: 64 x 32 KiB). More does not
go faster on a fast link, and costs: paramiko's channel buffer copies its whole unread content on every read."""
MAX_REQUESTS = 512
FILES_AT_ONCE = 16
SFTP_WINDOW = 16 << 20
SFTP_MAX_PACKET = 256 << 10


def _reason(exc: BaseException) -> str:
    """paramiko says a cut connection several ways, depending on where the cut finds it ("Server
    connection dropped", "Socket is closed", an EOFError with no text): one wording for all of them."""
    text = str(exc)
    if not text or isinstance(exc, EOFError) or text == "Socket is closed":
        return f"the connection was lost ({text or type(exc).__name__})"
    return text


def _status(t: int, msg: paramiko.Message, what: str) -> None:
    """Raise OSError unless the reply is SSH_FX_OK."""
    if t != CMD_STATUS:
        raise OSError(f"{what}: unexpected SFTP reply {t}")
    code = msg.get_int()
    if code != SFTP_OK:
        raise OSError(f"{what}: {msg.get_text() or f'SFTP status {code}'}")


class _Pipeline:
    """Requests in flight on one SFTP channel; each reply goes to its callback.

    Requests are packed like paramiko's `_async_request` does, but gathered
    and sent together (one SSH packet carries many small ones) whenever we are
    about to wait for a reply or have 64 KiB to send.
    """

    def __init__(self, sftp: paramiko.SFTPClient) -> None:
        self.sftp = sftp
        self._replies: dict[int, Callable[[int, paramiko.Message], None]] = {}
        self._out = bytearray()
        self.bytes_in_flight = 0
        self.requests = 0

    @property
    def in_flight(self) -> int:
        return len(self._replies)

    def send(self, t: int, *args: object, reply: Callable[[int, paramiko.Message], None]) -> None:
        sftp = self.sftp
        with sftp._lock:
            num = sftp.request_number
            sftp.request_number += 1
            sftp._expecting[num] = self
        self._replies[num] = reply
        self.requests += 1
        msg = paramiko.Message()
        msg.add_int(num)
        for item in args:
            if isinstance(item, int64):
                msg.add_int64(item)
            elif isinstance(item, int):
                msg.add_int(item)
            elif isinstance(item, SFTPAttributes):
                item._pack(msg)
            else:
                msg.add_string(item)
        body = msg.asbytes()
        self._out += struct.pack(">IB", len(body) + 1, t)
        self._out += body
        if len(self._out) >= 1 << 16:
            self.flush()

    def flush(self) -> None:
        if self._out:
            self.sftp.sock.sendall(bytes(self._out))
            self._out.clear()

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:  # called by paramiko
        reply = self._replies.pop(num, None)
        if reply is not None:
            reply(t, msg)

    def wait(self) -> None:
        """Send what is gathered, then handle the next reply."""
        self.flush()
        self.sftp._read_response()

    def drain(self) -> None:
        while self._replies:
            self.wait()


@dataclass
class _Download:
    remote: str
    local: Path | None
    """None: only hash."""
    sha256: str
    digest: Any
    expected: Expected = field(default_factory=lambda: BUILD_REPORT)
    size: int | None = None
    handle: bytes | None = None
    requested: int = 0
    written: int = 0
    pending: int = 0
    eof: bool = False
    opened: bool = False
    out: BinaryIO | None = None
    chunks: dict[int, bytes] = field(default_factory=dict)
    again: list[tuple[int, int]] = field(default_factory=list)

    @property
    def partial(self) -> Path:
        assert self.local is not None
        return self.local.with_name(self.local.name + ".part")

    def start(self, pipeline: _Pipeline) -> None:
        if self.local is not None:
            self.out = self.partial.open("wb")
        pipeline.send(CMD_OPEN, self.remote.encode(), SFTP_FLAG_READ, SFTPAttributes(), reply=self._opened)
        pipeline.send(CMD_STAT, self.remote.encode(), reply=self._stat)
        self.pending = 2

    def _opened(self, t: int, msg: paramiko.Message) -> None:
        self.pending -= 1
        if t != CMD_HANDLE:
            _status(t, msg, f"cannot open {self.remote}")
        self.handle = msg.get_binary()

    def _stat(self, t: int, msg: paramiko.Message) -> None:
        self.pending -= 1
        if t != CMD_ATTRS:
            _status(t, msg, f"cannot stat {self.remote}")
        self.size = SFTPAttributes._from_msg(msg).st_size or 0

    def request(self, pipeline: _Pipeline) -> None:
        if self.handle is None or self.size is None or self.eof:
            return
        while pipeline.bytes_in_flight < MAX_IN_FLIGHT and pipeline.in_flight < MAX_REQUESTS:
            if self.again:
                offset, length = self.again.pop()
            elif self.requested < self.size:
                offset, length = self.requested, min(READ_SIZE, self.size - self.requested)
                self.requested += length
            else:
                return
            pipeline.send(
                CMD_READ,
                self.handle,
                int64(offset),
                length,
                reply=functools.partial(self._data, pipeline, offset, length),
            )
            pipeline.bytes_in_flight += length
            self.pending += 1

    def _data(self, pipeline: _Pipeline, offset: int, length: int, t: int, msg: paramiko.Message) -> None:
        self.pending -= 1
        pipeline.bytes_in_flight -= length
        if t == CMD_STATUS:
            code = msg.get_int()
            if code == SFTP_EOF:  # the file is shorter than it was: the sha256 check will say so
                self.eof = True
                return
            raise OSError(f"cannot read {self.remote}: {msg.get_text() or f'SFTP status {code}'}")
        if t != CMD_DATA:
            raise OSError(f"cannot read {self.remote}: unexpected SFTP reply {t}")
        data = msg.get_binary()
        if not data:
            self.eof = True
            return
        if len(data) < length:  # a short read: ask for the rest
            self.again.append((offset + len(data), length - len(data)))
        self.chunks[offset] = data
        while (chunk := self.chunks.pop(self.written, None)) is not None:
            self.digest.update(chunk)
            if self.out is not None:
                self.out.write(chunk)
            self.written += len(chunk)

    @property
    def finished(self) -> bool:
        if self.pending or self.handle is None or self.size is None:
            return False
        return self.eof or (not self.again and self.written >= self.requested >= self.size)

    def close(self, pipeline: _Pipeline, host: str) -> None:
        """Close the remote handle (reply not awaited), then keep the file only if its sha256 matches."""
        if self.handle is not None:
            pipeline.send(CMD_CLOSE, self.handle, reply=lambda t, msg: None)
            self.handle = None
        if self.out is None:
            return
        self.out.close()
        self.out = None
        actual = self.digest.hexdigest()
        if actual != self.sha256:
            self.partial.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"{Path(self.remote).name} from {host}: sha256 {actual} does not match {self.expected.source} "
                f"{self.sha256} ({self.written} bytes read); {self.expected.fix}"
            )
        assert self.local is not None
        self.partial.replace(self.local)

    def discard(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None
        if self.local is not None:
            self.partial.unlink(missing_ok=True)


class Operation:
    """One step of `SshSession.apply`."""

    def describe(self) -> str:
        raise NotImplementedError

    def send(self, pipeline: _Pipeline, failed: list[str]) -> None:
        raise NotImplementedError

    def _check(self, failed: list[str]) -> Callable[[int, paramiko.Message], None]:
        def reply(t: int, msg: paramiko.Message) -> None:
            try:
                _status(t, msg, self.describe())
            except OSError as exc:
                failed.append(str(exc))

        return reply


@dataclass(frozen=True)
class Mkdir(Operation):
    path: str

    def describe(self) -> str:
        return f"mkdir {self.path}"

    def send(self, pipeline: _Pipeline, failed: list[str]) -> None:
        pipeline.send(CMD_MKDIR, self.path.encode(), SFTPAttributes(), reply=self._check(failed))


@dataclass(frozen=True)
class Hardlink(Operation):
    """`path` becomes another name of `existing` (OpenSSH's hardlink@openssh.com)."""

    existing: str
    path: str

    def describe(self) -> str:
        return f"hard link {self.path} to {self.existing}"

    def send(self, pipeline: _Pipeline, failed: list[str]) -> None:
        pipeline.send(
            CMD_EXTENDED, "hardlink@openssh.com", self.existing.encode(), self.path.encode(), reply=self._check(failed)
        )


@dataclass(frozen=True)
class Symlink(Operation):
    target: str
    path: str

    def describe(self) -> str:
        return f"symlink {self.path} -> {self.target}"

    def send(self, pipeline: _Pipeline, failed: list[str]) -> None:
        # OpenSSH's server takes (target, link path): the order paramiko sends too
        pipeline.send(CMD_SYMLINK, self.target.encode(), self.path.encode(), reply=self._check(failed))


@dataclass(frozen=True)
class Upload(Operation):
    """`local` (or `data`) written to `remote`; `digest`, if given, is fed every byte sent."""

    local: Path | None
    remote: str
    digest: Any = None
    data: bytes | None = None
    counted: bool = True
    """Whether `apply`'s progress counts it."""

    def describe(self) -> str:
        return f"upload of {self.local.name if self.local else 'data'} to {self.remote}"


class _Upload:
    def __init__(self, op: Upload, pipeline: _Pipeline, failed: list[str]) -> None:
        self.op = op
        self.failed = failed
        self.handle: bytes | None = None
        self.source: BinaryIO = op.local.open("rb") if op.local is not None else io.BytesIO(op.data or b"")
        self.offset = 0
        self.pending = 1
        self.read_all = False
        self.closed = False
        flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC
        pipeline.send(CMD_OPEN, op.remote.encode(), flags, SFTPAttributes(), reply=self._opened)

    def _opened(self, t: int, msg: paramiko.Message) -> None:
        self.pending -= 1
        if t != CMD_HANDLE:
            _status(t, msg, f"cannot create {self.op.remote}")
        self.handle = msg.get_binary()

    @property
    def writable(self) -> bool:
        return self.handle is not None and not self.read_all

    def write(self, pipeline: _Pipeline) -> int:
        """Send what the window allows; once everything is acknowledged, close (and await the close)."""
        sent = 0
        while self.writable and pipeline.bytes_in_flight < MAX_IN_FLIGHT and pipeline.in_flight < MAX_REQUESTS:
            chunk = self.source.read(READ_SIZE)
            if not chunk:
                self.read_all = True
                break
            if self.op.digest is not None:
                self.op.digest.update(chunk)
            pipeline.send(
                CMD_WRITE,
                self.handle,
                int64(self.offset),
                chunk,
                reply=functools.partial(self._written, pipeline, len(chunk)),
            )
            pipeline.bytes_in_flight += len(chunk)
            self.offset += len(chunk)
            self.pending += 1
            sent += len(chunk)
        if self.read_all and not self.pending and not self.closed:
            self.closed = True
            self.pending += 1
            pipeline.send(CMD_CLOSE, self.handle, reply=self._closed)
        return sent

    def _written(self, pipeline: _Pipeline, length: int, t: int, msg: paramiko.Message) -> None:
        self.pending -= 1
        pipeline.bytes_in_flight -= length
        try:
            _status(t, msg, f"cannot write {self.op.remote}")
        except OSError as exc:
            self.failed.append(str(exc))

    def _closed(self, t: int, msg: paramiko.Message) -> None:
        self.pending -= 1
        self.source.close()
        try:
            _status(t, msg, f"cannot close {self.op.remote}")
        except OSError as exc:
            self.failed.append(str(exc))

    @property
    def finished(self) -> bool:
        return self.closed and not self.pending

    def discard(self) -> None:
        self.source.close()
