"""The release's teardown hook, called as Prefect calls it, without a server."""

from __future__ import annotations

import logging
from pathlib import Path
from uuid import uuid4

import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.states import Failed

from dropship import ledger
from flows.release import _teardown_hook, release


def test_a_manifest_broken_after_machines_exist_says_what_is_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest = tmp_path / "dropship.toml"
    manifest.write_text("[project]\nname = \n")  # broken since the run started
    run = FlowRun(flow_id=uuid4(), parameters={"manifest": str(manifest), "workdir": str(tmp_path)})
    run_dir = tmp_path / "runs" / str(run.id)
    ledger.record(run_dir, "created", "m-1", "hello-amd64-deb-1", "amd64-deb")
    ledger.record(run_dir, "created", "m-2", "hello-arm64-deb-1", "arm64-deb")
    ledger.record(run_dir, "deleted", "m-2", "hello-arm64-deb-1")
    with caplog.at_level(logging.ERROR, logger="dropship.teardown"):
        _teardown_hook(release, run, Failed())
    assert len(caplog.messages) == 1
    message = caplog.messages[0]
    assert message.startswith("teardown skipped: ") and str(manifest) in message
    assert "hello-amd64-deb-1 may still exist: `dropship reap` deletes them" in message
    assert "hello-arm64-deb-1" not in message


def test_a_broken_manifest_before_any_machine_is_quiet(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = FlowRun(flow_id=uuid4(), parameters={"manifest": str(tmp_path / "missing.toml"), "workdir": str(tmp_path)})
    with caplog.at_level(logging.ERROR, logger="dropship.teardown"):
        _teardown_hook(release, run, Failed())
    assert caplog.messages == []
