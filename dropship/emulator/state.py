"""The emulator's droplets, catalogue and faults.

A created droplet is `new` until a local machine (sshd + worker, started from
the droplet's user_data exactly as cloud-init would) is up; then `active`.
Each droplet gets its own loopback address (127.0.1.N) with SSH on one port
for all, as droplets have their own IPs and SSH on 22. Deleting stops the
machine. Every droplet's creation and deletion times are kept, so tests and
benchmarks can read billed seconds.

The one thing no real droplet has: `dropship_emulator.root`, the folder that
plays the droplet's `/`, which the provider needs to know where `/var/lib/...`
really is.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dropship.errors import MachineError
from dropship.machines import MachineRequest
from dropship.machines.local import LocalProvider

SIZES: dict[str, dict[str, Any]] = {
    "s-1vcpu-1gb": {"memory": 1024, "vcpus": 1, "disk": 25, "price_monthly": 6.0, "price_hourly": 0.00893},
    "s-2vcpu-4gb": {"memory": 4096, "vcpus": 2, "disk": 80, "price_monthly": 24.0, "price_hourly": 0.03571},
    "c2-8vcpu-16gb-intel": {"memory": 16384, "vcpus": 8, "disk": 100, "price_monthly": 189.0, "price_hourly": 0.28125},
    "c2-16vcpu-32gb": {"memory": 32768, "vcpus": 16, "disk": 200, "price_monthly": 336.0, "price_hourly": 0.5},
}
REGIONS = {"nyc1": "New York 1", "nyc3": "New York 3", "ams3": "Amsterdam 3", "fra1": "Frankfurt 1", "sfo3": "San Francisco 3"}
IMAGES = {"debian-12-x64": "Debian 12 x64", "ubuntu-24-04-x64": "Ubuntu 24.04 (LTS) x64"}
TAG_RE = re.compile(r"^[A-Za-z0-9:_\-.]{1,255}$")


class ApiError(Exception):
    """An error answer: HTTP status, DigitalOcean's error id and message, extra headers."""

    def __init__(self, status: int, error_id: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.error_id = error_id
        self.message = message
        self.headers = headers or {}
        super().__init__(message)


@dataclass
class Faults:
    """Counters and switches; a fault with a count fires that many times."""

    rate_limit: int = 0
    server_error: int = 0
    delete_error: int = 0
    stuck_new: bool = False
    slow_boot: float = 0.0
    quota: bool = False

    def apply(self, spec: str) -> None:
        """`name[:value]` as given to `--fault`."""
        name, _, value = spec.partition(":")
        if name == "rate-limit":
            self.rate_limit = int(value or 1)
        elif name == "server-error":
            self.server_error = int(value or 1)
        elif name == "delete-error":
            self.delete_error = int(value or 1)
        elif name == "stuck-new":
            self.stuck_new = True
        elif name == "slow-boot":
            self.slow_boot = float(value or 5)
        elif name == "quota":
            self.quota = True
        else:
            raise ValueError(f"unknown fault {spec!r} (rate-limit[:N], server-error[:N], stuck-new, slow-boot[:S], delete-error[:N], quota)")


@dataclass
class Droplet:
    id: int
    name: str
    size: str
    image: str
    region: str
    tags: list[str]
    user_data: str
    vpc_uuid: str | None
    address: str
    created: float = field(default_factory=time.time)
    status: str = "new"
    machine_id: str | None = None
    root: str = ""
    deleted: float | None = None

    def to_api(self, ssh_port: int, ssh_user: str) -> dict[str, Any]:
        size = {"slug": self.size, **SIZES[self.size], "regions": list(REGIONS), "available": True, "transfer": 4.0}
        network = {"ip_address": self.address, "netmask": "255.0.0.0", "gateway": "127.0.0.1"}
        return {
            "id": self.id, "name": self.name, "memory": size["memory"], "vcpus": size["vcpus"], "disk": size["disk"],
            "locked": False, "status": self.status,
            "created_at": datetime.fromtimestamp(self.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "features": ["private_networking"], "backup_ids": [], "snapshot_ids": [], "volume_ids": [],
            "image": {"slug": self.image, "name": IMAGES[self.image], "distribution": self.image.split("-")[0].title()},
            "size": size, "size_slug": self.size,
            "networks": {"v4": [{**network, "type": "private"}, {**network, "type": "public"}], "v6": []},
            "region": {"slug": self.region, "name": REGIONS[self.region], "available": True},
            "tags": list(self.tags), "vpc_uuid": self.vpc_uuid or "00000000-0000-0000-0000-000000000000",
            "dropship_emulator": {"root": self.root, "ssh_port": ssh_port, "ssh_user": ssh_user},
        }


class Emulator:
    """Thread-safe state behind the HTTP server."""

    def __init__(self, state_dir: Path, *, token: str, ssh_port: int = 2222, droplet_limit: int = 25) -> None:
        self.token = token
        self.ssh_port = ssh_port
        self.droplet_limit = droplet_limit
        self.faults = Faults()
        self.machines = LocalProvider(state_dir)
        self.ssh_user = self.machines.user
        self._lock = threading.Lock()
        self._droplets: dict[int, Droplet] = {}
        self._next_id = 1000
        self._threads: list[threading.Thread] = []

    # --- request gate -------------------------------------------------
    def gate(self, method: str, authorization: str | None) -> None:
        """Auth and the request-wide faults; raises ApiError."""
        if authorization != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized", "Unable to authenticate you")
        with self._lock:
            if self.faults.rate_limit > 0:
                self.faults.rate_limit -= 1
                reset = int(time.time()) + 1
                raise ApiError(429, "too_many_requests", "API Rate limit exceeded.",
                               {"Retry-After": "1", "ratelimit-limit": "5000", "ratelimit-remaining": "0",
                                "ratelimit-reset": str(reset)})
            if self.faults.server_error > 0:
                self.faults.server_error -= 1
                raise ApiError(500, "server_error", "Server Error")
            if method == "DELETE" and self.faults.delete_error > 0:
                self.faults.delete_error -= 1
                raise ApiError(500, "server_error", "Server Error")

    # --- droplets -------------------------------------------------------
    def create(self, body: dict[str, Any]) -> Droplet:
        name = str(body.get("name") or "")
        if not re.fullmatch(r"[A-Za-z0-9.\-]{1,255}", name):
            raise ApiError(422, "unprocessable_entity", "Name Only valid hostname characters are allowed. (a-z, A-Z, 0-9, . and -)")
        for field_name, catalogue in (("size", SIZES), ("image", IMAGES), ("region", REGIONS)):
            value = body.get(field_name)
            if value not in catalogue:
                raise ApiError(422, "unprocessable_entity", f"You specified an invalid {field_name} for Droplet creation.")
        tags = [str(t) for t in body.get("tags") or []]
        bad = [t for t in tags if not TAG_RE.match(t)]
        if bad:
            raise ApiError(422, "unprocessable_entity", f"tag {bad[0]!r}: only letters, numbers, colons, dashes, dots and underscores")
        with self._lock:
            alive = sum(1 for d in self._droplets.values() if d.deleted is None)
            if self.faults.quota or alive >= self.droplet_limit:
                raise ApiError(422, "unprocessable_entity",
                               "creating this/these droplet(s) will exceed your droplet limit")
            self._next_id += 1
            droplet = Droplet(
                id=self._next_id, name=name, size=str(body["size"]), image=str(body["image"]), region=str(body["region"]),
                tags=tags, user_data=str(body.get("user_data") or ""), vpc_uuid=body.get("vpc_uuid"),
                address=f"127.0.{1 + self._next_id // 250 % 250}.{1 + self._next_id % 250}",
            )
            self._droplets[droplet.id] = droplet
            stuck, delay = self.faults.stuck_new, self.faults.slow_boot
        if not stuck:
            thread = threading.Thread(target=self._boot, args=(droplet, delay), daemon=True)
            self._threads.append(thread)
            thread.start()
        return droplet

    def _boot(self, droplet: Droplet, delay: float) -> None:
        time.sleep(delay)
        request = MachineRequest(droplet.name, tuple(droplet.tags), droplet.size, droplet.image, droplet.region,
                                 droplet.user_data, host_public_key="")
        try:
            machine = self.machines.create(request, address=droplet.address, port=self.ssh_port)
        except MachineError:
            with self._lock:
                droplet.status = "off"
            return
        with self._lock:
            if droplet.deleted is not None:  # deleted while booting
                self.machines.delete(machine.id)
                return
            droplet.machine_id = machine.id
            droplet.root = machine.details["root"]
            droplet.status = "active"

    def get(self, droplet_id: int) -> Droplet:
        with self._lock:
            droplet = self._droplets.get(droplet_id)
            if droplet is None or droplet.deleted is not None:
                raise ApiError(404, "not_found", "The resource you were accessing could not be found.")
            return droplet

    def tagged(self, tag: str | None) -> list[Droplet]:
        with self._lock:
            return [d for d in self._droplets.values() if d.deleted is None and (tag is None or tag in d.tags)]

    def delete(self, droplet_id: int) -> None:
        droplet = self.get(droplet_id)
        with self._lock:
            droplet.deleted = time.time()
            machine_id = droplet.machine_id
        if machine_id:
            self.machines.delete(machine_id)

    def delete_by_tag(self, tag: str) -> None:
        for droplet in self.tagged(tag):
            self.delete(droplet.id)

    # --- for tests, benchmarks and the summary --------------------------
    def lifetimes(self) -> list[dict[str, Any]]:
        """Every droplet ever created: name, tags, created, deleted, billed seconds."""
        with self._lock:
            return [
                {"id": d.id, "name": d.name, "tags": list(d.tags), "size": d.size, "created": d.created,
                 "deleted": d.deleted, "seconds": (d.deleted or time.time()) - d.created,
                 "price_hourly": SIZES[d.size]["price_hourly"]}
                for d in self._droplets.values()
            ]

    def alive(self) -> list[Droplet]:
        return self.tagged(None)

    def shutdown(self) -> None:
        """Delete every droplet (the emulator going away takes its machines with it)."""
        for droplet in self.alive():
            try:
                self.delete(droplet.id)
            except ApiError:
                pass
        for thread in self._threads:
            thread.join(timeout=30)
        for machine in self.machines.list():
            self.machines.delete(machine.id)
