"""SSH to build machines and the repository server, with pinned host keys.

The orchestrator generates each machine's host key itself and hands it to the
machine in its user_data, so the key is known before the first connection:
nothing is trusted on first use, and a machine presenting any other key is
refused (`HostKeyMismatch`). Every file moved is checked by sha256.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shlex
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import paramiko

from dropship.errors import ChecksumMismatch, HostKeyMismatch, MachineError, TransferError
from dropship.process import run

CHUNK = 1 << 20


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
        self.stdin.close()
        self.channel.close()


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
                    ep.host, port=ep.port, username=ep.user, pkey=self._key,
                    allow_agent=False, look_for_keys=False, timeout=10, banner_timeout=10, auth_timeout=10,
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
            except (OSError, paramiko.SSHException, EOFError) as exc:
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
            self._sftp = self._client.open_sftp()
        return self._sftp

    def run(self, argv: Sequence[str], *, timeout: float = 600.0, stdin: bytes | None = None) -> str:
        """Run a command remotely; each argument is quoted, never interpolated.

        Lists of paths travel on `stdin` (NUL-separated, for `xargs -0`), so no
        file name is ever part of a command line the remote shell parses.
        """
        if self._client is None:
            raise MachineError("SSH session is not connected")
        command = shlex.join(argv)
        try:
            channel_in, stdout, stderr = self._client.exec_command(command, timeout=timeout)
            if stdin is not None:
                channel_in.write(stdin)
                channel_in.flush()
            channel_in.channel.shutdown_write()
            out: str = stdout.read().decode(errors="replace")
            err: str = stderr.read().decode(errors="replace")
            status = stdout.channel.recv_exit_status()
        except (OSError, paramiko.SSHException, socket.timeout) as exc:
            raise MachineError(f"remote command {command!r} failed: {exc}") from exc
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
        try:
            stdin, stdout, _ = self._client.exec_command(command, timeout=timeout)
            line = stdout.readline().strip()
            while on_line is not None and line and line != ready:
                on_line(line)
                line = stdout.readline().strip()
        except (OSError, paramiko.SSHException, socket.timeout) as exc:
            raise MachineError(f"remote command {command!r} failed: {exc}") from exc
        if line != ready:
            status = stdout.channel.recv_exit_status() if stdout.channel.exit_status_ready() else None
            raise MachineError(f"remote command {command!r} did not get ready (exit {status}, said {line!r})")
        return Held(stdin, stdout.channel)

    def makedirs(self, path: str) -> None:
        current = ""
        for part in [p for p in path.split("/") if p]:
            current += "/" + part
            try:
                self.sftp.stat(current)
            except FileNotFoundError:
                self.sftp.mkdir(current)

    def put(self, local: Path, remote: str) -> str:
        """Upload and verify by reading the remote file's sha256 back; return it."""
        expected = hashlib.sha256()
        try:
            self.makedirs(str(Path(remote).parent))
            with local.open("rb") as src, self.sftp.open(remote + ".part", "wb") as dst:
                dst.set_pipelined(True)
                while chunk := src.read(CHUNK):
                    expected.update(chunk)
                    dst.write(chunk)
            self.sftp.posix_rename(remote + ".part", remote)
        except (OSError, paramiko.SSHException) as exc:
            raise TransferError(f"upload of {local.name} to {self.endpoint.host}:{remote} failed: {exc}") from exc
        actual = self.remote_sha256(remote)
        if actual != expected.hexdigest():
            raise ChecksumMismatch(f"{remote}: sha256 after upload is {actual}, expected {expected.hexdigest()}")
        return actual

    def remote_sha256(self, remote: str) -> str:
        """sha256 of a remote file, read over SFTP (no remote tool assumed)."""
        digest = hashlib.sha256()
        try:
            with self.sftp.open(remote, "rb") as handle:
                handle.prefetch()
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
        except (OSError, paramiko.SSHException) as exc:
            raise TransferError(f"cannot read {remote}: {exc}") from exc
        return digest.hexdigest()

    def get(self, remote: str, local: Path, *, sha256: str) -> int:
        """Download to `local` if and only if its sha256 is `sha256`; return the size."""
        digest = hashlib.sha256()
        size = 0
        partial = local.with_name(local.name + ".part")
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.sftp.open(remote, "rb") as src, partial.open("wb") as dst:
                src.prefetch()
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
        except (OSError, paramiko.SSHException) as exc:
            partial.unlink(missing_ok=True)
            raise TransferError(f"download of {self.endpoint.host}:{remote} failed: {exc}") from exc
        if digest.hexdigest() != sha256:
            partial.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"{Path(remote).name}: sha256 {digest.hexdigest()} does not match the build report's {sha256}"
            )
        partial.replace(local)
        return size

    def read_text(self, remote: str) -> str:
        try:
            with self.sftp.open(remote, "r") as handle:
                return bytes(handle.read()).decode()
        except (OSError, paramiko.SSHException) as exc:
            raise TransferError(f"cannot read {self.endpoint.host}:{remote}: {exc}") from exc
