"""Moving sources to a machine and artifacts back, every byte checked."""

from __future__ import annotations

from pathlib import Path

from dropship.builder import REPORT, BuildReport
from dropship.errors import TransferError
from dropship.machines import Machine
from dropship.ssh import Endpoint, SshSession


def endpoint(machine: Machine) -> Endpoint:
    return Endpoint(machine.host, machine.port, machine.user, machine.host_public_key)


def upload_source(session: SshSession, machine: Machine, archive: Path) -> str:
    """Upload the source archive into the machine's work dir; return its remote path."""
    remote = f"{machine.work_dir}/{archive.name}"
    session.put(archive, remote)
    return remote


def collect(machine: Machine, private_key: str, destination: Path) -> tuple[BuildReport, list[Path]]:
    """Read the build report and pull every artifact it lists, several at once, checking sha256."""
    destination.mkdir(parents=True, exist_ok=True)
    with SshSession(endpoint(machine), private_key) as session:
        report = BuildReport.from_json(session.read_text(f"{machine.work_dir}/{REPORT}"))
        if not report.artifacts:
            raise TransferError(f"target {report.target}: the build reported no artifacts")
        for artifact in report.artifacts:
            if "/" in artifact.name or artifact.name.startswith("."):
                raise TransferError(f"target {report.target}: refusing artifact name {artifact.name!r}")
        pulled = [destination / artifact.name for artifact in report.artifacts]
        session.get_many([(a.path, local, a.sha256) for a, local in zip(report.artifacts, pulled, strict=True)])
    return report, pulled
