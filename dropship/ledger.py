"""A run's record of machine creations and deletions, on disk.

Appended to by whichever task creates or deletes a machine (threads of one
flow run, a failure hook, a later teardown), and read by the summary to give
each target's billed machine-seconds.
"""

from __future__ import annotations

import fcntl
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dropship.run_folder import RunFolder


@dataclass(frozen=True)
class MachineLife:
    machine_id: str
    name: str
    target: str
    created: datetime
    deleted: datetime | None
    price_hourly: float | None = None
    collected: datetime | None = None
    """When its artifacts were safe: the end of its useful work."""

    @property
    def seconds(self) -> float | None:
        if self.deleted is None:
            return None
        return round((self.deleted - self.created).total_seconds(), 3)

    @property
    def cost(self) -> float | None:
        """Per-second billing at the size's hourly price with DigitalOcean's minimum charge."""
        if self.seconds is None or self.price_hourly is None:
            return None
        from dropship.machines.digitalocean import droplet_cost

        return round(droplet_cost(self.seconds, self.price_hourly), 6)


def record(
    run: RunFolder | Path,
    event: str,
    machine_id: str,
    name: str = "",
    target: str = "",
    at: datetime | None = None,
    price_hourly: float | None = None,
) -> None:
    entry = {
        "event": event,
        "machine_id": machine_id,
        "name": name,
        "target": target,
        "at": (at or datetime.now(UTC)).isoformat(),
        "price_hourly": price_hourly,
    }
    folder = RunFolder.at(run)
    folder.root.mkdir(parents=True, exist_ok=True)
    with folder.ledger.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(json.dumps(entry) + "\n")


def _price(value: object) -> float | None:
    """The recorded hourly price: a number (a ledger of an older dropship has it as a string, "" for none)."""
    if value is None or value == "":
        return None
    return float(str(value))


def lives(run: RunFolder | Path) -> list[MachineLife]:
    path = RunFolder.at(run).ledger
    if not path.exists():
        return []
    created: dict[str, dict[str, Any]] = {}
    deleted: dict[str, str] = {}
    collected: dict[str, str] = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if entry["event"] == "created":
            created[entry["machine_id"]] = entry
        elif entry["event"] == "deleted":
            deleted.setdefault(entry["machine_id"], entry["at"])
        elif entry["event"] == "collected":
            collected[entry["machine_id"]] = entry["at"]
    return [
        MachineLife(
            machine_id=mid,
            name=entry["name"],
            target=entry["target"],
            created=datetime.fromisoformat(entry["at"]),
            deleted=datetime.fromisoformat(deleted[mid]) if mid in deleted else None,
            price_hourly=_price(entry.get("price_hourly")),
            collected=datetime.fromisoformat(collected[mid]) if mid in collected else None,
        )
        for mid, entry in created.items()
    ]
