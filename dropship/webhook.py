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
    400  body that isn't a JSON event, or a tag that is not a release tag
    200  authenticated but not a release (branch push, deleted tag, ping, other event)
    202  release started (or already started by the same delivery): {"flow_run_id": ...}

GitHub sends both a `create` and a `push` event for one tag push; `create`
carries no commit. Subscribe the webhook to `push` only (recommended) or to
`create` only: a `create` is keyed on project and tag alone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dropship.errors import ConfigError
from dropship.errors import WebhookRejected as Rejected
from dropship.manifest import Manifest
from dropship.release import ReleaseClass, classify

ZERO_SHA = "0" * 40
logger = logging.getLogger("dropship.webhook")


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
    if not isinstance(payload, dict):
        raise Rejected(400, "body is not a JSON object")
    return payload


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
            return Ignored(f"GitLab {payload.get('object_kind') or headers.get('x-gitlab-event')} event")
        ref = str(_field(payload, "ref"))
        commit = payload.get("checkout_sha") or ""
        if not commit or payload.get("after") == ZERO_SHA:
            return Ignored(f"tag {ref.removeprefix('refs/tags/')} was deleted")
        project = str(_field(payload, "project", "path_with_namespace"))
        return TagPush("gitlab", project, _tag_of(ref), str(commit))
    if "x-github-event" in headers or "x-hub-signature-256" in headers:
        check_github(headers, body, secrets)
        event = headers.get("x-github-event", "")
        payload = _json(body)
        project = str(_field(payload, "repository", "full_name")) if event in ("push", "create") else ""
        if event == "push":
            ref = str(_field(payload, "ref"))
            if not ref.startswith("refs/tags/"):
                return Ignored(f"push to {ref}, not a tag")
            if payload.get("deleted") or payload.get("after") == ZERO_SHA:
                return Ignored(f"tag {ref.removeprefix('refs/tags/')} was deleted")
            return TagPush("github", project, _tag_of(ref), str(_field(payload, "after")))
        if event == "create":
            if payload.get("ref_type") != "tag":
                return Ignored(f"created a {payload.get('ref_type')}, not a tag")
            return TagPush("github", project, str(_field(payload, "ref")), "")
        return Ignored(f"GitHub {event or 'unnamed'} event")
    raise Rejected(401, "not a GitLab or GitHub delivery (no X-Gitlab-Token or X-Hub-Signature-256)")


def _tag_of(ref: str) -> str:
    if not ref.startswith("refs/tags/"):
        raise Rejected(400, f"ref {ref!r} is not a tag")
    return ref.removeprefix("refs/tags/")


def check_tag(manifest: Manifest, tag: str) -> str:
    """The tag's class, or 400 naming what is wrong with it."""
    try:
        classification = classify(manifest, tag=tag)
    except ConfigError as exc:
        raise Rejected(400, str(exc)) from exc
    if classification.release_class is ReleaseClass.DEVELOPMENT:
        raise Rejected(400, f"{tag!r} is not a release tag")
    return str(classification.release_class.value)


StartRelease = Callable[[TagPush], str]
"""start(push) -> flow run id; must honour push.idempotency_key."""

MAX_BODY = 5 * 1024 * 1024


def create_app(manifest: Manifest, secrets: Secrets, start: StartRelease) -> Starlette:
    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": "body too large"}, status_code=413)
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            event = parse_event(headers, body, secrets)
            if isinstance(event, Ignored):
                logger.info("ignored: %s", event.reason)
                return JSONResponse({"ignored": event.reason}, status_code=200)
            release_class = check_tag(manifest, event.tag)
        except Rejected as exc:
            logger.warning("rejected (%d): %s", exc.status, exc)
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        run_id = await run_in_threadpool(start, event)
        logger.info("%s %s %s at %s: flow run %s", event.forge, event.project, event.tag, event.commit[:12], run_id)
        return JSONResponse(
            {"flow_run_id": run_id, "tag": event.tag, "class": release_class, "project": event.project},
            status_code=202,
        )

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/hooks/release", receive, methods=["POST"]), Route("/healthz", health)])
