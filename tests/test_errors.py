"""Every library error dropship's code can meet comes out as a `DropshipError`, at one converter per
library; and no error message carries a URL's password."""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

import paramiko
import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from paramiko.sftp import SFTPError

from dropship.errors import (
    CommandError,
    ConfigError,
    DropshipError,
    MachineError,
    NotFound,
    PublishError,
    SigningKeyError,
    TransferError,
)
from dropship.machines.digitalocean import DigitalOceanProvider, DigitalOceanSettings
from dropship.process import run
from dropship.redaction import redact, redact_logs
from dropship.signing import Signer
from dropship.ssh import SSH_ERRORS, Endpoint, SshSession, generate_keypair, ssh_errors

# -- paramiko ----------------------------------------------------------------

PARAMIKO_RAISES = [
    OSError("Connection reset by peer"),
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError(),
    TimeoutError("timed out"),
    EOFError(),
    paramiko.SSHException("Error reading SSH protocol banner"),
    paramiko.ChannelException(2, "Connect failed"),
    paramiko.AuthenticationException("Authentication failed."),
    paramiko.ssh_exception.NoValidConnectionsError({("127.0.0.1", 22): OSError("refused")}),
    SFTPError("Garbage packet received"),
    FileNotFoundError(2, "No such file"),
]


@pytest.mark.parametrize("exc", PARAMIKO_RAISES, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("error", [MachineError, TransferError, PublishError])
def test_every_paramiko_error_becomes_the_error_asked_for(exc: BaseException, error: type[DropshipError]) -> None:
    assert isinstance(exc, SSH_ERRORS)
    with pytest.raises(error) as info:
        with ssh_errors(error, "remote command 'true' failed"):
            raise exc
    assert str(info.value).startswith("remote command 'true' failed: ") and "\n" not in str(info.value)
    assert info.value.__cause__ is exc  # the original stays attached


def test_a_real_connection_nobody_answers_is_a_machine_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nobody listens there
    pair = generate_keypair("test")
    session = SshSession(
        Endpoint("127.0.0.1", port, "nobody", pair.public_line), pair.private_openssh, connect_timeout=0.5
    )
    with pytest.raises(MachineError, match=f"could not reach 127.0.0.1:{port} over SSH"):
        session.connect()


def test_a_private_key_paramiko_cannot_read_is_a_machine_error() -> None:
    pair = generate_keypair("test")
    with pytest.raises(MachineError, match="not an unencrypted"):
        SshSession(Endpoint("127.0.0.1", 22, "x", pair.public_line), "-----BEGIN NONSENSE-----")


# -- pydo (azure-core under it) ----------------------------------------------


def _http_error(status: int) -> HttpResponseError:
    exc = HttpResponseError(message=f"answer {status}")
    exc.status_code = status
    return exc


PYDO_RAISES: list[tuple[BaseException, type[DropshipError]]] = [
    (_http_error(401), ConfigError),
    (_http_error(404), NotFound),
    (_http_error(422), ConfigError),
    (_http_error(429), MachineError),
    (_http_error(500), MachineError),
    (_http_error(503), MachineError),
    (_http_error(418), MachineError),
    (ServiceRequestError("connection refused"), MachineError),
    (ServiceResponseError("connection dropped"), MachineError),
]


@pytest.mark.parametrize(("exc", "expected"), PYDO_RAISES, ids=lambda v: getattr(v, "status_code", None) or "")
def test_every_pydo_error_becomes_a_dropship_error(exc: BaseException, expected: type[DropshipError]) -> None:
    provider = DigitalOceanProvider(
        DigitalOceanSettings(token="dop_v1_x", endpoint="http://127.0.0.1:9", max_attempts=2), sleep=lambda _: None
    )

    def operation(**_: Any) -> Any:
        raise exc

    with pytest.raises(expected) as info:
        provider._call("list droplets", operation)
    assert "\n" not in str(info.value)


# -- gnupg ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["not a key", "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\ngarbage\n-----END PGP PRIVATE KEY BLOCK-----\n"],
    ids=["not-armored", "garbage"],
)
def test_keys_gnupg_refuses_are_signing_key_errors(key: str) -> None:
    with pytest.raises(SigningKeyError), Signer([key]):
        pass


# -- subprocess ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "timeout", "code"),
    [
        (["/nonexistent/tool"], None, 127),
        ([sys.executable, "-c", "import time; time.sleep(5)"], 0.2, -1),
        ([sys.executable, "-c", "raise SystemExit(3)"], None, 3),
    ],
    ids=["missing", "timeout", "exit-3"],
)
def test_every_subprocess_failure_is_a_command_error(argv: list[str], timeout: float | None, code: int) -> None:
    with pytest.raises(CommandError) as info:
        run(argv, timeout=timeout)
    assert info.value.returncode == code


# -- credentials in URLs -------------------------------------------------------------


def test_redact_masks_only_the_password() -> None:
    assert (
        redact("git clone https://ci:s3cr3t@git.example.org/p.git") == "git clone https://ci:***@git.example.org/p.git"
    )
    assert redact("postgresql+asyncpg://u:pw@127.0.0.1:5432/db") == "postgresql+asyncpg://u:***@127.0.0.1:5432/db"
    assert redact("https://token@host/x and https://host/y") == "https://token@host/x and https://host/y"


def test_a_failed_command_never_prints_the_password_of_a_url() -> None:
    url = "https://builder:hunter2@127.0.0.1:9/project.git"
    with pytest.raises(CommandError) as info:
        run([sys.executable, "-c", "import sys; print('fatal: cannot reach', sys.argv[1]); sys.exit(128)", url])
    text = str(info.value)
    assert "hunter2" not in text
    assert "https://builder:***@127.0.0.1:9/project.git" in text  # argv and output both still say which URL


def test_every_dropship_error_redacts() -> None:
    assert "hunter2" not in str(PublishError("cannot reach sftp://u:hunter2@repo.example.org/srv"))
    assert "hunter2" not in str(CommandError(["twine", "upload", "--repository-url", "https://u:hunter2@h/"], 1))


def test_log_lines_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    redact_logs()
    redact_logs()  # idempotent
    with caplog.at_level(logging.INFO):
        logging.getLogger("dropship.test").info("fetching %s", "https://u:hunter2@host/archive.tar")
    assert caplog.messages == ["fetching https://u:***@host/archive.tar"]


# -- docker (a build container's calls: dropship.containers.docker_errors) -------------------------


def _docker_raises() -> list[BaseException]:
    import docker.errors
    import requests

    response = requests.Response()
    response.status_code = 500
    return [
        docker.errors.APIError("500 Server Error", response=response, explanation="pull access denied\nfor x"),
        docker.errors.ImageNotFound("no such image"),
        docker.errors.NotFound("no such container"),
        docker.errors.DockerException("Error while fetching server API version"),
        requests.exceptions.ConnectionError("socket gone"),
        ConnectionRefusedError(111, "refused"),
    ]


@pytest.mark.parametrize("exc", _docker_raises(), ids=lambda e: type(e).__name__)
def test_every_docker_error_of_a_build_container_is_a_build_failure(exc: BaseException) -> None:
    from dropship.containers import docker_errors
    from dropship.errors import BuildFailed

    with pytest.raises(BuildFailed) as info, docker_errors("amd64-deb", "pulling the build image"):
        raise exc
    assert str(info.value).startswith("target amd64-deb: pulling the build image: ")
    assert "\n" not in str(info.value) and info.value.__cause__ is exc
