"""The release summary (dropship/summary.py): what a job's record keeps."""

from __future__ import annotations

import json
from pathlib import Path

from dropship.run_folder import RunFolder
from dropship.summary import DETAIL_LIMIT, JobOutcome, ReleaseSummary, read_run_records
from dropship.tags import ReleaseClass


def test_a_jobs_record_keeps_its_outcome_and_a_short_reason_never_its_output(tmp_path: Path) -> None:
    """What a job printed (a command may print anything, a secret among it) stays in its log: jobs.json and
    summary.json carry the status and one line of at most DETAIL_LIMIT characters."""
    printed = "token=s3cret-Zq8\n" + "x" * 5000
    outcome = JobOutcome("smoke", "unit", "failed", 1.5, detail=f"exited 2: {printed}")
    assert "\n" not in outcome.detail and len(outcome.detail) == DETAIL_LIMIT and outcome.detail.endswith("...")
    assert "output" not in json.dumps(outcome.__dict__)
    summary = ReleaseSummary(
        run_id="r",
        project="p",
        name="v1.0.0",
        release_class=ReleaseClass("stable"),
        suites=["stable"],
        version="1.0.0",
        commit="c" * 40,
        status="failed",
        jobs=[outcome, JobOutcome("install-deb", "integration", "passed", detail="installed hello:amd64=1.0.0")],
    )
    jobs = json.loads(summary.to_json())["jobs"]
    assert [set(j) for j in jobs] == [{"name", "kind", "status", "seconds", "machine", "detail", "extra"}] * 2
    assert "x" * (DETAIL_LIMIT + 1) not in summary.to_json()


def test_a_run_recorded_with_job_output_still_reads(tmp_path: Path) -> None:
    """jobs.json of a run recorded before: its "output" is dropped when read, not carried into the summary."""
    folder = RunFolder.at(tmp_path)
    folder.jobs.write_text(json.dumps([{"name": "j", "kind": "unit", "status": "passed", "output": "printed"}]))
    jobs, published = read_run_records(folder)
    assert jobs == [JobOutcome("j", "unit", "passed")] and published == []
