"""End to end: releases published over SSH to a real sshd playing the repository
server, served by Debian's nginx; then promotion and rollback, checked with
apt-get and dnf; the release index rendered by headless Chromium; the
summary artifacts read back from the Prefect API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dropship.demo import prepare_repository
from dropship.errors import ConfigError, PublishError
from tests.clients import AptClient, DnfClient, run_packaged_hello
from tests.servers import Nginx, RepoServerHost, start_nginx, start_repo_server
from tests.support import machine_processes_under

pytestmark = pytest.mark.e2e


class World:
    def __init__(self, base: Path, server: RepoServerHost, web: Nginx, manifest: Path) -> None:
        self.base, self.server, self.web, self.manifest = base, server, web, manifest
        self.workdir = base / "state"
        self.runs: dict[str, Any] = {}

    @property
    def current(self) -> str:
        return os.readlink(self.server.root / "current").removeprefix("releases/")

    def apt(self, tmp_path: Path, suite: str) -> AptClient:
        keyring = tmp_path / "keyring.gpg"
        shutil.copyfile(self.server.root / "current/keys/hello-release.gpg", keyring)
        client = AptClient(tmp_path / f"apt-{suite}", self.web.url, keyring, suite)
        client.update()
        return client

    def dnf(self, tmp_path: Path, suite: str) -> DnfClient:
        repo_file = (self.server.root / f"current/rpm/{suite}.repo").read_text()
        return DnfClient(tmp_path / f"dnf-{suite}", repo_file, f"{self.web.url}/keys/hello-release.asc")


@pytest.fixture(scope="module")
def world(prefect_server: str, tmp_path_factory: pytest.TempPathFactory, signing_key: str) -> Iterator[World]:
    base = tmp_path_factory.mktemp("publication")
    server = start_repo_server(base / "server")
    try:
        web = start_nginx(base / "nginx", server.root / "current")
    except BaseException:
        server.stop()
        raise
    try:
        yield _publish_two_releases(base, server, web, signing_key)
    finally:
        web.stop()
        server.stop()


def _publish_two_releases(base: Path, server: RepoServerHost, web: Nginx, signing_key: str) -> World:
    from blocks.repo_server import RepoServer
    from blocks.signing_key import SigningKey
    from flows.release import release

    repo = prepare_repository(base / "hello", "v0.1.0")
    manifest = repo / "dropship.toml"
    text = manifest.read_text().replace('signing_key = "hello-signing-key"', 'signing_key = "hello-ssh-signing-key"')
    manifest.write_text(text.replace('repo_server = "hello-repo"', 'repo_server = "hello-ssh-repo"'))
    SigningKey(private_key=signing_key).save("hello-ssh-signing-key", overwrite=True)
    ep = server.endpoint
    RepoServer(
        path=str(server.root),
        base_url=web.url,
        keep_releases=5,
        host=ep.host,
        port=ep.port,
        user=ep.user,
        ssh_private_key=server.private_key,
        host_public_key=ep.host_public_key,
    ).save("hello-ssh-repo", overwrite=True)
    world = World(base, server, web, manifest)
    for name, kwargs in {
        "stable": {"tag": "v0.1.0"},
        "nightly": {"ref": "main", "targets": ["amd64-deb", "amd64-rpm"]},
    }.items():
        state = release(manifest=str(manifest), workdir=str(world.workdir), return_state=True, **kwargs)
        assert state.is_completed(), state.message
        world.runs[name] = state.result()
    return world


def test_releases_are_published_over_ssh_and_served_by_nginx(world: World, tmp_path: Path) -> None:
    stable, nightly = world.runs["stable"], world.runs["nightly"]
    assert world.current == nightly["release_id"]
    assert sorted(p.name for p in (world.server.root / "releases").iterdir()) == sorted(
        [stable["release_id"], nightly["release_id"]]
    )
    assert stable["repository"].startswith(f"{world.server.endpoint.user}@127.0.0.1:")
    client = world.apt(tmp_path, "stable")
    assert run_packaged_hello(client.download("hello"), tmp_path / "root") == "Hello from dropship 0.1.0!"
    dev = world.apt(tmp_path, "nightly")
    assert f"Candidate: {nightly['version']}" in dev.policy("hello")


def test_release_index_lists_both_releases(world: World) -> None:
    index = json.loads((world.server.root / "current/index.json").read_text())
    by_id = {r["id"]: r for r in index["releases"]}
    stable = by_id[world.runs["stable"]["release_id"]]
    assert stable["release_class"] == "stable" and stable["version"] == "0.1.0" and stable["available"]
    assert sorted(stable["targets"]) == ["amd64-deb", "amd64-rpm", "arm64-deb", "arm64-rpm", "python-wheel"]
    for artifact in stable["artifacts"]:
        served = world.server.root / "current" / artifact["path"]
        from dropship.repos.files import sha256_file

        assert served.stat().st_size == artifact["size"] and sha256_file(served) == artifact["sha256"]
    nightly = by_id[world.runs["nightly"]["release_id"]]
    assert nightly["release_class"] == "development" and nightly["suites"] == ["nightly"]


def test_index_page_renders_in_chromium(world: World, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed to check the index page (scripts/setup.sh installs it)"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    url = f"{world.web.url}/index.html"
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "hello releases" in dom and "Stable releases" in dom and "Development releases" in dom
    assert "v0.1.0" in dom and world.runs["nightly"]["version"] in dom and world.runs["stable"]["release_id"] in dom
    shot = Path(os.environ.get("DROPSHIP_SCREENSHOT_DIR", tmp_path)) / "index.png"
    subprocess.run(
        [chromium, *flags, "--window-size=1280,1400", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 10_000, "the screenshot is empty"


def test_summary_artifacts_are_in_the_prefect_ui(world: World) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run_id = world.runs["stable"]["run_id"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    by_key = {a.key: a for a in artifacts}
    assert set(by_key) >= {"release-summary", "release-packages", "release-repository"}
    markdown = str(by_key["release-summary"].data)
    assert "class: **stable**" in markdown and "cache hits: 0" in markdown and "| amd64-deb | built |" in markdown
    table = by_key["release-packages"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert {r["artifact"] for r in rows} >= {"hello_0.1.0_amd64.deb", "hello-0.1.0-1.x86_64.rpm"}
    assert all(len(r["sha256"]) == 64 for r in rows)
    assert str(by_key["release-repository"].data).startswith("[") and f"{world.web.url}/index.html" in str(
        by_key["release-repository"].data
    )


def test_promotion_publishes_the_development_build_as_stable_without_machines(world: World, tmp_path: Path) -> None:
    from flows.promote import promote

    nightly = world.runs["nightly"]
    result = promote(
        manifest=str(world.manifest), build=nightly["release_id"], as_tag="v0.2.0", workdir=str(world.workdir)
    )
    world.runs["promoted"] = result
    assert world.current == result["release_id"]
    client = world.apt(tmp_path, "stable")
    # Promotion ships the tested bytes with the version they were built with
    # (docs/architecture.md): below 0.1.0, so it is installed by version.
    assert f"{nightly['version']} 500" in client.policy("hello")
    deb = client.download(f"hello={nightly['version']}")
    assert run_packaged_hello(deb, tmp_path / "root") == f"Hello from dropship {nightly['version']}!"
    rpm = world.dnf(tmp_path, "stable").download(f"hello-{nightly['version']}")
    assert rpm.name == f"hello-{nightly['version']}-1.x86_64.rpm"
    index = json.loads((world.server.root / "current/index.json").read_text())
    promoted = next(r for r in index["releases"] if r["id"] == result["release_id"])
    assert promoted["name"] == "v0.2.0" and promoted["promoted_from"] == nightly["release_id"]
    assert machine_processes_under(world.workdir) == []
    with pytest.raises(ConfigError, match="already released"):
        promote(manifest=str(world.manifest), build=nightly["release_id"], as_tag="v0.2.0", workdir=str(world.workdir))
    with pytest.raises(ConfigError, match="not a development build"):
        promote(
            manifest=str(world.manifest),
            build=world.runs["stable"]["release_id"],
            as_tag="v0.3.0",
            workdir=str(world.workdir),
        )


def test_rollback_switches_back_and_clients_follow(world: World, tmp_path: Path) -> None:
    from flows.rollback import rollback

    if "promoted" not in world.runs:
        pytest.skip("needs the promotion test's release")
    result = rollback(manifest=str(world.manifest), workdir=str(world.workdir))
    assert result == {"from": world.runs["promoted"]["release_id"], "to": world.runs["nightly"]["release_id"]}
    client = world.apt(tmp_path, "stable")
    assert "Candidate: 0.1.0" in client.policy("hello")
    rpm = world.dnf(tmp_path, "stable").download("hello")
    assert rpm.name == "hello-0.1.0-1.x86_64.rpm"
    rollback(manifest=str(world.manifest), to=world.runs["promoted"]["release_id"], workdir=str(world.workdir))
    assert world.current == world.runs["promoted"]["release_id"]
    with pytest.raises(PublishError, match="not on the server"):
        rollback(manifest=str(world.manifest), to="20990101T000000Z-v9.9.9", workdir=str(world.workdir))


def test_dry_run_builds_and_signs_but_publishes_nothing(world: World) -> None:
    from dropship.demo import GIT_IDENTITY
    from flows.release import release

    before = world.current
    releases_before = sorted(p.name for p in (world.server.root / "releases").iterdir())
    subprocess.run(
        ["git", *GIT_IDENTITY, "-C", str(world.manifest.parent), "tag", "-a", "v0.3.0", "-m", "v0.3.0"], check=True
    )
    state = release(
        manifest=str(world.manifest),
        tag="v0.3.0",
        targets=["amd64-deb"],
        dry_run=True,
        workdir=str(world.workdir),
        return_state=True,
    )
    assert state.is_completed(), state.message
    summary = state.result()
    # the build machine, and the fresh machine of the example's integration job (jobs run on dry runs too)
    assert summary["status"] == "dry-run" and summary["machines_created"] == 2
    assert summary["targets"][0]["status"] == "built"
    tree = Path(summary["repository"])
    assert (tree / "pool/main/h/hello/hello_0.3.0_amd64.deb").exists(), "the signed tree is left for inspection"
    assert world.current == before
    assert sorted(p.name for p in (world.server.root / "releases").iterdir()) == releases_before
    assert machine_processes_under(world.workdir) == []
