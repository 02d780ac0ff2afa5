"""Fuzzed webhook deliveries through the real app (Starlette): every answer is 200, 202, 400, 401 or 413
with a JSON body, never a 500; a 202 starts exactly one release, for a tag the flow's own classifier
accepts.

`DROPSHIP_FUZZ_EXAMPLES` raises the example count (default 200 per test); `pytest -s` prints the counts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from dropship.manifest import load_manifest
from dropship.tags import ReleaseClass, classify
from dropship.webhook import Secrets, TagPush, create_app
from tests.faults.strategies import Tally, tags, valid_tags

EXAMPLES = int(os.environ.get("DROPSHIP_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANIFEST = load_manifest(Path(__file__).resolve().parents[2] / "examples" / "hello" / "dropship.toml")
SECRETS = Secrets(gitlab_token="gl-secret", github_secret="gh-secret")
SHA = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def gitlab_event(tag: str) -> dict[str, Any]:
    return {
        "object_kind": "tag_push",
        "ref": f"refs/tags/{tag}",
        "checkout_sha": SHA,
        "after": SHA,
        "project": {"path_with_namespace": "acme/hello"},
    }


def github_event(tag: str) -> dict[str, Any]:
    return {"ref": f"refs/tags/{tag}", "after": SHA, "deleted": False, "repository": {"full_name": "acme/hello"}}


@st.composite
def mutated_event(draw: st.DrawFn) -> dict[str, Any]:
    event = draw(st.sampled_from([gitlab_event, github_event]))(draw(tags))
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from([*event.keys(), "extra"]))
        if draw(st.booleans()):
            event[key] = draw(json_values)
        else:
            event.pop(key, None)
    return event


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    kind = draw(st.sampled_from(["release", "event", "json", "bytes", "deep"]))
    if kind == "release":  # a well-formed delivery of a well-formed tag: the 202 side
        forge = draw(st.sampled_from(["gitlab", "github-push"]))
        event = (gitlab_event if forge == "gitlab" else github_event)(draw(valid_tags))
        body = json.dumps(event).encode()
    elif kind == "event":
        body = json.dumps(draw(mutated_event())).encode()
    elif kind == "json":
        body = json.dumps(draw(json_values)).encode()
    elif kind == "deep":
        depth = draw(st.integers(1, 3000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        body = (opener * depth + "1" + closer * depth).encode()
    else:
        body = draw(st.binary(max_size=300))
    if kind != "release":
        forge = draw(st.sampled_from(["gitlab", "github-push", "github-create", "github-ping", "none", "bad-auth"]))
    signature = "sha256=" + hmac.new(b"gh-secret", body, hashlib.sha256).hexdigest()
    headers = {
        "gitlab": {"x-gitlab-event": "Tag Push Hook", "x-gitlab-token": "gl-secret"},
        "github-push": {"x-github-event": "push", "x-hub-signature-256": signature},
        "github-create": {"x-github-event": "create", "x-hub-signature-256": signature},
        "github-ping": {"x-github-event": "ping", "x-hub-signature-256": signature},
        "none": {},
        "bad-auth": {
            "x-gitlab-token": draw(
                st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=20).filter(
                    lambda t: t != "gl-secret"
                )
            )
        },
    }[forge]
    return headers, body


def test_fuzzed_deliveries_never_crash_and_202_only_for_release_tags() -> None:
    started: list[TagPush] = []

    def start(push: TagPush) -> str:
        started.append(push)
        return f"run-{len(started)}"

    client = TestClient(create_app(MANIFEST, SECRETS, start), raise_server_exceptions=False)
    tally = Tally()
    counts = tally.counts

    @FUZZ
    @given(deliveries())
    def check(delivery: tuple[dict[str, str], bytes]) -> None:
        headers, body = delivery
        before = len(started)
        answer = client.post("/hooks/release", content=body, headers=headers)
        if answer.status_code >= 500:
            tally.crash(f"{answer.status_code} for {body[:120]!r}")
            return
        assert answer.status_code in (200, 202, 400, 401, 413), answer.status_code
        reply = answer.json()
        if answer.status_code == 202:
            counts["accepted"] += 1
            assert len(started) == before + 1
            push = started[-1]
            assert reply["tag"] == push.tag and reply["flow_run_id"] == f"run-{len(started)}"
            assert classify(MANIFEST, tag=push.tag).release_class in (ReleaseClass.STABLE, ReleaseClass.EXTRA)
        else:
            counts["ignored" if answer.status_code == 200 else "refused"] += 1
            assert len(started) == before, "nothing started"
            assert isinstance(reply.get("error" if answer.status_code != 200 else "ignored"), str)

    check()
    tally.report("fuzz webhook bodies", ignored=True)
