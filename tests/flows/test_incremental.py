"""Incremental releases on a real Prefect server with real machines: nothing
unchanged is built twice, and a no-change release creates no machine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dropship.demo import prepare_repository
from dropship.ledger import lives
from tests.support import commit_and_tag, machine_processes_under

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def project(prefect_server: str, tmp_path_factory: pytest.TempPathFactory, signing_key: str) -> dict[str, Any]:
    from blocks.repo_server import RepoServer
    from blocks.signing_key import SigningKey

    base = tmp_path_factory.mktemp("incremental")
    flag = base / "break-arm64-rpm"
    repo = prepare_repository(base / "hello", "v0.1.0")
    manifest = (repo / "dropship.toml").read_text()
    amd64_deb = 'setup = ["dpkg-dev"]\nrebuild_patterns = ["^src/", "^packaging/"]'
    assert amd64_deb in manifest, "the example's amd64-deb target changed: update this fixture"
    manifest = manifest.replace(
        amd64_deb, 'setup = ["dpkg-dev"]\nrebuild_patterns = ["^src/", "^packaging/", "^deb-amd64/"]', 1
    )
    manifest = manifest.replace(
        'build = ["sh", "packaging/build.sh", "deb", "arm64"]',
        'build = ["sh", "packaging/build.sh", "deb", "arm64"]\ndepends_on = ["amd64-deb"]',
    )
    manifest = manifest.replace(
        'build = ["sh", "packaging/build.sh", "rpm", "arm64"]',
        f'build = ["sh", "-c", "test ! -e {flag} || exit 3; exec sh packaging/build.sh rpm arm64"]',
    )
    manifest = manifest.split("\n# A pure-Python wheel")[0]  # the four package targets only, no jobs (#16)
    (repo / "dropship.toml").write_text(manifest)
    commit_and_tag(repo, "v0.1.1")
    SigningKey(private_key=signing_key).save("hello-signing-key", overwrite=True)
    RepoServer(path=str(base / "published")).save("hello-repo", overwrite=True)
    return {"base": base, "repo": repo, "flag": flag}


def release(project: dict[str, Any], **kwargs: Any) -> tuple[Any, dict[str, Any], int]:
    from flows.release import release as release_flow

    state = release_flow(
        manifest=str(project["repo"] / "dropship.toml"),
        ref="main",
        workdir=str(project["base"] / "state"),
        return_state=True,
        **kwargs,
    )
    run_dir = project["base"] / "state" / "runs" / str(state.state_details.flow_run_id)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert machine_processes_under(project["base"]) == []
    return state, summary, len(lives(run_dir))


def statuses(summary: dict[str, Any]) -> dict[str, str]:
    return {t["name"]: t["status"] for t in summary["targets"]}


def commit(project: dict[str, Any], path: str, text: str) -> None:
    file = project["repo"] / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    import subprocess

    from dropship.demo import GIT_IDENTITY

    subprocess.run(["git", *GIT_IDENTITY, "-C", str(project["repo"]), "add", "-A"], check=True)
    subprocess.run(["git", *GIT_IDENTITY, "-C", str(project["repo"]), "commit", "-qm", f"edit {path}"], check=True)


def test_first_release_builds_every_target(project: dict[str, Any]) -> None:
    state, summary, machines = release(project)
    assert state.is_completed(), state.message
    assert machines == 4 and set(statuses(summary).values()) == {"built"}
    assert {t["reason"] for t in summary["targets"]} == {"first build"}
    project["first"] = summary


def test_no_change_release_creates_no_machine(project: dict[str, Any]) -> None:
    state, summary, machines = release(project)
    assert state.is_completed(), state.message
    assert machines == 0 and set(statuses(summary).values()) == {"reused"}
    assert summary["status"] == "published"
    first = {a["sha256"] for t in project["first"]["targets"] for a in t["artifacts"]}
    assert {a["sha256"] for t in summary["targets"] for a in t["artifacts"]} == first, "the same packages"


def test_a_file_no_pattern_matches_rebuilds_nothing(project: dict[str, Any]) -> None:
    commit(project, "README.md", "docs only\n")
    state, summary, machines = release(project)
    assert state.is_completed(), state.message
    assert machines == 0 and set(statuses(summary).values()) == {"reused"}


def test_a_change_rebuilds_its_target_and_dependents_only(project: dict[str, Any]) -> None:
    commit(project, "deb-amd64/notes.txt", "only amd64-deb's patterns match this\n")
    state, summary, machines = release(project)
    assert state.is_completed(), state.message
    assert statuses(summary) == {
        "amd64-deb": "built",
        "arm64-deb": "built",
        "amd64-rpm": "reused",
        "arm64-rpm": "reused",
    }
    assert machines == 2
    reasons = {t["name"]: t["reason"] for t in summary["targets"]}
    assert reasons["amd64-deb"] == "changed: deb-amd64/notes.txt"
    assert reasons["arm64-deb"] == "recipe, dependency or version changed"


def test_a_failed_target_is_rebuilt_and_the_others_reused(project: dict[str, Any]) -> None:
    commit(project, "src/hello.c", (project["repo"] / "src/hello.c").read_text() + "/* touched */\n")
    project["flag"].write_text("broken")
    state, summary, machines = release(project)
    assert state.is_failed() and "arm64-rpm" in state.message
    assert machines == 4 and statuses(summary)["arm64-rpm"] == "failed"
    project["flag"].unlink()
    state, summary, machines = release(project)
    assert state.is_completed(), state.message
    assert machines == 1
    assert statuses(summary) == {
        "amd64-deb": "reused",
        "arm64-deb": "reused",
        "amd64-rpm": "reused",
        "arm64-rpm": "built",
    }


def test_a_tampered_store_entry_is_detected_and_rebuilt(project: dict[str, Any]) -> None:
    plans = sorted((project["base"] / "state" / "runs").glob("*/plan.json"), key=lambda p: p.stat().st_mtime)
    digest = json.loads(plans[-1].read_text())["content"]["amd64-deb"]["digest"]
    (stored,) = (project["base"] / "state" / "store" / "objects" / digest).glob("*.deb")
    stored.write_bytes(stored.read_bytes() + b"tampered")
    state, summary, machines = release(project)
    assert state.is_completed(), state.message
    assert machines == 1 and statuses(summary)["amd64-deb"] == "built"
    reason = {t["name"]: t["reason"] for t in summary["targets"]}["amd64-deb"]
    assert "fails its sha256 check" in reason


def test_force_rebuilds_everything(project: dict[str, Any]) -> None:
    state, summary, machines = release(project, force=True)
    assert state.is_completed(), state.message
    assert machines == 4 and {t["reason"] for t in summary["targets"]} == {"forced"}
