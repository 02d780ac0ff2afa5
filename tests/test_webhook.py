"""The receiver's rules, without Prefect: authentication, event kinds, tag validation."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from dropship.manifest import load_manifest
from dropship.webhook import Ignored, Rejected, Secrets, TagPush, check_tag, parse_event

SECRETS = Secrets(gitlab_token="gl-secret", github_secret="gh-secret")
SHA = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


def gitlab_tag(tag: str, sha: str | None = SHA) -> bytes:
    return json.dumps({
        "object_kind": "tag_push", "ref": f"refs/tags/{tag}", "checkout_sha": sha,
        "after": sha or "0" * 40, "project": {"path_with_namespace": "acme/hello"},
    }).encode()


def github_push(ref: str, sha: str = SHA, deleted: bool = False) -> bytes:
    return json.dumps({"ref": ref, "after": sha, "deleted": deleted, "repository": {"full_name": "acme/hello"}}).encode()


def signed(body: bytes, secret: str = "gh-secret") -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_gitlab_tag_push_is_read_with_project_tag_and_commit() -> None:
    event = parse_event({"x-gitlab-event": "Tag Push Hook", "x-gitlab-token": "gl-secret"}, gitlab_tag("v1.2.3"), SECRETS)
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
        assert isinstance(parse_event({"x-github-event": "push", "x-hub-signature-256": signed(body)}, body, SECRETS), Ignored)
    create = json.dumps({"ref": "v1.2.3", "ref_type": "tag", "repository": {"full_name": "acme/hello"}}).encode()
    event = parse_event({"x-github-event": "create", "x-hub-signature-256": signed(create)}, create, SECRETS)
    assert event == TagPush("github", "acme/hello", "v1.2.3", "")
    branch = json.dumps({"ref": "dev", "ref_type": "branch", "repository": {"full_name": "acme/hello"}}).encode()
    assert isinstance(parse_event({"x-github-event": "create", "x-hub-signature-256": signed(branch)}, branch, SECRETS), Ignored)


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
