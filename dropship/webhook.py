"""The forge webhook receiver: tag pushes from GitLab and GitHub become release runs.

Open-source Prefect has no webhooks, so dropship serves its own small ASGI
app (Starlette, which Prefect already brings). It authenticates every
delivery before reading it: GitLab's `X-Gitlab-Token` is compared in
constant time, GitHub's `X-Hub-Signature-256` is an HMAC-SHA256 of the raw
body. Then it keeps only tag creations (branch pushes and deleted tags are
acknowledged and ignored), classifies the tag with the project's manifest
(so `v1.2` or `v1.2.3;rm -rf /` never reaches Prefect), and starts the
release through `start`, with an idempotency key made of project, tag and
commit: a delivery the forge retries starts one release, not two.

    401  missing or wrong token / signature
    400  body that isn't a JSON event (or nested deeper than MAX_DEPTH), or a
         tag that is not a release tag
    408  the body did not arrive within BODY_SECONDS
    413  body larger than MAX_BODY (by Content-Length, or counted while reading)
    200  authenticated but not a release (branch push, deleted tag, ping, other event)
    202  release started (or already started by the same delivery): {"flow_run_id": ...}
    503  the release could not be started (Prefect unreachable or failing):
         {"error": ...}, one log line, `Retry-After`; the forge redelivers

Hostile clients are bounded before anything is read: a GitLab token (which
needs no body) is checked first, a delivery naming no forge is refused, the
body is counted while it streams in (a 200 MB body costs no more memory
than a 5 MB one) under a read deadline, and `serve` runs uvicorn with a
deadline for request headers, a keep-alive timeout and a cap on open
connections, so stalled connections are closed, not kept.

GitHub sends both a `create` and a `push` event for one tag push; `create`
carries no commit. Subscribe the webhook to `push` only (recommended) or to
`create` only: a `create` is keyed on project and tag alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from dropship.errors import ConfigError, DropshipError
from dropship.errors import WebhookRejected as Rejected
from dropship.manifest import Manifest
from dropship.tags import ReleaseClass, classify

ZERO_SHA = "0" * 40
logger = logging.getLogger("dropship.webhook")

MAX_BODY = 5 * 1024 * 1024
"""Forge events are a few KiB; GitHub caps deliveries at 25 MB, GitLab's tag events are small."""
MAX_DEPTH = 32
"""JSON nesting accepted; forge events nest about 5 levels."""
BODY_SECONDS = 20.0
"""Time a client has to send the whole body once its headers arrived."""
HEADER_SECONDS = 10.0
"""Time a connection has to send complete request headers."""
KEEP_ALIVE_SECONDS = 5
MAX_CONNECTIONS = 64
"""Open connections at once; more are closed as they arrive."""
START_SECONDS = 60.0
"""Time the Prefect API has to create the run before the delivery gets 503."""
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}", re.ASCII)
_PROJECT = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+){0,9}", re.ASCII)


@dataclass(frozen=True)
class TagPush:
    forge: str
    project: str
    tag: str
    commit: str
    """Empty when the event doesn't say (GitHub `create`)."""

    @property
    def idempotency_key(self) -> str:
        return f"dropship-release:{self.project}:{self.tag}:{self.commit or '-'}"


@dataclass(frozen=True)
class Ignored:
    reason: str


@dataclass(frozen=True)
class Secrets:
    gitlab_token: str | None = None
    github_secret: str | None = None


def check_gitlab(headers: dict[str, str], secrets: Secrets) -> None:
    if not secrets.gitlab_token:
        raise Rejected(401, "GitLab deliveries are not accepted: no GitLab token is configured")
    given = headers.get("x-gitlab-token", "")
    if not hmac.compare_digest(given.encode(), secrets.gitlab_token.encode()):
        raise Rejected(401, "X-Gitlab-Token does not match")


def check_github(headers: dict[str, str], body: bytes, secrets: Secrets) -> None:
    if not secrets.github_secret:
        raise Rejected(401, "GitHub deliveries are not accepted: no GitHub secret is configured")
    given = headers.get("x-hub-signature-256", "")
    expected = "sha256=" + hmac.new(secrets.github_secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Rejected(401, "X-Hub-Signature-256 does not match the body")


def _json(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise Rejected(400, f"body is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise Rejected(400, f"body is JSON nested deeper than {MAX_DEPTH} levels") from exc
    if _depth(payload) > MAX_DEPTH:
        raise Rejected(400, f"body is JSON nested deeper than {MAX_DEPTH} levels")
    if not isinstance(payload, dict):
        raise Rejected(400, "body is not a JSON object")
    return payload


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _short(value: Any) -> str:
    shown = value if isinstance(value, str) else repr(value)
    shown = shown.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _project(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 200 or not _PROJECT.fullmatch(value):
        raise Rejected(400, f"event's repository name {_short(value)} is not a repository path")
    return value


def _commit(value: Any) -> str:
    if not isinstance(value, str) or not _COMMIT.fullmatch(value):
        raise Rejected(400, f"event's commit {_short(value)} is not a commit id (40 or 64 hex digits)")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise Rejected(400, f"event's {what} is not a string")
    return value


def _field(payload: dict[str, Any], *path: str) -> Any:
    value: Any = payload
    for key in path:
        if not isinstance(value, dict) or key not in value:
            raise Rejected(400, f"event has no {'.'.join(path)}")
        value = value[key]
    return value


def parse_event(headers: dict[str, str], body: bytes, secrets: Secrets) -> TagPush | Ignored:
    """Authenticate and read one delivery (header names in lower case)."""
    if "x-gitlab-event" in headers or "x-gitlab-token" in headers:
        check_gitlab(headers, secrets)
        payload = _json(body)
        if payload.get("object_kind") != "tag_push":
            return Ignored(f"GitLab {_short(payload.get('object_kind') or headers.get('x-gitlab-event'))} event")
        ref = _text(_field(payload, "ref"), "ref")
        commit = payload.get("checkout_sha") or ""
        if not commit or payload.get("after") == ZERO_SHA:
            return Ignored(f"tag {_short(ref.removeprefix('refs/tags/'))} was deleted")
        project = _project(_field(payload, "project", "path_with_namespace"))
        return TagPush("gitlab", project, _tag_of(ref), _commit(commit))
    if "x-github-event" in headers or "x-hub-signature-256" in headers:
        check_github(headers, body, secrets)
        event = headers.get("x-github-event", "")
        payload = _json(body)
        project = _project(_field(payload, "repository", "full_name")) if event in ("push", "create") else ""
        if event == "push":
            ref = _text(_field(payload, "ref"), "ref")
            if not ref.startswith("refs/tags/"):
                return Ignored(f"push to {_short(ref)}, not a tag")
            if payload.get("deleted") or payload.get("after") == ZERO_SHA:
                return Ignored(f"tag {_short(ref.removeprefix('refs/tags/'))} was deleted")
            return TagPush("github", project, _tag_of(ref), _commit(_field(payload, "after")))
        if event == "create":
            if payload.get("ref_type") != "tag":
                return Ignored(f"created a {_short(payload.get('ref_type'))}, not a tag")
            return TagPush("github", project, _text(_field(payload, "ref"), "ref"), "")
        return Ignored(f"GitHub {_short(event or 'unnamed')} event")
    raise Rejected(401, "not a GitLab or GitHub delivery (no X-Gitlab-Token or X-Hub-Signature-256)")


def _tag_of(ref: str) -> str:
    if not ref.startswith("refs/tags/"):
        raise Rejected(400, f"ref {_short(ref)} is not a tag")
    return ref.removeprefix("refs/tags/")


def check_tag(manifest: Manifest, tag: str) -> str:
    """The tag's class, or 400 naming what is wrong with it."""
    try:
        classification = classify(manifest, tag=tag)
    except ConfigError as exc:
        raise Rejected(400, str(exc)) from exc
    if classification.release_class is ReleaseClass.DEVELOPMENT:
        raise Rejected(400, f"{_short(tag)} is not a release tag")
    return str(classification.release_class.value)


StartRelease = Callable[[TagPush], str]
"""start(push) -> flow run id; must honour push.idempotency_key."""

_CLOSE = {"connection": "close"}


def _refuse(status: int, message: str, *, close: bool = False) -> JSONResponse:
    logger.warning("rejected (%d): %s", status, message)
    return JSONResponse({"error": message}, status_code=status, headers=_CLOSE if close else None)


def _authenticate_early(headers: dict[str, str], secrets: Secrets) -> None:
    """What can be refused before reading the body: no forge named, a wrong GitLab token."""
    if "x-gitlab-event" in headers or "x-gitlab-token" in headers:
        check_gitlab(headers, secrets)
    elif "x-github-event" in headers or "x-hub-signature-256" in headers:
        if not secrets.github_secret:
            raise Rejected(401, "GitHub deliveries are not accepted: no GitHub secret is configured")
    else:
        raise Rejected(401, "not a GitLab or GitHub delivery (no X-Gitlab-Token or X-Hub-Signature-256)")


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request) -> bytes:
    """The body, counted while it streams in: refused as soon as it passes MAX_BODY."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    manifest: Manifest, secrets: Secrets, start: StartRelease, *, body_seconds: float = BODY_SECONDS
) -> Starlette:
    async def receive(request: Request) -> JSONResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        length = headers.get("content-length")
        if length is not None and (not length.isascii() or not length.isdigit()):
            return _refuse(400, "Content-Length is not a number", close=True)
        if length is not None and (len(length) > 18 or int(length) > MAX_BODY):
            return _refuse(413, f"body of {length} bytes is larger than {MAX_BODY} bytes", close=True)
        try:
            _authenticate_early(headers, secrets)
        except Rejected as exc:
            return _refuse(exc.status, str(exc), close=True)
        try:
            body = await asyncio.wait_for(_read_body(request), body_seconds)
        except _BodyTooLarge:
            return _refuse(413, f"body is larger than {MAX_BODY} bytes", close=True)
        except TimeoutError:
            return _refuse(408, f"body did not arrive within {body_seconds:g} s", close=True)
        except ClientDisconnect:
            logger.warning("client disconnected before sending its whole body")
            return JSONResponse({"error": "client disconnected"}, status_code=400, headers=_CLOSE)
        try:
            event = parse_event(headers, body, secrets)
            if isinstance(event, Ignored):
                logger.info("ignored: %s", event.reason)
                return JSONResponse({"ignored": event.reason}, status_code=200)
            release_class = check_tag(manifest, event.tag)
        except Rejected as exc:
            return _refuse(exc.status, str(exc))
        try:
            run_id = await asyncio.wait_for(run_in_threadpool(start, event), START_SECONDS)
        except TimeoutError:
            return _unavailable(event, f"the Prefect API did not answer within {START_SECONDS:g} s")
        except DropshipError as exc:
            return _unavailable(event, str(exc))
        except Exception as exc:  # noqa: BLE001 - the boundary to the Prefect client: any failure is a 503
            return _unavailable(event, f"the Prefect API is unreachable or failing: {type(exc).__name__}: {exc}")
        logger.info("%s %s %s at %s: flow run %s", event.forge, event.project, event.tag, event.commit[:12], run_id)
        return JSONResponse(
            {"flow_run_id": run_id, "tag": event.tag, "class": release_class, "project": event.project},
            status_code=202,
        )

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/hooks/release", receive, methods=["POST"]), Route("/healthz", health)])


def _unavailable(event: TagPush, why: str) -> JSONResponse:
    reason = " ".join(why.split())[:300]
    message = f"release of {event.project} {event.tag} not started: {reason}; the forge may redeliver"
    logger.error("503: %s", message)
    return JSONResponse({"error": message}, status_code=503, headers={"retry-after": "30"})


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the limits it lacks: a deadline for request headers, a connection cap.

    uvicorn closes idle keep-alive connections but never one that opened and
    then sends nothing, or its headers one byte at a time.
    """

    header_seconds = HEADER_SECONDS
    max_connections = MAX_CONNECTIONS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            logger.warning("refused a connection: %d already open", self.max_connections)
            transport.close()
            return
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self.loop.call_later(self.header_seconds, self._header_deadline, id(self.cycle))

    def _header_deadline(self, cycle: int) -> None:
        waiting = self.conn.their_state is h11.IDLE and id(self.cycle) == cycle
        if waiting and not self.transport.is_closing():
            logger.info("closed a connection that sent no complete request within %g s", self.header_seconds)
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_deadline()


def serve(
    app: Starlette,
    host: str,
    port: int,
    *,
    header_seconds: float = HEADER_SECONDS,
    max_connections: int = MAX_CONNECTIONS,
) -> None:
    """Serve `app` with uvicorn and the limits that keep slow or many clients from holding it."""
    import uvicorn

    protocol = type(
        "Guarded", (GuardedH11Protocol,), {"header_seconds": header_seconds, "max_connections": max_connections}
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        http=protocol,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        limit_concurrency=max_connections,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
