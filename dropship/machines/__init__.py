"""Build machines: what a provider creates, lists by tag and deletes.

A release creates one machine per target to build, tagged `dropship` and
`dropship-run-<run id>`, so teardown and the reaper can find every machine of
a run by tag alone, even after the orchestrator that created them died.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

BASE_TAG = "dropship"
RUN_TAG_PREFIX = f"{BASE_TAG}-run-"
WORK_DIR = "/var/lib/dropship/work"
"""Where a build machine (local, droplet, integration machine) unpacks and builds the source."""


def run_tag(run_id: str) -> str:
    return f"{RUN_TAG_PREFIX}{run_id}"


@dataclass(frozen=True)
class MachineRequest:
    name: str
    tags: tuple[str, ...]
    size: str
    image: str
    region: str
    user_data: str
    host_public_key: str
    authorized_key: str = ""
    """The orchestrator's SSH public key for root (DigitalOcean: registered and sent as ssh_keys)."""


@dataclass(frozen=True)
class Machine:
    id: str
    name: str
    provider: str
    tags: tuple[str, ...]
    host: str
    port: int
    user: str
    work_dir: str
    """Absolute path on the machine where sources are unpacked and built."""
    created_at: datetime
    host_public_key: str = ""
    """The host key the orchestrator generated for this machine and pins."""
    details: dict[str, str] = field(default_factory=dict)
    price_hourly: float | None = None
    """USD per hour of the machine's size, as the provider prices it (None: free, or unknown)."""
    root: str = ""
    """Where the machine's `/` is, as its SSH sessions see it: "" on a droplet, its folder for a
    local machine (whose sessions run on this host)."""


class Provider(Protocol):
    """What every machine provider offers; failures raise `MachineError`."""

    name: str

    def create(self, request: MachineRequest) -> Machine:
        """Create a machine and return once it accepts SSH connections."""
        ...

    def list(self, tag: str = BASE_TAG) -> list[Machine]:
        """Machines carrying `tag`."""
        ...

    def delete(self, machine_id: str) -> None:
        """Delete a machine; deleting one that is already gone is not an error."""
        ...

    def release_run(self, run_id: str) -> None:
        """Delete what a run registered besides its machines (DigitalOcean: its SSH key)."""
        ...

    def run_leftovers(self) -> builtins.list[str]:
        """Run ids that still have such registrations."""
        ...

    def alive(self, machine_id: str) -> bool:
        """Whether the machine still exists and runs (a local machine: its sshd and its worker launcher)."""
        ...
