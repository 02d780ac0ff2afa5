"""End to end: the release flow on a real Prefect server, with real workers on
local machines (sshd + `prefect worker start`), real gpg/rpmsign/createrepo_c,
and real apt-get, rpm and dnf reading the result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dropship.demo import prepare_repository
from dropship.ledger import lives
from dropship.machines.local import LocalProvider
from tests.clients import AptClient, DnfClient, rpm_verify, run_packaged_hello
from tests.support import (
    child_runs,
    commit_and_tag,
    machine_processes_under,
    processes_with_env,
    run_logs,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo release, run once for the module."""
    from flows.demo import run_demo

    workdir = tmp_path_factory.mktemp("demo")
    ok, message = run_demo(workdir, "v0.1.0")
    assert ok, message
    return {"workdir": workdir, "message": message, "summary": json.loads((workdir / "summary.json").read_text())}


def test_demo_release_is_published_and_summarised(demo: dict[str, Any]) -> None:
    workdir, summary = demo["workdir"], demo["summary"]
    assert summary["status"] == "published" and summary["release_class"] == "stable"
    assert summary["machines_created"] == 6  # five targets and the integration job's fresh machine
    assert [t["name"] for t in summary["targets"]] == [
        "amd64-deb",
        "arm64-deb",
        "amd64-rpm",
        "arm64-rpm",
        "python-wheel",
    ]
    current = workdir / "published" / "current"
    assert os.readlink(current) == f"releases/{summary['release_id']}"
    for target in summary["targets"][:4]:
        assert target["status"] == "built" and target["machine_seconds"] > 0 and target["build_seconds"] >= 0
        (artifact,) = target["artifacts"]
        published = list(current.rglob(artifact["name"]))
        assert published, f"{artifact['name']} is not in the published tree"
        from dropship.repos.files import sha256_file

        if artifact["name"].endswith(".deb"):
            assert sha256_file(published[0]) == artifact["sha256"]  # RPMs are re-signed, so they differ
    assert (current / "keys" / "hello-release.asc").exists() and (current / "keys" / "hello-release.gpg").exists()
    assert "apt-get install hello=0.1.0" in demo["message"]


def test_build_ran_on_each_machines_worker(demo: dict[str, Any]) -> None:
    runs = child_runs(demo["summary"]["run_id"])
    assert sorted(r.name for r in runs) == [
        f"hello-v0.1.0-{t}" for t in ("amd64-deb", "amd64-rpm", "arm64-deb", "arm64-rpm", "python-wheel")
    ]
    assert all(r.state.is_completed() for r in runs)
    queues = {r.work_queue_name for r in runs}
    assert len(queues) == 5 and all(q.startswith("hello-") for q in queues)


def test_runs_are_named_after_what_they_do(demo: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
    )

    run_id = demo["summary"]["run_id"]
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])), task_run_filter=TaskRunFilter()
        )
    assert run.name == "hello v0.1.0"
    names = [t.name for t in tasks]
    for target in ("amd64-deb", "arm64-deb", "amd64-rpm", "arm64-rpm"):
        # one task run per built target: provisioning, building and collecting are its log lines
        assert names.count(f"build {target}") == 1, sorted(names)
    assert not [n for n in names if n.startswith(("provision ", "collect ", "reuse or build ", "target "))], names


def test_each_build_run_hangs_under_its_build_task_run_and_has_no_task_run_of_its_own(demo: dict[str, Any]) -> None:
    """The UI nests a machine's build run under `build <target>` (through run_deployment's link task
    run), and the build run is the build: a task run inside it would cost the server for nothing."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterId

    run_id = demo["summary"]["run_id"]
    builds = child_runs(run_id)
    with get_client(sync_client=True) as client:
        tasks = {
            t.id: t
            for t in client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])), task_run_filter=TaskRunFilter()
            )
        }
        inside = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[b.id for b in builds])),
            task_run_filter=TaskRunFilter(),
        )
        assert inside == [], [t.name for t in inside]
        for build in builds:
            target = build.name.removeprefix("hello-v0.1.0-")
            assert build.parent_task_run_id is not None
            (link,) = client.read_task_runs(
                task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=[build.parent_task_run_id]))
            )
            parents = [p.id for p in link.task_inputs.get("__parents__", [])]
            assert [tasks[p].name for p in parents if p in tasks] == [f"build {target}"], (build.name, parents)


def test_a_published_release_shows_no_error_in_its_build_runs(demo: dict[str, Any]) -> None:
    """What a person sees in the UI: a build run that completed logs no ERROR. Deleting the machine
    right after its build used to break the pipe the build's last log lines went to (1–2 builds in 5)."""
    builds = child_runs(demo["summary"]["run_id"])
    assert builds and all(b.state is not None and b.state.is_completed() for b in builds)
    errors = [log.message.splitlines()[0] for log in run_logs([str(b.id) for b in builds]) if log.level >= 40]
    assert errors == []


def test_no_machine_or_worker_is_left(demo: dict[str, Any]) -> None:
    assert machine_processes_under(demo["workdir"]) == []
    assert LocalProvider(demo["workdir"] / "state" / "local").list() == []
    run_dir = demo["workdir"] / "state" / "runs" / demo["summary"]["run_id"]
    assert all(life.deleted is not None for life in lives(run_dir))
    assert not (run_dir / "ssh").exists(), "the run's SSH key is removed at the end"


def test_apt_get_installs_the_published_hello(demo: dict[str, Any], tmp_path: Path, serve) -> None:
    current = demo["workdir"] / "published" / "current"
    client = AptClient(tmp_path / "apt", serve(current), current / "keys" / "hello-release.gpg", "stable")
    client.update()
    deb = client.download("hello")
    assert run_packaged_hello(deb, tmp_path / "root") == "Hello from dropship 0.1.0!"


def test_rpm_and_dnf_verify_the_published_rpms(demo: dict[str, Any], tmp_path: Path, serve) -> None:
    current = demo["workdir"] / "published" / "current"
    rpms = sorted(current.glob("rpm/stable/*/packages/*.rpm"))
    assert [p.parent.parent.name for p in rpms] == ["aarch64", "x86_64"]
    assert (
        rpm_verify(current / "keys" / "hello-release.asc", rpms, tmp_path / "rpmdb").count("digests signatures OK") == 2
    )
    url = serve(current)
    repo_file = (current / "rpm" / "stable.repo").read_text().replace(f"file://{current}", url)
    rpm = DnfClient(tmp_path / "dnf", repo_file, f"{url}/keys/hello-release.asc").download("hello")
    assert rpm.name == "hello-0.1.0-1.x86_64.rpm"


def test_second_release_keeps_both_versions_signed_by_the_same_key(demo: dict[str, Any], tmp_path: Path, serve) -> None:
    from flows.demo import run_demo

    workdir = demo["workdir"]
    ok, message = run_demo(workdir, "v0.1.1")
    assert ok, message
    current = workdir / "published" / "current"
    assert len(list((workdir / "published" / "releases").iterdir())) == 2
    client = AptClient(tmp_path / "apt", serve(current), current / "keys" / "hello-release.gpg", "stable")
    client.update()
    policy = client.policy("hello")
    assert "Candidate: 0.1.1" in policy and "0.1.0 500" in policy
    assert run_packaged_hello(client.download("hello"), tmp_path / "root") == "Hello from dropship 0.1.1!"
    rpms = sorted(current.glob("rpm/stable/*/packages/*.rpm"))
    assert len(rpms) == 4
    assert (
        rpm_verify(current / "keys" / "hello-release.asc", rpms, tmp_path / "rpmdb").count("digests signatures OK") == 4
    )


def test_failing_target_publishes_nothing_and_leaves_no_machine(demo: dict[str, Any]) -> None:
    from flows.release import release

    workdir = demo["workdir"]
    repo = workdir / "hello"
    before = os.readlink(workdir / "published" / "current")
    commit_and_tag(
        repo,
        "v0.2.0",
        {
            'build = ["sh", "packaging/build.sh", "rpm", "arm64"]': 'build = ["sh", "-c", "echo arm64 toolchain is broken >&2; exit 3"]'
        },
    )
    state = release(
        manifest=str(repo / "dropship.toml"), tag="v0.2.0", workdir=str(workdir / "state"), return_state=True
    )
    assert state.is_failed()
    assert "arm64-rpm" in state.message and "exit code 3" in state.message and "nothing was published" in state.message
    assert os.readlink(workdir / "published" / "current") == before
    run_id = str(state.state_details.flow_run_id)
    summary = json.loads((workdir / "state" / "runs" / run_id / "summary.json").read_text())
    assert summary["status"] == "failed"
    statuses = {t["name"]: t["status"] for t in summary["targets"]}
    assert statuses["arm64-rpm"] == "failed" and "arm64 toolchain is broken" in summary["targets"][3]["reason"]
    assert machine_processes_under(workdir) == []
    assert LocalProvider(workdir / "state" / "local").list() == []
    assert all(life.deleted is not None for life in lives(workdir / "state" / "runs" / run_id))
    assert not any(r.state.is_running() or r.state.is_scheduled() for r in child_runs(run_id))


@pytest.mark.parametrize(
    ("tag", "edit", "expected"),
    [
        ("v1.2", None, "tag 'v1.2' is neither a stable release"),
        ("v9.9.9", None, "tag 'v9.9.9' does not exist"),
        (
            "v0.3.0",
            {'test = ["sh", "tests/run.sh"]': 'test = ["sh", "-c", "echo 1 test failed; exit 1"]'},
            "test command failed with exit code 1",
        ),
        (
            "v0.4.0",
            {'arch = "arm64"\nformat = "rpm"': 'arch = "riscv"\nformat = "rpm"'},
            "targets[3].arch: expected one of 'amd64' or 'arm64', got 'riscv'",
        ),
    ],
)
def test_bad_input_stops_before_any_machine(
    demo: dict[str, Any], tmp_path: Path, tag: str, edit: Any, expected: str
) -> None:
    from flows.release import release

    repo = prepare_repository(tmp_path / "hello", "v0.1.0")
    if edit:
        commit_and_tag(repo, tag, edit)
    state = release(manifest=str(repo / "dropship.toml"), tag=tag, workdir=str(tmp_path / "state"), return_state=True)
    assert state.is_failed() and expected in state.message
    assert not list((tmp_path / "state").glob("runs/*/machines.jsonl")), "no machine may have been created"
    assert not (tmp_path / "state" / "local").exists()


def test_expiring_signing_key_stops_before_any_machine(demo: dict[str, Any], tmp_path: Path) -> None:
    from blocks.signing_key import SigningKey
    from dropship.signing import generate_key
    from flows.release import release

    saved = SigningKey.load("hello-signing-key")
    try:
        SigningKey(private_key=generate_key("soon", "soon@example.invalid", expire_days=5)).save(
            "hello-signing-key", overwrite=True
        )
        repo = prepare_repository(tmp_path / "hello", "v0.1.0")
        state = release(
            manifest=str(repo / "dropship.toml"), tag="v0.1.0", workdir=str(tmp_path / "state"), return_state=True
        )
        assert state.is_failed() and "within the required 30 days" in state.message
        assert not (tmp_path / "state" / "local").exists()
    finally:
        saved.save("hello-signing-key", overwrite=True)


def test_dropship_demo_command(tmp_path: Path) -> None:
    """The README's main job, as a user runs it: its own server, exit 0, nothing left."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    done = subprocess.run(
        [sys.executable, "-m", "cli", "demo", "--workdir", str(tmp_path / "demo"), "--tag", "v1.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Published hello v1.0.0 (stable" in done.stdout
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["status"] == "published" and summary["version"] == "1.0.0"
    assert (tmp_path / "demo" / "published" / "current" / "dists" / "stable" / "InRelease").exists()
    assert machine_processes_under(tmp_path / "demo") == []
    # the demo's Prefect server runs with PREFECT_HOME under the demo folder
    assert processes_with_env(f"PREFECT_HOME={tmp_path / 'demo'}".encode()) == [], "a process of the demo outlived it"
