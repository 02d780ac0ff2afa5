"""Releases on DigitalOcean droplets: pydo over real HTTP against the emulator,
each droplet a container booted from the stock Debian 12 image by cloud-init
(or from a snapshot made by `dropship image build`), bootstrapped by the
orchestrator over SSH with its host key pinned, its worker reaching a Prefect
server that requires credentials. A droplet has a network of its own: it reaches
Prefect only by the orchestrator's public name (`orchestrator.dropship.test`,
published by the emulator), Debian's mirror and PyPI, nothing else of this host.

Kept few: a bootstrap from the stock image pip-installs Prefect. The module
shares one Prefect server, one emulator and one snapshot; every release
builds one target.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cli.run import quiet_prefect
from dropship.demo import prepare_repository
from dropship.emulator.dockerd import DockerDaemon
from dropship.emulator.server import EmulatorServer
from dropship.emulator.state import Emulator
from dropship.ports import free_port
from dropship.prefect_server import LocalPrefectServer
from tests.clients import AptClient, run_packaged_hello
from tests.servers import forget_prefect_services
from tests.support import commit_and_tag

pytestmark = pytest.mark.e2e
TOKEN = "dop_v1_release_tests"
AUTH = "dropship:droplet-tests-auth-7f3a"
TARGET = "amd64-deb"


@pytest.fixture(scope="module")
def auth_prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_URL,
        temporary_settings,
    )

    # refuses requests without PREFECT_API_AUTH_STRING
    server = LocalPrefectServer(
        tmp_path_factory.mktemp("auth-prefect"), extra_env={"PREFECT_SERVER_API_AUTH_STRING": AUTH}
    )
    server.start()
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url, PREFECT_API_AUTH_STRING: AUTH}):
            try:
                yield server.api_url
            finally:
                forget_prefect_services()  # while the server still answers; bound to it otherwise
    finally:
        server.stop()


@dataclass
class Cloud:
    emulator: Emulator
    url: str
    dockerd: DockerDaemon
    workdir: Path

    def containers(self) -> list[Any]:
        return list(
            self.dockerd.client.containers.list(
                all=True, filters={"label": f"dropship.emulator={self.emulator.instance}"}
            )
        )

    def droplets_of(self, before: int) -> list[dict[str, Any]]:
        return self.emulator.lifetimes()[before:]

    def assert_nothing_left(self) -> None:
        assert self.emulator.alive() == []
        assert self.containers() == []
        assert self.emulator.ssh_keys() == [], "the run's SSH key was not deleted"


@pytest.fixture(scope="module")
def cloud(
    auth_prefect: str, dockerd: DockerDaemon, stock_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cloud]:
    from blocks.digitalocean import DigitalOceanCredentials
    from blocks.repo_server import RepoServer
    from blocks.signing_key import SigningKey
    from flows.demo import demo_key

    workdir = tmp_path_factory.mktemp("droplets")
    # a free SSH port: any wildcard listener on 22 of this shared host would block every droplet address
    emulator = Emulator(workdir / "emulator", token=TOKEN, machines="containers", docker=dockerd, ssh_port=free_port())
    server = EmulatorServer(emulator).start()
    DigitalOceanCredentials(
        token=TOKEN,
        endpoint=server.url,
        ssh_port=emulator.ssh_port,
        # the droplets' own network reaches the orchestrator by its public name, as real droplets would
        worker_api_url=emulator.publish_orchestrator(auth_prefect),
        api_auth_string=AUTH,
        ready_timeout=120.0,
        poll_interval=0.5,
    ).save("dropship-digitalocean", overwrite=True)
    SigningKey(private_key=demo_key(workdir)).save("hello-signing-key", overwrite=True)
    RepoServer(path=str(workdir / "published")).save("hello-repo", overwrite=True)
    try:
        yield Cloud(emulator, server.url, dockerd, workdir)
    finally:
        server.stop()


def hello_repo(folder: Path, tag: str, edit: dict[str, str] | None = None) -> Path:
    repo = prepare_repository(folder, "v0.1.0")
    text = (repo / "dropship.toml").read_text().replace('provider = "local"', 'provider = "digitalocean"')
    marker = "\n# A pure-Python wheel"
    assert marker in text, "the example's manifest changed: update this fixture"
    (repo / "dropship.toml").write_text(text.split(marker)[0])  # build droplets only: no wheel target, no jobs
    commit_and_tag(repo, tag, edit)
    return repo


def release_state(repo: Path, tag: str, workdir: Path) -> Any:
    from flows.release import release

    return release(
        manifest=str(repo / "dropship.toml"), tag=tag, workdir=str(workdir), targets=[TARGET], return_state=True
    )


@pytest.fixture(scope="module")
def snapshot(cloud: Cloud) -> str:
    """One snapshot for the module, made by `dropship image build` as a user would."""
    from flows.image import image_build

    repo = hello_repo(cloud.workdir / "image-src", "v0.1.1")
    before = len(cloud.emulator.lifetimes())
    state = image_build(manifest=str(repo / "dropship.toml"), target=TARGET, return_state=True)
    assert state.is_completed(), state.message
    (made,) = state.result()
    assert made["name"].startswith("dropship-debian-12-x64-") and made["built"]
    assert len(cloud.droplets_of(before)) == 1
    cloud.assert_nothing_left()
    return str(made["name"])


def test_release_on_a_stock_droplet_bootstraps_an_authenticated_worker(
    cloud: Cloud, serve: Any, tmp_path: Path
) -> None:
    before = len(cloud.emulator.lifetimes())
    repo = hello_repo(tmp_path / "hello", "v0.2.0")
    with quiet_prefect(tmp_path / "release.log", stream=io.StringIO()) as shown:
        state = release_state(repo, "v0.2.0", tmp_path / "state")
    assert state.is_completed(), state.message
    # the minutes of a stock droplet's bootstrap are said, not silent
    provisioning = [line for line in shown.lines if line.startswith(f"… provision {TARGET}: ")]
    assert provisioning and provisioning[0].startswith(f"… provision {TARGET}: creating droplet "), shown.lines
    assert any(
        " is up; installing its setup, dropship and Prefect on debian-12-x64 (minutes; " in line
        for line in provisioning
    ), shown.lines
    (run_dir,) = (tmp_path / "state" / "runs").iterdir()
    summary_text = (run_dir / "summary.json").read_text()
    summary = json.loads(summary_text)
    assert summary["status"] == "published" and summary["machines_created"] == 1
    (droplet,) = cloud.droplets_of(before)
    record = cloud.emulator.droplet(droplet["id"])
    assert record is not None and AUTH not in record.user_data and "PREFECT" not in record.user_data
    assert AUTH not in summary_text
    cloud.assert_nothing_left()
    current = cloud.workdir / "published" / "current"
    client = AptClient(tmp_path / "apt", serve(current), current / "keys" / "hello-release.gpg", "stable")
    client.update()
    assert run_packaged_hello(client.download("hello"), tmp_path / "unpacked") == "Hello from dropship 0.2.0!"


def test_release_from_a_snapshot(cloud: Cloud, snapshot: str, tmp_path: Path) -> None:
    before = len(cloud.emulator.lifetimes())
    repo = hello_repo(tmp_path / "hello", "v0.3.0", {'image = "debian-12-x64"': f'image = "{snapshot}"'})
    with quiet_prefect(tmp_path / "release.log", stream=io.StringIO()) as shown:
        state = release_state(repo, "v0.3.0", tmp_path / "state")
    assert state.is_completed(), state.message
    assert not [line for line in shown.lines if "installing" in line], "a snapshot has dropship: nothing to install"
    assert any(line.startswith(f"… provision {TARGET}: creating droplet ") for line in shown.lines), shown.lines
    (droplet,) = cloud.droplets_of(before)
    assert cloud.emulator.droplet(droplet["id"]).image["name"] == snapshot  # type: ignore[union-attr]
    cloud.assert_nothing_left()


def test_a_stale_snapshot_is_refused_before_any_droplet(cloud: Cloud, snapshot: str, tmp_path: Path) -> None:
    before = len(cloud.emulator.lifetimes())
    repo = hello_repo(
        tmp_path / "hello",
        "v0.4.0",
        {
            'image = "debian-12-x64"': f'image = "{snapshot}"',
            'setup = ["gcc", "libc6-dev", "xz-utils"]': 'setup = ["gcc", "libc6-dev", "xz-utils", "file"]',
        },
    )
    state = release_state(repo, "v0.4.0", tmp_path / "state")
    assert state.is_failed()
    assert f"dropship image build --manifest {repo / 'dropship.toml'} --target {TARGET}" in state.message
    assert cloud.droplets_of(before) == []


def test_create_and_delete_faults_never_make_a_second_droplet(cloud: Cloud, snapshot: str, tmp_path: Path) -> None:
    """A create answered 500 after it happened, reads that 404 just after, a delete refused for a pending event."""
    before = len(cloud.emulator.lifetimes())
    repo = hello_repo(tmp_path / "hello", "v0.5.0", {'image = "debian-12-x64"': f'image = "{snapshot}"'})
    for fault in ("create-then-5xx:1", "404-after-create:3", "pending-event-on-delete:2"):
        cloud.emulator.faults.apply(fault)
    try:
        state = release_state(repo, "v0.5.0", tmp_path / "state")
    finally:
        cloud.emulator.faults.__init__()  # type: ignore[misc]
    assert state.is_completed(), state.message
    assert len(cloud.droplets_of(before)) == 1, "a create was repeated although its droplet existed"
    cloud.assert_nothing_left()


def test_an_image_target_builds_on_a_stock_droplet_with_its_own_dockerd(
    cloud: Cloud, registry: Any, tmp_path: Path
) -> None:
    """The droplet installs docker.io from its target's setup at bootstrap, builds the image with a
    dockerd of its own, and the orchestrator pushes it: what runs where is as on DigitalOcean."""
    from prefect_docker.credentials import DockerRegistryCredentials

    from flows.release import release

    before = len(cloud.emulator.lifetimes())
    repo = prepare_repository(tmp_path / "hello", "v0.1.0")
    text = (repo / "dropship.toml").read_text().replace('provider = "local"', 'provider = "digitalocean"')
    repository = registry.repository("droplets/hello")
    fragment = (repo / "oci.toml").read_text().replace('"127.0.0.1:5000/hello"', f'"{repository}"')
    (repo / "dropship.toml").write_text(text.split("\n# A pure-Python wheel")[0] + "\n" + fragment)
    commit_and_tag(repo, "v0.6.0")
    DockerRegistryCredentials(username=registry.username, password=registry.password, registry_url=registry.host).save(
        "hello-registry", overwrite=True
    )
    state = release(
        manifest=str(repo / "dropship.toml"),
        tag="v0.6.0",
        workdir=str(tmp_path / "state"),
        targets=["amd64-image"],
        return_state=True,
    )
    assert state.is_completed(), state.message
    (run_dir,) = (tmp_path / "state" / "runs").iterdir()
    image = json.loads((run_dir / "summary.json").read_text())["image"]
    assert image["tagged"] and list(image["platforms"]) == ["linux/amd64"]
    assert len(cloud.droplets_of(before)) == 1
    cloud.assert_nothing_left()
    auth = {"username": registry.username, "password": registry.password}
    by_tag = cloud.dockerd.client.images.pull(repository, tag="0.6.0", auth_config=auth)
    assert by_tag.id == cloud.dockerd.client.images.pull(f"{repository}@{image['digest']}", auth_config=auth).id
    out = cloud.dockerd.client.containers.run(f"{repository}:0.6.0", ["--version"], remove=True, network_mode="host")
    assert out.decode().strip() == "hello 0.6.0"
