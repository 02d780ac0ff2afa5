"""Every library error dropship's code can meet comes out as a `DropshipError`, at one converter per
library; and no error message carries a URL's password."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from pathlib import Path
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
    RepositoryError,
    SigningKeyError,
    StoreError,
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
    (ServiceRequestError("connection refused"), ConfigError),  # nothing answers: the endpoint is wrong
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


def _failed_fetch(url: str) -> None:
    """A real chain: a library error (CalledProcessError, its argv holding `url`) under a built-in one."""
    try:
        subprocess.run([sys.executable, "-c", "import sys; sys.exit(3)", url], check=True)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"fetching {url} failed") from exc


def test_logged_tracebacks_are_redacted_with_their_chain(tmp_path: Path) -> None:
    from prefect.logging.formatters import JsonFormatter, PrefectFormatter

    redact_logs()
    url = "https://user:secret@127.0.0.1:9/archive.tar"
    outputs = {
        "file": logging.Formatter("%(asctime)s %(levelname)-7s %(name)s - %(message)s"),  # the run's log file
        "prefect": PrefectFormatter("%(levelname)s %(name)s - %(message)s"),  # Prefect's console and API handlers
        "json": JsonFormatter("default", "", "%"),
    }
    handlers = {}
    logger = logging.getLogger("dropship.test.traceback")
    for name, formatter in outputs.items():
        handlers[name] = logging.FileHandler(tmp_path / f"{name}.log")
        handlers[name].setFormatter(formatter)
        logger.addHandler(handlers[name])
    try:
        try:
            _failed_fetch(url)
        except RuntimeError:
            logger.exception("the download failed")
    finally:
        for handler in handlers.values():
            logger.removeHandler(handler)
            handler.close()
    for name in outputs:
        text = (tmp_path / f"{name}.log").read_text()
        assert "secret" not in text, name
        assert "CalledProcessError" in text and "direct cause" in text and "RuntimeError" in text, name
        assert "https://user:***@127.0.0.1:9/archive.tar" in text, name


def test_a_log_without_credentials_keeps_its_exception() -> None:
    redact_logs()
    record = logging.getLogger("dropship.test").makeRecord(
        "dropship.test", logging.ERROR, __file__, 1, "failed", None, (ValueError, ValueError("no url"), None)
    )
    assert record.exc_info is not None and record.exc_text is None  # handlers format it as before


def test_an_uncaught_traceback_is_redacted() -> None:
    code = (
        "from dropship.redaction import redact_logs\n"
        "redact_logs()\n"
        "try:\n"
        "    raise OSError('https://user:secret@127.0.0.1:9/x unreachable')\n"
        "except OSError as exc:\n"
        "    raise RuntimeError('fetch failed') from exc\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "secret" not in done.stderr
    assert "https://user:***@127.0.0.1:9/x unreachable" in done.stderr and "RuntimeError: fetch failed" in done.stderr


# -- built-in errors dropship itself used to raise --------------------------------------


def test_the_artifact_store_refuses_a_key_that_is_not_a_content_hash(tmp_path: Path) -> None:
    from dropship.cache import LocalArtifactStore

    store = LocalArtifactStore(tmp_path / "store")
    with pytest.raises(StoreError, match="not a content hash") as info:
        store.put("../../etc", "t", "1.0", [], ())
    assert "\n" not in str(info.value)


def test_an_unusable_stored_build_is_not_stored_rather_than_a_key_error(tmp_path: Path) -> None:
    from dropship.cache import NOT_STORED, LocalArtifactStore

    store = LocalArtifactStore(tmp_path / "store")
    digest = "a" * 64
    (tmp_path / "store" / "objects" / digest).mkdir(parents=True)
    for broken in ('{"target": "t"}', "[1, 2]", '{"files": [{"nonsense": 1}]}'):
        (tmp_path / "store" / "objects" / digest / "build.json").write_text(broken)
        lookup = store.get(digest, tmp_path / "out")
        assert lookup.build is None and lookup.problem == NOT_STORED
    (tmp_path / "store" / "targets").mkdir()
    (tmp_path / "store" / "targets" / "t.json").write_text('{"digest": ["not", "a", "hash"]}')
    assert store.last("t") is None


@pytest.mark.parametrize("keys", [("ssh-ed25519 AAAA\nssh-ed25519 BBBB", "x"), ("x", "a\nb")])
def test_user_data_refuses_a_multiline_public_key_as_a_machine_error(keys: tuple[str, str]) -> None:
    from dropship.integration import job_user_data
    from dropship.machines.userdata import WorkerSpec, render, render_bootstrap

    worker = WorkerSpec("http://127.0.0.1:4200/api", "p", "q", ["prefect"], {})
    host, authorized = keys
    calls = [
        lambda: render(
            host_private_key="k", host_public_key=host, authorized_key=authorized, work_dir="/w", worker=worker
        ),
        lambda: job_user_data(host_private_key="k", host_public_key=host, authorized_key=authorized, work_dir="/w"),
    ]
    if "\n" in host:
        calls.append(lambda: render_bootstrap(host_private_key="k", host_public_key=host))
    for call in calls:
        with pytest.raises(MachineError, match="single lines"):
            call()


def test_user_data_refuses_content_holding_its_delimiter() -> None:
    from dropship.integration import job_user_data
    from dropship.machines.userdata import DELIMITER

    with pytest.raises(MachineError, match=DELIMITER) as info:
        job_user_data(
            host_private_key=f"x\n{DELIMITER}\nrm -rf /", host_public_key="p", authorized_key="a", work_dir="/w"
        )
    assert "\n" not in str(info.value)


def test_a_pool_file_that_cannot_be_written_is_a_repository_error(tmp_path: Path) -> None:
    from dropship.repos.files import link_or_copy

    source = tmp_path / "hello_1.0_amd64.deb"
    source.write_bytes(b"deb")
    (tmp_path / "pool").write_text("a file where the pool folder should be")
    with pytest.raises(RepositoryError, match="could not link or copy hello_1.0_amd64.deb") as info:
        link_or_copy(source, tmp_path / "pool" / "main" / source.name)
    assert isinstance(info.value.__cause__, OSError)


def test_a_deb_whose_control_data_is_not_deb822_is_a_repository_error() -> None:
    from dropship.repos.apt import parse_stanza

    with pytest.raises(RepositoryError, match="x.deb is not a readable .deb: .* is not a field"):
        parse_stanza("Package: x\nno colon here\n", "x.deb is not a readable .deb")
    with pytest.raises(RepositoryError, match="continuation line before any field"):
        parse_stanza(" leading\n", "x.deb is not a readable .deb")


def test_a_signer_outside_its_block_is_a_repository_error(signing_key: str) -> None:
    signer = Signer([signing_key])
    with pytest.raises(RepositoryError, match="outside its `with` block"):
        _ = signer.gnupghome
    with signer:
        assert signer.gnupghome.is_dir()
    with pytest.raises(RepositoryError, match="outside its `with` block"):
        _ = signer.gnupghome


@pytest.mark.parametrize("fault", ["explode", "rate-limit:many"])
def test_a_bad_emulator_fault_or_backend_is_a_config_error(fault: str, tmp_path: Path) -> None:
    from dropship.emulator.state import Emulator, Faults

    with pytest.raises(ConfigError, match=fault):
        Faults().apply(fault)
    with pytest.raises(ConfigError, match="'vms'"):
        Emulator(tmp_path / "emulator", token="t", machines="vms")


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


def test_a_refused_connection_wrapped_by_the_docker_client_says_the_dockerd_is_not_answering() -> None:
    """A new Docker client asks the daemon's version first and wraps a refused connection in a
    DockerException: it reads as the same dead dockerd as a refused call does."""
    import docker.errors
    import requests

    from dropship.containers import docker_errors
    from dropship.errors import BuildFailed

    refused = requests.exceptions.ConnectionError("('Connection aborted.', ConnectionRefusedError(111))")
    for raised in (refused, ConnectionRefusedError(111, "refused")):
        with pytest.raises(BuildFailed) as info, docker_errors("t", "waiting for the build container"):
            try:
                raise raised
            except (requests.RequestException, OSError) as exc:
                raise docker.errors.DockerException(f"Error while fetching server API version: {exc}") from exc
        assert str(info.value) == (
            f"target t: waiting for the build container: the build's dockerd is not answering ({type(raised).__name__})"
        )


def test_the_daemons_own_refusal_keeps_its_explanation() -> None:
    """An APIError is raised from an HTTPError (a RequestException): it is the daemon answering, so
    the build failure carries its explanation, not "the build's dockerd is not answering"."""
    import docker.errors
    import requests

    from dropship.containers import docker_errors
    from dropship.errors import BuildFailed

    response = requests.Response()
    response.status_code = 401
    response._content = b'{"message": "unauthorized: authentication required"}'
    response.url = "http+docker://localhost/v1.47/images/create"
    with pytest.raises(BuildFailed) as info, docker_errors("t", "pulling the build image"):
        docker.errors.create_api_error_from_http_exception(requests.HTTPError("401", response=response))
    assert isinstance(info.value.__cause__, docker.errors.APIError)
    assert isinstance(info.value.__cause__.__cause__, requests.HTTPError)
    assert str(info.value) == "target t: pulling the build image: unauthorized: authentication required"
