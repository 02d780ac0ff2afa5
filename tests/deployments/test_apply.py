"""Deployments on a fresh Prefect server: `prefect deploy` of deployments/prefect.yaml and
`dropship deployments apply` create the same thing, and applying twice changes nothing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments import Settings, deployment_specs
from dropship.orchestrator import HEARTBEAT_SECONDS
from dropship.prefect_server import LocalPrefectServer
from tests.servers import own_prefect_server
from tests.support import ROOT
from tests.support import run_ok as _run

EXPECTED = {
    "release/release-tag",
    "release/release-weekly",
    "promote/promote",
    "rollback/rollback",
    "reap/reap",
    "build/build",
}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalPrefectServer, dict[str, str]]]:
    with own_prefect_server(tmp_path_factory.mktemp("fresh-prefect")) as pair:
        yield pair


def _server_state(url: str) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        deployments = {
            f"{flows[d.flow_id]}/{d.name}": {
                "id": str(d.id),
                "pool": d.work_pool_name,
                "entrypoint": d.entrypoint,
                "parameters": d.parameters,
                "schedules": [
                    (
                        getattr(s.schedule, "cron", None),
                        getattr(s.schedule, "timezone", None),
                        getattr(s.schedule, "interval", None),
                    )
                    for s in d.schedules
                ],
                "schedule_ids": [str(s.id) for s in d.schedules],
                "env": (d.job_variables or {}).get("env", {}),
            }
            for d in client.read_deployments()
        }
        pools = {p.name: p.type for p in client.read_work_pools()}
        limits = {limit.name: limit.limit for limit in client.read_global_concurrency_limits(limit=50)}
        automations = [(a.name, a.trigger.within.total_seconds()) for a in client.read_automations()]
    return {"deployments": deployments, "pools": pools, "limits": limits, "automations": automations}


def test_prefect_yaml_then_apply_then_apply_again(
    fresh: tuple[LocalPrefectServer, dict[str, str]], tmp_path: Path
) -> None:
    server, env = fresh
    project = tmp_path / "project"
    project.mkdir()
    (project / "dropship.toml").write_text((ROOT / "examples/hello/dropship.toml").read_text())
    manifest = str(project / "dropship.toml")
    prefect = [sys.executable, "-m", "prefect"]
    for pool in ("dropship-orchestrator", "dropship-builders"):
        _run([*prefect, "work-pool", "create", pool, "--type", "process"], env)
    _run(
        [*prefect, "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--all"],
        {**env, "DROPSHIP_MANIFEST": manifest, "DROPSHIP_PROJECT_DIR": str(project)},
    )
    from_yaml = _server_state(server.api_url)
    assert set(from_yaml["deployments"]) == EXPECTED
    weekly = from_yaml["deployments"]["release/release-weekly"]
    assert weekly["schedules"] == [("0 3 * * 1", "UTC", None)] and weekly["parameters"] == {
        "manifest": manifest,
        "ref": "main",
    }
    assert from_yaml["deployments"]["reap/reap"]["schedules"][0][2].total_seconds() == 600
    assert from_yaml["deployments"]["build/build"]["pool"] == "dropship-builders"
    assert from_yaml["deployments"]["release/release-tag"]["env"] == {
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS)
    }

    dropship = [sys.executable, "-m", "cli"]
    first = _run([*dropship, "deployments", "apply", "--manifest", manifest], env)
    # the YAML made the same deployments: apply adds only what a prefect.yaml can't hold
    assert all(line.startswith("unchanged") for line in first.splitlines() if "deployment" in line), first
    assert "created   concurrency limit dropship-publish (1)" in first and "created   automation" in first
    applied = _server_state(server.api_url)
    assert applied["deployments"] == from_yaml["deployments"]
    assert applied["limits"] == {"dropship-publish": 1, "dropship-machines": 8}
    assert applied["automations"] == [("dropship: crash zombie flow runs", 3.0 * HEARTBEAT_SECONDS)]
    assert applied["pools"] == {"dropship-orchestrator": "process", "dropship-builders": "process"}

    second = _run([*dropship, "deployments", "apply", "--manifest", manifest], env)
    assert all(line.startswith("unchanged") for line in second.splitlines()), second
    assert _server_state(server.api_url) == applied, "a second apply changed the server"

    moved = _run(
        [
            *dropship,
            "deployments",
            "apply",
            "--manifest",
            manifest,
            "--weekly-cron",
            "30 22 * * 5",
            "--timezone",
            "Europe/Berlin",
        ],
        env,
    )
    assert "updated   deployment release/release-weekly" in moved
    assert _server_state(server.api_url)["deployments"]["release/release-weekly"]["schedules"] == [
        ("30 22 * * 5", "Europe/Berlin", None)
    ]


def test_bad_schedule_settings_are_refused_before_anything_changes(
    fresh: tuple[LocalPrefectServer, dict[str, str]],
) -> None:
    _, env = fresh
    manifest = str(ROOT / "examples/hello/dropship.toml")
    for flag, value, message in (
        ("--weekly-cron", "every monday", "not a cron expression"),
        ("--timezone", "Mars/Olympus", "not an IANA timezone"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "cli", "deployments", "apply", "--manifest", manifest, flag, value],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 1 and message in done.stderr and done.stderr.count("\n") == 1


def test_specs_and_yaml_name_the_same_deployments() -> None:
    import yaml

    text = yaml.safe_load((ROOT / "deployments/prefect.yaml").read_text())
    specs = {s.name: s for s in deployment_specs(Settings(manifest="/x"))}
    assert {d["name"] for d in text["deployments"]} == set(specs)
    for item in text["deployments"]:
        assert item["entrypoint"] == specs[item["name"]].entrypoint
        assert item["work_pool"]["name"] == specs[item["name"]].pool
    assert text["pull"], "an explicit pull step"
