"""End to end: jobs around the builds on a real Prefect server and real local
machines. Integration jobs install from the signed tree with the real apt-get
and dnf on fresh machines; a real pypiserver receives the wheel and a real
verdaccio an npm tarball; manual gates are answered through the Prefect API as
the UI does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dropship.demo import GIT_IDENTITY, prepare_repository
from dropship.ledger import lives
from dropship.machines.local import LocalProvider
from tests.npm_registry import Verdaccio, running_verdaccio
from tests.support import machine_processes_under, run_logs, save_release_blocks, secret_leaks

pytestmark = pytest.mark.e2e


MANIFEST = """
[project]
name = "hello"
source = "."
test = ["sh", "tests/run.sh"]

[[targets]]
name = "amd64-deb"
arch = "amd64"
format = "deb"
build = ["sh", "packaging/build.sh", "deb", "amd64"]
artifacts = ["out/*.deb"]
rebuild_patterns = ["^src/", "^packaging/"]

[[targets]]
name = "amd64-rpm"
arch = "amd64"
format = "rpm"
build = ["sh", "packaging/build.sh", "rpm", "amd64"]
artifacts = ["out/*.rpm"]
rebuild_patterns = ["^src/", "^packaging/"]

[[targets]]
name = "python-wheel"
arch = "amd64"
build = ["python3", "python/build_wheel.py", "out/python"]
rebuild_patterns = ["^python/"]
packages = [{ kind = "wheel", glob = "out/python/*.whl", registry = "test-pypi" }]

[[jobs]]
name = "install-deb"
kind = "integration"
arch = "amd64"
needs = ["amd64-deb"]
command = ["hello", "--version"]

[[jobs]]
name = "install-rpm"
kind = "integration"
arch = "amd64"
needs = ["amd64-rpm"]
command = ["hello", "--version"]

[[jobs]]
name = "docs"
kind = "docs"
command = ["sh", "-c", 'mkdir -p out/docs && echo "<h1>hello $DROPSHIP_VERSION</h1>" > out/docs/index.html']
output = "out/docs"

[[registries]]
name = "test-pypi"
kind = "pypi"
url = "http://127.0.0.1:{port}/"
credentials = "test-pypi-credentials"

[repository]
key_name = "hello-release"

[blocks]
signing_key = "hello-signing-key"
repo_server = "{repo_block}"
"""

GATED = """
[project]
name = "hello"
source = "."

[[targets]]
name = "amd64-deb"
arch = "amd64"
format = "deb"
build = ["sh", "packaging/build.sh", "deb", "amd64"]
artifacts = ["out/*.deb"]

[[jobs]]
name = "approval"
kind = "manual"
classes = ["stable"]
timeout = {timeout}

[repository]
key_name = "hello-release"

[blocks]
signing_key = "hello-signing-key"
repo_server = "{repo_block}"
"""


def commit_tag(
    repo: Path, tag: str, manifest: str | None = None, edits: dict[str, tuple[str, str]] | None = None
) -> None:
    if manifest is not None:
        (repo / "dropship.toml").write_text(manifest)
    for file, (old, new) in (edits or {}).items():
        text = (repo / file).read_text()
        assert old in text
        (repo / file).write_text(text.replace(old, new))
    git = ["git", *GIT_IDENTITY, "-C", str(repo)]
    subprocess.run([*git, "commit", "-qam", f"for {tag}", "--allow-empty"], check=True)
    subprocess.run([*git, "tag", "-f", "-a", tag, "-m", tag], check=True, capture_output=True)


@pytest.fixture(scope="module")
def world(prefect_server: str, tmp_path_factory: pytest.TempPathFactory, signing_key: str) -> Iterator[dict[str, Any]]:
    from blocks.registry import RegistryCredentials
    from blocks.repo_server import RepoServer
    from dropship.package_index import USER, LocalPackageIndex

    base = tmp_path_factory.mktemp("jobs")
    pypi = LocalPackageIndex(base / "pypi")  # the index `dropship demo` runs: pypiserver with htpasswd
    pypi.start()
    password = pypi.password_file.read_text().strip()
    try:
        save_release_blocks(signing_key, base / "published", repo_block="jobs-repo")
        RepoServer(path=str(base / "gated-published")).save("gated-repo", overwrite=True)
        RegistryCredentials(username=USER, password=password).save("test-pypi-credentials", overwrite=True)
        repo = prepare_repository(base / "hello", "v0.0.1")
        yield {
            "base": base,
            "repo": repo,
            "pypi": pypi,
            "password": password,
            "workdir": base / "state",
            "manifest": MANIFEST.replace("{port}", str(pypi.port)).replace("{repo_block}", "jobs-repo"),
        }
    finally:
        pypi.stop()


def _release(world: dict[str, Any], tag: str, workdir: Path | None = None) -> Any:
    from flows.release import release

    return release(
        manifest=str(world["repo"] / "dropship.toml"),
        tag=tag,
        workdir=str(workdir or world["workdir"]),
        return_state=True,
    )


def _run_dir(world: dict[str, Any], state: Any, workdir: Path | None = None) -> Path:
    return (workdir or world["workdir"]) / "runs" / str(state.state_details.flow_run_id)


def _no_machine(workdir: Path, run_dir: Path) -> None:
    assert machine_processes_under(workdir) == []
    assert LocalProvider(workdir / "local").list() == []
    assert all(life.deleted is not None for life in lives(run_dir))


def test_good_release_installs_on_fresh_machines_and_publishes_the_wheel(world: dict[str, Any], tmp_path: Path) -> None:
    commit_tag(world["repo"], "v0.1.0", world["manifest"])
    state = _release(world, "v0.1.0")
    assert state.is_completed(), state.message
    run_dir = _run_dir(world, state)
    jobs = {j["name"]: j for j in json.loads((run_dir / "jobs.json").read_text())}
    assert jobs["install-deb"]["status"] == "passed" and jobs["install-rpm"]["status"] == "passed"
    # what the job's command printed is in its log, not in its record or the summary
    summary = json.loads((run_dir / "summary.json").read_text())
    assert all("output" not in j for j in [*jobs.values(), *summary["jobs"]])
    printed = [log.message for log in run_logs([run_dir.name]) if " passed on " in log.message]
    assert sorted(m.split(" passed on ")[0] for m in printed if m.endswith("\nhello 0.1.0")) == [
        "install-deb",
        "install-rpm",
    ]
    assert "hello:amd64=0.1.0" in jobs["install-deb"]["detail"]
    assert "hello-0.1.0-1.x86_64" in jobs["install-rpm"]["detail"]
    machines = {life.target: life for life in lives(run_dir)}
    # fresh machines, not the build machines: their own names and lives
    assert {"job:install-deb", "job:install-rpm", "amd64-deb", "amd64-rpm"} <= set(machines)
    assert machines["job:install-deb"].name != machines["amd64-deb"].name
    assert machines["job:install-deb"].created >= machines["amd64-deb"].deleted
    _no_machine(world["workdir"], run_dir)
    current = world["base"] / "published" / "current"
    assert (current / "dists" / "stable" / "InRelease").exists()
    # the docs job's files are published beside the repository and linked from its index page
    assert (current / "docs" / "0.1.0" / "index.html").read_text().strip() == "<h1>hello 0.1.0</h1>"
    assert 'href="docs/0.1.0/"' in (current / "index.html").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {j["name"]: j["status"] for j in summary["jobs"]} == {
        "install-deb": "passed",
        "install-rpm": "passed",
        "docs": "passed",
    }
    assert [p["file"] for p in summary["language_packages"]] == ["hello_dropship-0.1.0-py3-none-any.whl"]
    # the wheel reached the index and pip installs it from there
    (uploaded,) = json.loads((run_dir / "registries.json").read_text())
    assert uploaded["status"] == "uploaded" and uploaded["file"] == "hello_dropship-0.1.0-py3-none-any.whl"
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-cache-dir",
            "--isolated",
            "--target",
            str(target),
            "--index-url",
            f"http://127.0.0.1:{world['pypi'].port}/simple/",
            "hello-dropship==0.1.0",
        ],
        check=True,
    )
    done = subprocess.run(
        [sys.executable, "-c", "import hello_dropship; print(hello_dropship.greeting())"],
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "Hello from dropship 0.1.0!"

    # the same release again: nothing new is published, and it succeeds
    again = _release(world, "v0.1.0")
    assert again.is_completed(), again.message
    (same,) = json.loads((_run_dir(world, again) / "registries.json").read_text())
    assert same["status"] == "already published" and same["sha256"] == uploaded["sha256"]


def test_changed_wheel_under_the_same_version_is_refused(world: dict[str, Any]) -> None:
    current = world["base"] / "published" / "current"
    before = os.readlink(current) if current.is_symlink() else None
    commit_tag(
        world["repo"], "v0.1.0", world["manifest"], {"python/hello_dropship/__init__.py": ("Hello from", "Hi from")}
    )
    state = _release(world, "v0.1.0")
    assert state.is_failed()
    assert "already has hello_dropship-0.1.0-py3-none-any.whl" in state.message
    assert "a published version never changes" in state.message
    assert (os.readlink(current) if current.is_symlink() else None) == before, "nothing was published"
    commit_tag(world["repo"], "v0.1.0", None, {"python/hello_dropship/__init__.py": ("Hi from", "Hello from")})


def test_missing_dependency_fails_the_integration_job_and_publishes_nothing(world: dict[str, Any]) -> None:
    current = world["base"] / "published" / "current"
    before = os.readlink(current) if current.is_symlink() else None
    commit_tag(
        world["repo"],
        "v0.2.0",
        world["manifest"],
        {"packaging/build.sh": ("Section: utils\n", "Section: utils\nDepends: libdropship-missing (>= 1)\n")},
    )
    try:
        state = _release(world, "v0.2.0")
    finally:
        commit_tag(world["repo"], "v0.2.1", None, {"packaging/build.sh": ("Depends: libdropship-missing (>= 1)\n", "")})
    assert state.is_failed()
    message = state.message
    assert "install-deb" in message and "nothing was published" in message
    assert "Depends: libdropship-missing (>= 1) but it is not installable" in message, message
    assert message.count("libdropship-missing") == 1, "the failing job's error is named once"
    assert (os.readlink(current) if current.is_symlink() else None) == before
    run_dir = _run_dir(world, state)
    jobs = {j["name"]: j for j in json.loads((run_dir / "jobs.json").read_text())}
    assert jobs["install-deb"]["status"] == "failed" and jobs["install-rpm"]["status"] == "passed"
    assert not (run_dir / "registries.json").exists()
    _no_machine(world["workdir"], run_dir)


def test_no_registry_credential_in_logs_artifacts_or_files(world: dict[str, Any]) -> None:
    assert any(world["workdir"].glob("runs/*/registries.json")), "run after a release that published"
    runs = [p.name for p in (world["workdir"] / "runs").iterdir()]
    assert secret_leaks(world["password"], runs, world["workdir"]) == []


# --- an npm package to a real verdaccio ----------------------------------------

NPM_PASSWORD = "npm-secret-Rw4ePz9K"

# The build machine needs nothing but sh, tar and gzip: the tarball has the
# layout `npm pack` writes (package/package.json), with fixed times and owners
# so that the same release builds the same bytes. (A build command is one line.)
NPM_BUILD = (
    "set -e; mkdir -p out/npm/package; "
    """printf '{"name": "hello-dropship", "version": "%s", "description": "GREETING"}\\n' "$DROPSHIP_VERSION" """
    "> out/npm/package/package.json; "
    'tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner -C out/npm -cf - package '
    '| gzip -n > "out/hello-dropship-$DROPSHIP_VERSION.tgz"'
)
NPM_MANIFEST = """
[project]
name = "hello"
source = "."

[[targets]]
name = "npm-package"
arch = "amd64"
build = ["sh", "-c", BUILD]
packages = [{ kind = "npm", glob = "out/*.tgz", registry = "test-npm" }]

[[registries]]
name = "test-npm"
kind = "npm"
url = "{url}"
credentials = "test-npm-credentials"

[repository]
key_name = "hello-release"

[blocks]
signing_key = "hello-signing-key"
repo_server = "npm-repo"
"""


@pytest.fixture(scope="module")
def npm_world(
    prefect_server: str, tmp_path_factory: pytest.TempPathFactory, signing_key: str
) -> Iterator[dict[str, Any]]:
    from blocks.registry import RegistryCredentials

    base = tmp_path_factory.mktemp("npm-jobs")
    with running_verdaccio(base / "verdaccio", "uploader", NPM_PASSWORD) as verdaccio:
        save_release_blocks(signing_key, base / "published", repo_block="npm-repo")
        RegistryCredentials(username="uploader", password=NPM_PASSWORD).save("test-npm-credentials", overwrite=True)
        yield {
            "base": base,
            "repo": prepare_repository(base / "hello", "v0.0.1"),
            "verdaccio": verdaccio,
            "workdir": base / "state",
            "manifest": NPM_MANIFEST.replace("{url}", verdaccio.url).replace("BUILD", json.dumps(NPM_BUILD)),
        }


def test_npm_package_reaches_the_registry_once_and_never_changes(npm_world: dict[str, Any]) -> None:

    verdaccio: Verdaccio = npm_world["verdaccio"]
    repo, workdir = npm_world["repo"], npm_world["workdir"]
    commit_tag(repo, "v0.3.0", npm_world["manifest"].replace("GREETING", "hello"))
    state = _release(npm_world, "v0.3.0", workdir)
    assert state.is_completed(), state.message
    run_dir = _run_dir(npm_world, state, workdir)
    (uploaded,) = json.loads((run_dir / "registries.json").read_text())
    assert (uploaded["file"], uploaded["registry"], uploaded["status"]) == (
        "hello-dropship-0.3.0.tgz",
        "test-npm",
        "uploaded",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [p["file"] for p in summary["language_packages"]] == ["hello-dropship-0.3.0.tgz"]
    served = verdaccio.view("hello-dropship@0.3.0", "version", "description", "dist-tags")
    assert served == {"version": "0.3.0", "description": "hello", "dist-tags": {"latest": "0.3.0"}}
    _no_machine(workdir, run_dir)

    # the same release again builds the same bytes: already published, and it succeeds
    again = _release(npm_world, "v0.3.0", workdir)
    assert again.is_completed(), again.message
    (same,) = json.loads((_run_dir(npm_world, again, workdir) / "registries.json").read_text())
    assert same["status"] == "already published" and same["sha256"] == uploaded["sha256"]

    # other bytes under the same version: the release fails before publishing anything
    current = npm_world["base"] / "published" / "current"
    before = os.readlink(current) if current.is_symlink() else None
    commit_tag(repo, "v0.3.0", npm_world["manifest"].replace("GREETING", "changed"))
    changed = _release(npm_world, "v0.3.0", workdir)
    assert changed.is_failed()
    assert "registry test-npm already has hello-dropship@0.3.0 with sha512-" in changed.message, changed.message
    assert "a published version never changes" in changed.message
    assert (os.readlink(current) if current.is_symlink() else None) == before, "nothing was published"
    assert verdaccio.view("hello-dropship@0.3.0", "description") == "hello"
    _no_machine(workdir, _run_dir(npm_world, changed, workdir))

    # the registry password is in no log, artifact or file of these runs
    runs = [p.name for p in (workdir / "runs").iterdir()]
    assert secret_leaks(NPM_PASSWORD, runs, workdir) == []


# --- the manual gate ---------------------------------------------------------


def _paused_run(since: float, timeout: float = 240) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
            runs = [r for r in runs if r.created and r.created.timestamp() >= since]
            if runs:
                return runs[0]
            time.sleep(0.5)
    raise AssertionError("the release never paused for approval")


def _gated(world: dict[str, Any], tag: str, timeout: int, answer: dict[str, Any] | None) -> tuple[Any, Path]:
    from prefect.flow_runs import resume_flow_run

    repo = world["base"] / "gated"
    if not repo.exists():
        prepare_repository(repo, "v0.0.1")
    commit_tag(repo, tag, GATED.replace("{timeout}", str(timeout)).replace("{repo_block}", "gated-repo"))
    workdir = world["base"] / "gated-state"
    result: list[Any] = []
    since = time.time() - 1
    from flows.release import release

    worker = threading.Thread(
        target=lambda: result.append(
            release(manifest=str(repo / "dropship.toml"), tag=tag, workdir=str(workdir), return_state=True)
        )
    )
    worker.start()
    try:
        paused = _paused_run(since)
        # no machine is alive while the release waits
        assert machine_processes_under(workdir) == []
        assert LocalProvider(workdir / "local").list() == []
        if answer is not None:
            resume_flow_run(paused.id, run_input=answer)
    finally:
        worker.join(timeout=timeout + 240)
    (state,) = result
    return state, workdir


def _gated_current(world: dict[str, Any]) -> str | None:
    current = world["base"] / "gated-published" / "current"
    return os.readlink(current) if current.is_symlink() else None


def test_manual_gate_approved_through_the_api_publishes(world: dict[str, Any]) -> None:
    state, workdir = _gated(world, "v1.0.0", 300, {"approve": True, "reason": "checked the changelog"})
    assert state.is_completed(), state.message
    assert _gated_current(world) is not None and "v1.0.0" in _gated_current(world)
    jobs = json.loads((workdir / "runs" / str(state.state_details.flow_run_id) / "jobs.json").read_text())
    assert jobs == [
        {
            "name": "approval",
            "kind": "manual",
            "status": "approved",
            "seconds": 0.0,
            "machine": "",
            "detail": "checked the changelog",
            "extra": {},
        }
    ]


def test_manual_gate_rejected_publishes_nothing(world: dict[str, Any]) -> None:
    before = _gated_current(world)
    state, workdir = _gated(world, "v1.1.0", 300, {"approve": False, "reason": "wrong changelog"})
    assert state.is_failed() and "job approval: rejected: wrong changelog" in state.message
    assert _gated_current(world) == before
    _no_machine(workdir, workdir / "runs" / str(state.state_details.flow_run_id))


def test_manual_gate_timed_out_publishes_nothing(world: dict[str, Any]) -> None:
    before = _gated_current(world)
    state, workdir = _gated(world, "v1.2.0", 6, None)
    # Prefect's server fails a run whose pause timed out, with its own message
    assert state.is_failed()
    run_dir = workdir / "runs" / str(state.state_details.flow_run_id)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "job approval: no approval within 6 s" in summary["error"]
    (job,) = json.loads((run_dir / "jobs.json").read_text())
    assert job["status"] == "timed out"
    assert _gated_current(world) == before
    _no_machine(workdir, workdir / "runs" / str(state.state_details.flow_run_id))
