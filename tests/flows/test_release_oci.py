"""End to end: the example's image targets (examples/hello/oci.toml) released by the release flow on a
real Prefect server and local machines; each machine builds its platform's image with its own dockerd;
the orchestrator pushes them by digest to a real htpasswd registry (`tests/registry.py`), assembles one
index, and moves the tags only after everything succeeded."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from dropship.demo import prepare_repository
from dropship.emulator.dockerd import DockerDaemon
from dropship.oci import INDEX_TYPE, Skopeo, current_tags
from dropship.oci_registry import LocalRegistry
from tests.registry import RefusingProxy
from tests.support import (
    commit_and_tag,
    machine_processes_under,
    save_release_blocks,
    secret_leaks,
    write_example_with_oci,
)

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.geteuid() != 0, reason="dockerd needs root")]

TARGETS = ["amd64-deb", "amd64-image", "arm64-image"]
STABLE_TAGS = ["1.2.3", "1.2", "latest"]


@pytest.fixture(scope="module")
def project(
    prefect_server: str, tmp_path_factory: pytest.TempPathFactory, signing_key: str, registry: LocalRegistry
) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("oci-release")
    flag = base / "break-arm64-image"
    repo = prepare_repository(base / "hello", "v0.1.0")
    repository = registry.repository("e2e/hello")
    arm64 = 'build = ["sh", "packaging/build.sh", "image", "arm64"]'
    broken = f'build = ["sh", "-c", "test ! -e {flag} || exit 3; exec sh packaging/build.sh image arm64"]'
    write_example_with_oci(repo, repository, replace={arm64: broken})
    commit_and_tag(repo, "v1.2.3")
    save_release_blocks(signing_key, base / "published", registry=registry)
    return {"base": base, "repo": repo, "flag": flag, "repository": repository}


def release(project: dict[str, Any], tag: str, targets: list[str] = TARGETS) -> tuple[Any, dict[str, Any], Path]:
    from flows.release import release as release_flow

    state = release_flow(
        manifest=str(project["repo"] / "dropship.toml"),
        tag=tag,
        targets=targets,
        workdir=str(project["base"] / "state"),
        return_state=True,
    )
    run_dir = project["base"] / "state" / "runs" / str(state.state_details.flow_run_id)
    assert machine_processes_under(project["base"]) == []
    return state, json.loads((run_dir / "summary.json").read_text()), run_dir


@pytest.fixture(scope="module")
def published(project: dict[str, Any]) -> dict[str, Any]:
    state, summary, run_dir = release(project, "v1.2.3")
    assert state.is_completed(), summary["error"]
    return {"summary": summary, "run_dir": run_dir}


@pytest.fixture(scope="module")
def failed(project: dict[str, Any], registry: LocalRegistry, published: dict[str, Any]) -> dict[str, Any]:
    """v1.3.0 with the arm64 image target failing: tags read before and after."""
    tags = [*STABLE_TAGS, "1.3.0", "1.3"]
    with Skopeo(registry.auth) as skopeo:
        before = current_tags(skopeo, project["repository"], tags)
    project["flag"].touch()
    try:
        commit_and_tag(project["repo"], "v1.3.0", {"# The example's container image": "# The example's image"})
        state, summary, run_dir = release(project, "v1.3.0", ["amd64-image", "arm64-image"])  # the images only
    finally:
        project["flag"].unlink()
    with Skopeo(registry.auth) as skopeo:
        after = current_tags(skopeo, project["repository"], tags)
    return {"state": state, "summary": summary, "run_dir": run_dir, "before": before, "after": after}


def test_release_pushes_a_two_platform_index_and_moves_the_stable_tags(
    published: dict[str, Any], project: dict[str, Any], registry: LocalRegistry
) -> None:
    summary = published["summary"]
    image = summary["image"]
    assert summary["status"] == "published"
    assert image["tagged"] and image["tags"] == STABLE_TAGS and image["repository"] == project["repository"]
    assert sorted(image["platforms"]) == ["linux/amd64", "linux/arm64"]
    built = {t["name"]: t for t in summary["targets"]}
    assert [a["name"] for a in built["arm64-image"]["artifacts"]] == ["arm64-image-image.tar"]
    with Skopeo(registry.auth) as skopeo:
        assert current_tags(skopeo, project["repository"], STABLE_TAGS) == dict.fromkeys(STABLE_TAGS, image["digest"])
        raw = skopeo.raw_manifest(f"{project['repository']}:1.2.3")
    assert raw is not None
    document = json.loads(raw)
    assert document["mediaType"] == INDEX_TYPE
    assert {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"] for m in document["manifests"]} == (
        image["platforms"]
    )
    index_html = (project["base"] / "published" / "current" / "index.html").read_text()
    assert image["digest"] in index_html and image["platforms"]["linux/arm64"] in index_html


def test_the_released_image_pulls_by_tag_and_digest_and_prints_the_version(
    published: dict[str, Any], project: dict[str, Any], registry: LocalRegistry, dockerd: DockerDaemon
) -> None:
    image = published["summary"]["image"]
    auth = {"username": registry.username, "password": registry.password}
    by_tag = dockerd.client.images.pull(project["repository"], tag="1.2.3", auth_config=auth)
    latest = dockerd.client.images.pull(project["repository"], tag="latest", auth_config=auth)
    by_digest = dockerd.client.images.pull(f"{project['repository']}@{image['digest']}", auth_config=auth)
    assert by_tag.id == latest.id == by_digest.id
    out = dockerd.client.containers.run(
        f"{project['repository']}:1.2.3", ["--version"], remove=True, network_mode="host"
    )
    assert out.decode().strip() == "hello 1.2.3"


def test_a_failing_image_target_moves_no_tag(failed: dict[str, Any]) -> None:
    assert not failed["state"].is_completed()
    summary = failed["summary"]
    assert summary["status"] == "failed" and summary["image"] is None
    assert {t["name"]: t["status"] for t in summary["targets"]}["arm64-image"] == "failed"
    assert failed["after"] == failed["before"]
    assert failed["after"]["1.3.0"] is None and failed["after"]["latest"] is not None


def test_no_registry_password_in_any_log_artifact_or_summary(
    published: dict[str, Any], failed: dict[str, Any], project: dict[str, Any], registry: LocalRegistry
) -> None:
    run_ids = [published["summary"]["run_id"], failed["summary"]["run_id"]]
    assert secret_leaks(registry.password, run_ids, project["base"]) == []


def _release_with_block(project: dict[str, Any], registry: LocalRegistry, *, password: str, url: str) -> Any:
    """v1.2.3 released with the hello-registry block holding `password` for `url`; the right block after."""
    from prefect_docker.credentials import DockerRegistryCredentials

    from flows.release import release as release_flow

    DockerRegistryCredentials(username=registry.username, password=password, registry_url=url).save(
        "hello-registry", overwrite=True
    )
    try:
        return release_flow(
            manifest=str(project["repo"] / "dropship.toml"),
            tag="v1.2.3",
            targets=TARGETS,
            workdir=str(project["base"] / "state"),
            return_state=True,
        )
    finally:
        DockerRegistryCredentials(
            username=registry.username, password=registry.password, registry_url=registry.host
        ).save("hello-registry", overwrite=True)


def test_a_registry_refusing_the_block_stops_the_release_before_any_machine(
    project: dict[str, Any], registry: LocalRegistry
) -> None:
    from dropship.ledger import lives

    wrong = "wrong-password-4Kq9"
    state = _release_with_block(project, registry, password=wrong, url=registry.host)
    assert not state.is_completed()
    run_dir = project["base"] / "state" / "runs" / str(state.state_details.flow_run_id)
    assert lives(run_dir) == []  # no machine was created
    message = str(state.message)
    assert "unauthorized" in message and "DockerRegistryCredentials" in message and wrong not in message


def test_a_block_for_another_registry_is_refused_before_its_password_goes_anywhere(
    project: dict[str, Any], registry: LocalRegistry
) -> None:
    """The manifest names the registry; the block must be for that same host, or a commit
    changing `[oci] repository` would send the block's password to any host it likes."""
    from dropship.ledger import lives

    state = _release_with_block(project, registry, password=registry.password, url="registry.example.invalid")
    assert not state.is_completed()
    assert lives(project["base"] / "state" / "runs" / str(state.state_details.flow_run_id)) == []
    message = str(state.message)
    assert f"is for registry registry.example.invalid, but [oci] repository names {registry.host}" in message
    assert registry.password not in message


def test_a_rerelease_reuses_the_stored_images_and_pushes_the_same_index_without_a_machine(
    published: dict[str, Any], project: dict[str, Any]
) -> None:
    from dropship.ledger import lives

    state, summary, run_dir = release(project, "v1.2.3")
    assert state.is_completed(), summary["error"]
    assert {t["name"]: t["status"] for t in summary["targets"]} == dict.fromkeys(TARGETS, "reused")
    assert lives(run_dir) == []  # no machine at all
    assert summary["image"]["digest"] == published["summary"]["image"]["digest"]
    assert summary["image"]["platforms"] == published["summary"]["image"]["platforms"]
    assert summary["image"]["tagged"] and set(summary["image"]["previous"].values()) == {summary["image"]["digest"]}


def test_promote_and_rollback_move_image_tags_without_a_build_or_machine(
    published: dict[str, Any], project: dict[str, Any], registry: LocalRegistry
) -> None:
    from flows.promote import promote
    from flows.release import release as release_flow
    from flows.rollback import rollback

    workdir = str(project["base"] / "state")
    manifest = str(project["repo"] / "dropship.toml")
    first = build_runs()
    state = release_flow(manifest=manifest, ref="main", targets=TARGETS, workdir=workdir, return_state=True)
    assert state.is_completed()
    run_dir = project["base"] / "state" / "runs" / str(state.state_details.flow_run_id)
    dev = json.loads((run_dir / "summary.json").read_text())
    assert dev["image"]["tags"] == ["nightly", f"dev-{dev['commit'][:12]}"] and dev["image"]["tagged"]
    builds_before = build_runs()
    assert builds_before == first + len(TARGETS)  # the development build built each target on a machine

    promote(manifest=manifest, build=dev["release_id"], as_tag="v2.0.0", workdir=workdir)
    with Skopeo(registry.auth) as skopeo:
        assert current_tags(skopeo, project["repository"], ["2.0.0", "2.0", "latest", "1.2.3"]) == {
            "2.0.0": dev["image"]["digest"],
            "2.0": dev["image"]["digest"],
            "latest": dev["image"]["digest"],
            "1.2.3": published["summary"]["image"]["digest"],
        }

    result = rollback(manifest=manifest, to=published["summary"]["release_id"], workdir=workdir)
    assert result["image"]["digest"] == published["summary"]["image"]["digest"]
    with Skopeo(registry.auth) as skopeo:
        assert current_tags(skopeo, project["repository"], ["latest", "1.2", "2.0.0"]) == {
            "latest": published["summary"]["image"]["digest"],
            "1.2": published["summary"]["image"]["digest"],
            "2.0.0": dev["image"][
                "digest"
            ],  # a registry deletes manifests, not tags: the promoted version's own tag stays
        }
    assert build_runs() == builds_before  # no build ran, so no machine existed to run it


def build_runs() -> int:
    """How many runs of the `build` flow (one per target built on a machine) the server has."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        return len(client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["build"])), limit=200))


def test_a_tag_move_refused_after_publication_says_the_packages_are_out_and_a_rerun_moves_the_tags(
    prefect_server: str, tmp_path: Path, registry: LocalRegistry, signing_key: str
) -> None:
    """The registry takes the pushes by digest, then refuses every tag: the packages are out and can't be
    taken back, so the release fails saying so and how to finish; the same release again moves the tags
    with no machine."""

    from dropship.ledger import lives

    refusing = True
    tags = ["2.0.0", "2.0", "latest"]
    proxy = RefusingProxy(
        registry.host,
        lambda method, path: refusing and method == "PUT" and "/manifests/" in path and "sha256:" not in path,
    )
    try:
        repo = prepare_repository(tmp_path / "hello", "v0.1.0")
        blocks = {'"hello-signing-key"': '"tagfault-key"', '"hello-repo"': '"tagfault-repo"'}
        write_example_with_oci(
            repo, f"{proxy.host}/tagfault/hello", replace={**blocks, '"hello-registry"': '"tagfault-registry"'}
        )
        commit_and_tag(repo, "v2.0.0")
        save_release_blocks(
            signing_key,
            tmp_path / "published",
            key_block="tagfault-key",
            repo_block="tagfault-repo",
            registry=registry,
            registry_block="tagfault-registry",
            registry_url=proxy.host,
        )
        project = {"repo": repo, "base": tmp_path}

        state, summary, _ = release(project, "v2.0.0", ["amd64-deb", "amd64-image"])
        assert not state.is_completed()
        assert proxy.refused, "the proxy refused nothing: the fault never happened"
        assert summary["error"].startswith("v2.0.0's packages are published, but its image tags did not move ("), (
            summary["error"]
        )
        assert summary["error"].endswith("run `dropship release v2.0.0` again to move them; nothing is rebuilt")
        assert registry.password not in summary["error"]
        current = tmp_path / "published" / "current"
        assert "v2.0.0" in current.resolve().name  # the packages are out
        with Skopeo(registry.auth) as skopeo:
            assert set(current_tags(skopeo, registry.repository("tagfault/hello"), tags).values()) == {None}

        refusing = False
        state, summary, run_dir = release(project, "v2.0.0", ["amd64-deb", "amd64-image"])
        assert state.is_completed(), summary["error"]
        assert lives(run_dir) == [] and summary["image"]["tagged"]
        assert summary["image"]["tags"] == tags
        with Skopeo(registry.auth) as skopeo:
            moved = current_tags(skopeo, registry.repository("tagfault/hello"), tags)
        assert moved == dict.fromkeys(tags, summary["image"]["digest"])
    finally:
        proxy.close()
