"""The three triggers against the session's real Prefect server: the webhook
receiver over real HTTP, and `prefect deployment run` picked up by a real
process worker that runs the whole example release."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments import Settings
from dropship.demo import prepare_repository
from dropship.manifest import load_manifest
from dropship.ports import free_port
from dropship.webhook import Secrets, create_app
from tasks.resources import ORCHESTRATOR_POOL
from tests.servers import stop_group
from tests.support import machine_processes_under, wait_healthy

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SHA = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


def _project(tmp_path: Path, tag: str, signing_key: str) -> Path:
    """The example as a git repository tagged `tag`, with blocks of its own."""
    from blocks.repo_server import RepoServer
    from blocks.signing_key import SigningKey

    repo = prepare_repository(tmp_path / "hello", tag)
    manifest = repo / "dropship.toml"
    text = manifest.read_text().replace('signing_key = "hello-signing-key"', 'signing_key = "hello-trigger-key"')
    manifest.write_text(text.replace('repo_server = "hello-repo"', 'repo_server = "hello-trigger-repo"'))
    SigningKey(private_key=signing_key).save("hello-trigger-key", overwrite=True)
    RepoServer(path=str(tmp_path / "published")).save("hello-trigger-repo", overwrite=True)
    return manifest


def _runs_of(deployment: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        target = client.read_deployment_by_name(deployment)
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[target.id])))


@pytest.fixture
def receiver(prefect_server: str, tmp_path: Path) -> Iterator[str]:
    """The receiver on a free loopback port, starting runs of a deployment no worker serves."""
    import uvicorn
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    from deployments.runs import release_starter
    from flows.release import release

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool("dropship-webhook-test")
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name="dropship-webhook-test", type="process"))
    from prefect.deployments.runner import EntrypointType

    release.deploy(
        name="webhook-test",
        work_pool_name="dropship-webhook-test",
        entrypoint_type=EntrypointType.MODULE_PATH,
        parameters={"manifest": "/nonexistent/dropship.toml"},
        build=False,
        push=False,
        print_next_steps=False,
    )
    manifest = load_manifest(ROOT / "examples/hello/dropship.toml")
    app = create_app(
        manifest, Secrets(gitlab_token="gl-token", github_secret="gh-secret"), release_starter("release/webhook-test")
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/hooks/release"
    server.should_exit = True
    thread.join(timeout=10)
    with get_client(sync_client=True) as client:
        for run in _runs_of("release/webhook-test"):
            client.delete_flow_run(run.id)


def _gitlab(tag: str, token: str = "gl-token", ref_kind: str = "tags") -> tuple[dict[str, str], bytes]:
    body = {
        "object_kind": "tag_push" if ref_kind == "tags" else "push",
        "ref": f"refs/{ref_kind}/{tag}",
        "checkout_sha": SHA,
        "after": SHA,
        "project": {"path_with_namespace": "acme/hello"},
    }
    return {"X-Gitlab-Event": "Tag Push Hook", "X-Gitlab-Token": token}, json.dumps(body).encode()


def _github(ref: str, secret: str = "gh-secret") -> tuple[dict[str, str], bytes]:
    body = json.dumps({"ref": ref, "after": SHA, "deleted": False, "repository": {"full_name": "acme/hello"}}).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-GitHub-Event": "push", "X-Hub-Signature-256": signature, "Content-Type": "application/json"}, body


def test_webhook_deliveries_start_exactly_the_right_runs(receiver: str) -> None:
    def post(headers: dict[str, str], body: bytes) -> httpx.Response:
        return httpx.post(receiver, headers=headers, content=body, timeout=30)

    first = post(*_gitlab("v1.2.3"))
    assert first.status_code == 202, first.text
    run_id = first.json()["flow_run_id"]
    runs = _runs_of("release/webhook-test")
    assert [(str(r.id), r.parameters["tag"]) for r in runs] == [(run_id, "v1.2.3")]
    again = post(*_gitlab("v1.2.3"))
    assert again.status_code == 202 and again.json()["flow_run_id"] == run_id, "a redelivery starts nothing new"

    assert post(*_gitlab("v1.2.4", token="wrong")).status_code == 401
    branch = post(*_gitlab("main", ref_kind="heads"))
    assert branch.status_code == 200 and "ignored" in branch.json()
    for bad in ("v1.2", "v1.2.3;rm -rf /"):
        response = post(*_gitlab(bad))
        assert response.status_code == 400 and "tag" in response.json()["error"]
    assert post({"X-Gitlab-Token": "gl-token"}, b"{broken").status_code == 400
    assert len(_runs_of("release/webhook-test")) == 1

    hub = post(*_github("refs/tags/v1.3.0"))
    assert hub.status_code == 202
    assert post(*_github("refs/tags/v1.3.0")).json()["flow_run_id"] == hub.json()["flow_run_id"]
    assert post(*_github("refs/tags/v1.3.1", secret="guess")).status_code == 401
    assert post(*_github("refs/heads/main")).status_code == 200
    assert post(*_github("refs/tags/v1.3")).status_code == 400
    runs = _runs_of("release/webhook-test")
    assert sorted(r.parameters["tag"] for r in runs) == ["v1.2.3", "v1.3.0"]
    assert all(r.state.is_scheduled() for r in runs)


def _remove_server_wide_settings() -> None:
    """The session's server is shared: drop the automation and the machines limit that apply made,
    so later tests' flows don't pay for them (SQLite serialises the automation's writes)."""
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client

    from tasks.resources import MACHINES_LIMIT, ZOMBIE_AUTOMATION

    Automation.read(name=ZOMBIE_AUTOMATION).delete()
    with get_client(sync_client=True) as client:
        client.delete_global_concurrency_limit_by_name(MACHINES_LIMIT)


def test_deployment_run_is_picked_up_by_a_process_worker(
    prefect_server: str, tmp_path: Path, signing_key: str, request: pytest.FixtureRequest
) -> None:
    from prefect.client.orchestration import get_client

    from deployments.apply import apply

    manifest = _project(tmp_path, "v0.2.0", signing_key)
    apply(Settings(manifest=str(manifest), workdir=str(tmp_path / "state")))
    request.addfinalizer(_remove_server_wide_settings)
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "DROPSHIP_HOME": str(tmp_path / "state")}
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "worker",
            "start",
            "--pool",
            ORCHESTRATOR_POOL,
            "--type",
            "process",
            "--name",
            "test-orchestrator",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "prefect", "deployment", "run", "release/release-tag", "-p", "tag=v0.2.0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", done.stdout)
        assert run_id, done.stdout
        deadline = time.monotonic() + 400
        with get_client(sync_client=True) as client:
            while True:
                run = client.read_flow_run(run_id.group(1))
                if run.state and run.state.is_final():
                    break
                assert time.monotonic() < deadline, f"run still {run.state.name if run.state else '?'}"
                time.sleep(1)
        assert run.state.is_completed(), (run.state.message, (tmp_path / "worker.log").read_text()[-3000:])
        assert run.parameters["tag"] == "v0.2.0"
        current = tmp_path / "published" / "current"
        assert (current / "pool/main/h/hello/hello_0.2.0_amd64.deb").exists()
        index = json.loads((current / "index.json").read_text())
        assert [r["name"] for r in index["releases"]] == ["v0.2.0"]
        assert machine_processes_under(tmp_path) == []
        status = subprocess.run(
            [sys.executable, "-m", "cli", "status", "--json", "--limit", "50"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        row = next(r for r in json.loads(status.stdout) if r["id"] == run_id.group(1))
        assert (row["deployment"], row["what"], row["state"]) == ("release-tag", "v0.2.0", "Completed")
    finally:
        stop_group(worker, grace=10)
        log.close()


def test_webhook_command_serves_with_secrets_from_a_block(prefect_server: str, tmp_path: Path) -> None:
    """`dropship webhook` as a user starts it: the block's token guards it."""
    from blocks.webhook import WebhookSecrets

    WebhookSecrets(gitlab_token="block-token").save("dropship-webhook-cli-test", overwrite=True)
    port = free_port()
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    log = (tmp_path / "webhook.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "webhook",
            "--port",
            str(port),
            "--manifest",
            str(ROOT / "examples/hello/dropship.toml"),
            "--secrets-block",
            "dropship-webhook-cli-test",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process, tmp_path / "webhook.log", timeout=60)
        headers, body = _gitlab("v1.0.0", token="gl-token")
        assert httpx.post(f"{url}/hooks/release", headers=headers, content=body).status_code == 401
        headers, body = _gitlab("main", token="block-token", ref_kind="heads")
        assert httpx.post(f"{url}/hooks/release", headers=headers, content=body).status_code == 200
        headers, body = _gitlab("v1.0", token="block-token")
        assert httpx.post(f"{url}/hooks/release", headers=headers, content=body).status_code == 400
        github_headers, github_body = _github("refs/tags/v1.0.0")
        assert httpx.post(f"{url}/hooks/release", headers=github_headers, content=github_body).status_code == 401, (
            "no GitHub secret in the block: GitHub deliveries are refused"
        )
    finally:
        stop_group(process)
        log.close()
