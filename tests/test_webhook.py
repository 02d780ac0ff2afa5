"""The receiver's rules (authentication, event kinds, tag validation) and its limits, through the app and a real uvicorn."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from dropship.manifest import load_manifest
from dropship.webhook import (
    MAX_BODY,
    MAX_DEPTH,
    Ignored,
    Rejected,
    Secrets,
    TagPush,
    check_tag,
    create_app,
    parse_event,
)

SECRETS = Secrets(gitlab_token="gl-secret", github_secret="gh-secret")
SHA = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


def gitlab_tag(tag: str, sha: str | None = SHA) -> bytes:
    return json.dumps(
        {
            "object_kind": "tag_push",
            "ref": f"refs/tags/{tag}",
            "checkout_sha": sha,
            "after": sha or "0" * 40,
            "project": {"path_with_namespace": "acme/hello"},
        }
    ).encode()


def github_push(ref: str, sha: str = SHA, deleted: bool = False) -> bytes:
    return json.dumps(
        {"ref": ref, "after": sha, "deleted": deleted, "repository": {"full_name": "acme/hello"}}
    ).encode()


def signed(body: bytes, secret: str = "gh-secret") -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_gitlab_tag_push_is_read_with_project_tag_and_commit() -> None:
    event = parse_event(
        {"x-gitlab-event": "Tag Push Hook", "x-gitlab-token": "gl-secret"}, gitlab_tag("v1.2.3"), SECRETS
    )
    assert event == TagPush("gitlab", "acme/hello", "v1.2.3", SHA)
    assert event.idempotency_key == f"dropship-release:acme/hello:v1.2.3:{SHA}"


@pytest.mark.parametrize("token", ["", "gl-secreT", "gl-secret-longer"])
def test_gitlab_wrong_token_is_401(token: str) -> None:
    with pytest.raises(Rejected) as caught:
        parse_event({"x-gitlab-event": "Tag Push Hook", "x-gitlab-token": token}, gitlab_tag("v1.2.3"), SECRETS)
    assert caught.value.status == 401


def test_gitlab_deleted_tag_and_branch_push_are_ignored() -> None:
    headers = {"x-gitlab-event": "Tag Push Hook", "x-gitlab-token": "gl-secret"}
    assert isinstance(parse_event(headers, gitlab_tag("v1.2.3", sha=None), SECRETS), Ignored)
    push = json.dumps({"object_kind": "push", "ref": "refs/heads/main"}).encode()
    assert parse_event({**headers, "x-gitlab-event": "Push Hook"}, push, SECRETS) == Ignored("GitLab push event")


def test_github_push_of_a_tag_is_checked_by_hmac() -> None:
    body = github_push("refs/tags/v1.2.3")
    headers = {"x-github-event": "push", "x-hub-signature-256": signed(body)}
    assert parse_event(headers, body, SECRETS) == TagPush("github", "acme/hello", "v1.2.3", SHA)
    with pytest.raises(Rejected, match="does not match") as caught:
        parse_event({**headers, "x-hub-signature-256": signed(body, "other")}, body, SECRETS)
    assert caught.value.status == 401
    tampered = body.replace(b"v1.2.3", b"v9.9.9")
    with pytest.raises(Rejected):
        parse_event(headers, tampered, SECRETS)


def test_github_branch_push_deleted_tag_and_create_events() -> None:
    for body in (github_push("refs/heads/main"), github_push("refs/tags/v1.2.3", deleted=True)):
        assert isinstance(
            parse_event({"x-github-event": "push", "x-hub-signature-256": signed(body)}, body, SECRETS), Ignored
        )
    create = json.dumps({"ref": "v1.2.3", "ref_type": "tag", "repository": {"full_name": "acme/hello"}}).encode()
    event = parse_event({"x-github-event": "create", "x-hub-signature-256": signed(create)}, create, SECRETS)
    assert event == TagPush("github", "acme/hello", "v1.2.3", "")
    branch = json.dumps({"ref": "dev", "ref_type": "branch", "repository": {"full_name": "acme/hello"}}).encode()
    assert isinstance(
        parse_event({"x-github-event": "create", "x-hub-signature-256": signed(branch)}, branch, SECRETS), Ignored
    )


def test_malformed_bodies_are_400_after_authentication() -> None:
    for body in (b"{not json", b"[1, 2]", json.dumps({"object_kind": "tag_push"}).encode()):
        with pytest.raises(Rejected) as caught:
            parse_event({"x-gitlab-token": "gl-secret"}, body, SECRETS)
        assert caught.value.status == 400
    with pytest.raises(Rejected) as caught:
        parse_event({"x-gitlab-token": "wrong"}, b"{not json", SECRETS)
    assert caught.value.status == 401, "nothing is read before the token is checked"


def test_a_forge_without_a_configured_secret_is_refused() -> None:
    body = github_push("refs/tags/v1.2.3")
    with pytest.raises(Rejected, match="no GitHub secret"):
        parse_event({"x-github-event": "push", "x-hub-signature-256": signed(body)}, body, Secrets(gitlab_token="x"))
    with pytest.raises(Rejected) as caught:
        parse_event({}, body, SECRETS)
    assert caught.value.status == 401


@pytest.mark.parametrize("tag", ["v1.2", "v1.2.3;rm -rf /", "main", "v1.2.3\n", "-v1.2.3"])
def test_tags_that_are_not_releases_are_400(tag: str) -> None:
    manifest = load_manifest(Path(__file__).resolve().parents[1] / "examples/hello/dropship.toml")
    with pytest.raises(Rejected) as caught:
        check_tag(manifest, tag)
    assert caught.value.status == 400


def test_release_tags_pass() -> None:
    manifest = load_manifest(Path(__file__).resolve().parents[1] / "examples/hello/dropship.toml")
    assert check_tag(manifest, "v1.2.3") == "stable"


# --- the app itself (Starlette, in process) and a real uvicorn (a child process) ---

MANIFEST_PATH = Path(__file__).resolve().parents[1] / "examples/hello/dropship.toml"
GITLAB = {"x-gitlab-event": "Tag Push Hook", "x-gitlab-token": "gl-secret"}


class Recorder:
    """The app's `start` for tests that are about the receiver, not Prefect: records what it was asked."""

    def __init__(self) -> None:
        self.pushes: list[TagPush] = []

    def __call__(self, push: TagPush) -> str:
        self.pushes.append(push)
        return f"run-{len(self.pushes)}"


def _client(start: Any = None) -> tuple[TestClient, Recorder]:
    recorder = Recorder()
    app = create_app(load_manifest(MANIFEST_PATH), SECRETS, start or recorder)
    return TestClient(app, raise_server_exceptions=False), recorder


@pytest.mark.parametrize("tag", ["v١.٢.٣", "v１.２.３", "v01.2.3", "v1.2.3-rc1.", "v1.2.3-rc1..2", "v1.02.3-rc1"])
def test_tags_the_battery_found_are_400_through_the_app(tag: str) -> None:
    client, recorder = _client()
    answer = client.post("/hooks/release", content=gitlab_tag(tag), headers=GITLAB)
    assert answer.status_code == 400, answer.text
    assert "neither a stable release nor an extra release" in answer.json()["error"]
    assert recorder.pushes == []
    good = client.post("/hooks/release", content=gitlab_tag("v1.2.3-rc1"), headers=GITLAB)
    assert good.status_code == 202 and good.json()["class"] == "extra"


def test_size_is_refused_by_content_length_and_while_streaming() -> None:
    client, recorder = _client()
    declared = client.post("/hooks/release", content=b"{}", headers={**GITLAB, "content-length": str(MAX_BODY + 1)})
    assert declared.status_code == 413 and declared.headers["connection"] == "close"
    huge = client.post("/hooks/release", content=b"{}", headers={**GITLAB, "content-length": "9" * 5000})
    assert huge.status_code == 413

    sent = 0

    def stream() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(4 * MAX_BODY // 65536):
            sent += 65536
            yield b" " * 65536

    streamed = client.post("/hooks/release", content=stream(), headers=GITLAB)
    assert streamed.status_code == 413
    assert "larger than" in streamed.json()["error"]
    assert recorder.pushes == []


def test_unauthenticated_deliveries_are_refused_before_the_body_is_read() -> None:
    client, _ = _client()
    read = 0

    def stream() -> Iterator[bytes]:
        nonlocal read
        read += 1
        yield b"{}"

    for headers in ({}, {**GITLAB, "x-gitlab-token": "wrong"}):
        answer = client.post("/hooks/release", content=stream(), headers=headers)
        assert answer.status_code == 401


def test_deep_json_is_400_not_500() -> None:
    client, _ = _client()
    for depth in (MAX_DEPTH + 1, 100_000):
        answer = client.post("/hooks/release", content=b"[" * depth + b"]" * depth, headers=GITLAB)
        assert answer.status_code == 400, (depth, answer.text)
        assert "nested deeper" in answer.json()["error"]
    nested = {"object_kind": "tag_push", "x": json.loads("[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5))}
    assert client.post("/hooks/release", content=json.dumps(nested).encode(), headers=GITLAB).status_code == 400


@pytest.mark.parametrize(
    "payload",
    [
        {"project": {"path_with_namespace": ["x"]}},
        {"project": {"path_with_namespace": "a b"}},
        {"checkout_sha": "zz"},
        {"checkout_sha": 7},
        {"ref": ["refs/tags/v1.2.3"]},
    ],
)
def test_event_fields_of_the_wrong_shape_are_400(payload: dict[str, Any]) -> None:
    body = json.loads(gitlab_tag("v1.2.3"))
    body.update(payload)
    client, recorder = _client()
    answer = client.post("/hooks/release", content=json.dumps(body).encode(), headers=GITLAB)
    assert answer.status_code == 400, answer.text
    assert recorder.pushes == []


def test_prefect_down_is_503_with_a_clear_body_and_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.runs import release_starter
    from dropship.ports import free_port

    client, _ = _client(release_starter("release/release-tag"))
    caplog.set_level(logging.INFO)
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        answer = client.post("/hooks/release", content=gitlab_tag("v1.2.3"), headers=GITLAB)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "30"
    error = answer.json()["error"]
    assert error.startswith("release of acme/hello v1.2.3 not started: the Prefect API kept failing for 6 s while ")
    assert "\n" not in error
    records = [r for r in caplog.records if r.name == "dropship.webhook" and r.levelno >= logging.WARNING]
    assert len(records) == 1 and records[0].exc_info is None
    assert "Traceback" not in caplog.text


SERVER = """
import sys
from dropship.manifest import load_manifest
from dropship.webhook import Secrets, create_app, serve
app = create_app(load_manifest(sys.argv[1]), Secrets(gitlab_token="gl-secret", github_secret="gh-secret"),
                 lambda push: "run-1", body_seconds=2)
serve(app, "127.0.0.1", int(sys.argv[2]), header_seconds=2, max_connections=int(sys.argv[3]))
"""


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A real uvicorn serving the receiver in a child process: (port, pid)."""
    from dropship.ports import free_port

    port = free_port()
    log = (tmp_path / "receiver.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(MANIFEST_PATH), str(port), "64"], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, (tmp_path / "receiver.log").read_text()
                time.sleep(0.1)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _closed(sock: socket.socket, wait: float = 0.2) -> bool:
    """Whether the server closes `sock` within `wait` seconds; what it still sends
    first (the rest of a response that came in several segments) is read and dropped."""
    deadline = time.monotonic() + wait
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if sock.recv(4096) == b"":
                return True
        return False
    except TimeoutError:
        return False
    except OSError:
        return True


def test_a_200_mb_body_is_refused_while_streaming_without_growing_the_server(receiver: tuple[int, int]) -> None:
    port, pid = receiver
    before = _rss_kib(pid)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"POST /hooks/release HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n"
        b"X-Hub-Signature-256: sha256=00\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"a" * (1 << 20)
    sent = 0
    try:
        while sent < 200 << 20:
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sent += len(chunk)
    except OSError:
        pass
    try:
        answer = sock.recv(4096)
    except OSError:
        answer = b""
    sock.close()
    after = _rss_kib(pid)
    print(f"server RSS {before} KiB -> {after} KiB; {sent >> 20} MiB sent before the server closed")
    assert sent < 64 << 20, "the server stopped reading soon after the limit"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 413")
    assert after - before < 32 * 1024, f"RSS grew {before} -> {after} KiB"


def test_a_slow_body_gets_408_and_its_connection_closed(receiver: tuple[int, int]) -> None:
    port, _ = receiver
    with socket.create_connection(("127.0.0.1", port)) as slow:
        slow.sendall(
            b"POST /hooks/release HTTP/1.1\r\nHost: x\r\nX-Gitlab-Token: gl-secret\r\nContent-Length: 100\r\n\r\n{"
        )
        started = time.monotonic()
        slow.settimeout(10)
        assert slow.recv(4096).startswith(b"HTTP/1.1 408")
        assert 1.5 < time.monotonic() - started < 8
        assert _closed(slow, 5)


def test_stalled_connections_are_closed_and_the_cap_holds(receiver: tuple[int, int]) -> None:
    port, _ = receiver
    stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    for index, sock in enumerate(stalled):
        if index % 2:
            sock.sendall(b"POST /hooks/release HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    flood = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]
    time.sleep(0.5)
    assert sum(_closed(sock) for sock in flood) >= 80 - 64, "connections beyond the cap are closed at once"
    for sock in flood:
        sock.close()
    time.sleep(3)
    assert all(_closed(sock) for sock in stalled), "connections without complete headers are closed"
    with socket.create_connection(("127.0.0.1", port)) as fresh:
        fresh.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        fresh.settimeout(5)
        assert fresh.recv(4096).startswith(b"HTTP/1.1 200")
    for sock in stalled:
        sock.close()
