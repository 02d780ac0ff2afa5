"""Pulling a target's artifacts back and deleting its machine."""

from __future__ import annotations

from prefect import get_run_logger

from dropship import ledger
from dropship.collect import collect
from dropship.machines import Machine
from dropship.manifest import Manifest
from dropship.plan import ReleasePlan
from dropship.summary import ArtifactSummary, TargetStatus, TargetSummary
from tasks.machines import client_key_path, delete_machine


def collect_artifacts(
    manifest: Manifest, plan: ReleasePlan, target_name: str, machine: Machine, workdir: str
) -> TargetSummary:
    """SFTP every reported artifact, check sha256, then delete the machine: its work is safe
    (a step of `build <target>`, which retries it)."""
    destination = plan.folder.artifacts(target_name)
    # On failure the machine stays for the retries; the flow's teardown deletes it.
    report, paths = collect(machine, client_key_path(plan).read_text(), destination)
    ledger.record(plan.folder, "collected", machine.id, machine.name, target_name)
    delete_machine(manifest, plan, workdir, machine)
    get_run_logger().info(
        "%s: collected %s; machine %s deleted", target_name, ", ".join(p.name for p in paths), machine.name
    )
    return TargetSummary(
        name=target_name,
        status=TargetStatus.BUILT,
        machine=machine.name,
        build_seconds=report.seconds,
        artifacts=[ArtifactSummary(a.name, a.size, a.sha256) for a in report.artifacts],
    )
