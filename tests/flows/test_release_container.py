"""End to end: a target built in a container image (`container = "<image>"`) by the release flow on
a real Prefect server and local machines. The image is the emulator's cached debootstrap Debian plus
one tool this host lacks (`dropship-stamp`), pushed to a real htpasswd registry (`tests/registry.py`);
each machine's build flow pulls it by digest into a dockerd of its own and runs the build there
through prefect-docker's tasks. The same target without `container` fails for want of the tool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from dropship.emulator.dockerd import DockerDaemon
from dropship.ledger import lives
from dropship.oci_registry import LocalRegistry
from tests.projects import BUILD_DEB, BUILD_STAMP, STAMP, TOOL, git
from tests.registry import push_image
from tests.support import child_runs, machine_processes_under, run_logs, save_release_blocks, secret_leaks

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.geteuid() != 0, reason="dockerd needs root")]

MANIFEST = """\
[project]
name = "stamp"

[[targets]]
name = "base-deb"
arch = "amd64"
format = "deb"
build = ["sh", "build-base.sh", "base"]
artifacts = ["out/base_*.deb"]

[[targets]]
name = "stamp-deb"
arch = "amd64"
format = "deb"
build = ["sh", "build-stamp.sh"]
artifacts = ["out/stamp_*.deb"]
env = {{ STAMP_FLAVOUR = "plain" }}
depends_on = ["base-deb"]
setup = ["docker.io"]
{container}

[blocks]
signing_key = "stamp-signing-key"
repo_server = "stamp-repo"
"""


def manifest(container: str | None, credentials: str = "stamp-registry") -> str:
    line = f'container = "{container}"\ncontainer_credentials = "{credentials}"' if container else ""
    return MANIFEST.format(container=line)


@pytest.fixture(scope="module")
def tools(registry: LocalRegistry, dockerd: DockerDaemon, stock_image: str) -> dict[str, str]:
    """The build image: debootstrap Debian + dropship-stamp, pushed as build/stamp-tools:1."""
    assert shutil.which("dropship-stamp") is None, "the host must lack the image's tool"
    repository = registry.repository("build/stamp-tools")
    started = time.monotonic()
    digest = push_image(dockerd, registry, repository, "1", {TOOL: STAMP}, base=stock_image)
    print(f"\n[container] build image built and pushed in {time.monotonic() - started:.1f} s", flush=True)
    return {"repository": repository, "reference": f"{repository}:1", "digest": digest, "base": stock_image}


@pytest.fixture(scope="module")
def project(
    prefect_server: str,
    tmp_path_factory: pytest.TempPathFactory,
    signing_key: str,
    registry: LocalRegistry,
    tools: dict[str, str],
) -> dict[str, Any]:

    base = tmp_path_factory.mktemp("container-release")
    repo = base / "stamp"
    repo.mkdir()
    (repo / "build-base.sh").write_text(BUILD_DEB)
    (repo / "build-stamp.sh").write_text(BUILD_STAMP)
    (repo / "dropship.toml").write_text(manifest(tools["reference"]))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "stamp")
    git(repo, "tag", "-a", "v1.0.0", "-m", "v1.0.0")
    save_release_blocks(
        signing_key,
        base / "published",
        key_block="stamp-signing-key",
        repo_block="stamp-repo",
        registry=registry,
        registry_block="stamp-registry",
    )
    return {"base": base, "repo": repo, "runs": []}


def dockerds_under(folder: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"dockerd" in cmdline.split(b"\0")[0] and str(folder).encode() in cmdline:
                found.append(int(entry.name))
    return found


def release(project: dict[str, Any], tag: str = "v1.0.0", manifest_file: str = "dropship.toml") -> dict[str, Any]:
    from flows.release import release as release_flow

    started = time.monotonic()
    state = release_flow(
        manifest=str(project["repo"] / manifest_file),
        tag=tag,
        workdir=str(project["base"] / "state"),
        return_state=True,
    )
    print(f"\n[container] release {tag}: {time.monotonic() - started:.1f} s", flush=True)
    run_id = str(state.state_details.flow_run_id)
    project["runs"].append(run_id)
    run_dir = project["base"] / "state" / "runs" / run_id
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    assert machine_processes_under(project["base"]) == []
    assert dockerds_under(project["base"]) == []  # every build's dockerd stopped with its build
    return {"state": state, "summary": summary, "machines": len(lives(run_dir)), "run_dir": run_dir}


def targets(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in summary["targets"]}


@pytest.fixture(scope="module")
def first(project: dict[str, Any]) -> dict[str, Any]:
    return release(project)


def test_the_build_runs_in_the_image_with_its_tool_and_the_builds_environment(
    first: dict[str, Any], project: dict[str, Any], tools: dict[str, str]
) -> None:
    state, summary = first["state"], first["summary"]
    assert state.is_completed(), state.message
    assert summary["status"] == "published" and first["machines"] == 2
    built = targets(summary)
    assert built["stamp-deb"]["status"] == "built"
    print(
        "\n[container] build seconds: "
        + ", ".join(f"{n} {t['build_seconds']} (machine {t['machine_seconds']})" for n, t in built.items()),
        flush=True,
    )
    plan = json.loads((first["run_dir"] / "plan.json").read_text())
    assert plan["containers"] == {"stamp-deb": f"{tools['repository']}@{tools['digest']}"}
    assert built["stamp-deb"]["container"] == plan["containers"]["stamp-deb"] and built["base-deb"]["container"] == ""
    deb = project["base"] / "published" / "current" / "pool" / "main" / "s" / "stamp" / "stamp_1.0.0_amd64.deb"
    listing = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
    stamp = subprocess.run(
        ["tar", "-xO", "./usr/share/stamp/built-in"], input=listing, check=True, capture_output=True
    ).stdout.decode()
    lines = dict(line.split("=", 1) for line in stamp.splitlines())
    commit_time = subprocess.run(
        ["git", "-C", str(project["repo"]), "log", "-1", "--format=%ct", "v1.0.0"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert lines["version"] == "1.0.0" and lines["epoch"] == commit_time and lines["target"] == "stamp-deb"
    assert lines["deps"].split() == ["./base-deb/base_1.0.0_amd64.deb"]  # DROPSHIP_DEPS, mounted with the source
    assert lines["flavour"] == "plain" and lines["home"] == "writable"  # the manifest's env, the build's HOME
    # the image's own PATH (Docker's default: the image sets none) and locale, not the worker's
    assert lines["path"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" and lines["lang"] == ""


def test_the_same_target_without_container_fails_for_want_of_the_tool(project: dict[str, Any]) -> None:
    (project["repo"] / "plain.toml").write_text(manifest(None).replace('depends_on = ["base-deb"]\n', ""))
    from flows.release import release as release_flow

    state = release_flow(
        manifest=str(project["repo"] / "plain.toml"),
        tag="v1.0.0",
        targets=["stamp-deb"],
        workdir=str(project["base"] / "state"),
        return_state=True,
    )
    project["runs"].append(str(state.state_details.flow_run_id))
    assert not state.is_completed()
    message = str(state.message)
    assert "target stamp-deb: build of stamp-deb failed with exit code 127" in message
    assert "dropship-stamp: not found" in message
    assert machine_processes_under(project["base"]) == []


def test_an_unchanged_tag_reuses_and_a_moved_tag_rebuilds(
    first: dict[str, Any],
    project: dict[str, Any],
    registry: LocalRegistry,
    dockerd: DockerDaemon,
    tools: dict[str, str],
) -> None:
    again = release(project)
    assert again["state"].is_completed(), again["state"].message
    assert again["machines"] == 0 and targets(again["summary"])["stamp-deb"]["status"] == "reused"
    # the tag moves to another image (same tool, one more file): the target is built again in it
    moved = push_image(
        dockerd, registry, tools["repository"], "1", {TOOL: STAMP, "/etc/stamp-tools": "2\n"}, base=tools["base"]
    )
    assert moved != tools["digest"]
    rebuilt = release(project)
    assert rebuilt["state"].is_completed(), rebuilt["state"].message
    after = targets(rebuilt["summary"])
    assert after["stamp-deb"]["status"] == "built" and after["base-deb"]["status"] == "reused"
    assert after["stamp-deb"]["reason"] == "recipe, dependency or version changed"
    plan = json.loads((rebuilt["run_dir"] / "plan.json").read_text())
    assert plan["containers"]["stamp-deb"] == f"{tools['repository']}@{moved}"
    assert (
        rebuilt["machines"] == 1
    )  # the stamp target only; its .deb is the same (same tool), or publication would refuse it


@pytest.mark.parametrize(
    ("container", "credentials", "expected"),
    [
        ("{repository}:missing", "stamp-registry", "{repository}:missing is not in the registry {host} (no such tag)"),
        ("{repository}:1", "stamp-nowhere", "no DockerRegistryCredentials block 'stamp-nowhere'"),
        ("{repository}:1", "stamp-other-registry", "block 'stamp-other-registry' is for registry registry.other"),
    ],
)
def test_bad_images_and_blocks_stop_the_release_before_any_machine(
    project: dict[str, Any],
    registry: LocalRegistry,
    tools: dict[str, str],
    container: str,
    credentials: str,
    expected: str,
) -> None:
    from prefect_docker.credentials import DockerRegistryCredentials

    DockerRegistryCredentials(
        username=registry.username, password=registry.password, registry_url="registry.other.example"
    ).save("stamp-other-registry", overwrite=True)
    name = f"bad-{credentials}.toml"
    (project["repo"] / name).write_text(manifest(container.format(repository=tools["repository"]), credentials))
    from flows.release import release as release_flow

    state = release_flow(
        manifest=str(project["repo"] / name), tag="v1.0.0", workdir=str(project["base"] / "state"), return_state=True
    )
    run_id = str(state.state_details.flow_run_id)
    project["runs"].append(run_id)
    assert not state.is_completed()
    assert lives(project["base"] / "state" / "runs" / run_id) == []  # no machine was created
    message = str(state.message)
    assert expected.format(repository=tools["repository"], host=registry.host) in message
    assert registry.password not in message


def test_no_registry_password_in_any_log_artifact_or_summary(
    first: dict[str, Any], project: dict[str, Any], registry: LocalRegistry
) -> None:
    runs = list(project["runs"])
    children = [str(child.id) for run in runs for child in child_runs(run)]  # the machines' build runs
    pulls = [log.message for log in run_logs(runs + children) if log.message.startswith("pulled ")]
    assert pulls  # the build runs' logs are among them
    print("\n[container] " + "; ".join(m.split("@")[0] + " in" + m.rsplit(" in", 1)[1] for m in pulls), flush=True)
    assert secret_leaks(registry.password, runs, project["base"]) == []
