"""The emulator's account: droplets, actions, snapshots, SSH keys, the catalogue and faults.

A created droplet is `new` until its machine's sshd answers, then `active`
(see `machines`: container droplets are separate machines booted by
cloud-init from the stock image or a snapshot; process droplets are local
machines for quick unit tests). Each droplet gets its own loopback address
(127.0.x.y) with SSH on one port for all (22 unless `ssh_port` is given), as
droplets have their own IPs. A container droplet's network is its own
namespace: it reaches only what `internet` publishes (see `network`).

Where DigitalOcean is strict, so is the emulator: sizes are offered in some
regions only, images live in regions, a VPC belongs to one region, an unknown
SSH key is a 422, a droplet with an action in progress refuses deletion
("pending event"), requests spend a rolling hourly budget (`ratelimit-*`,
429 without Retry-After when spent), and a deleted droplet stays listed as
`archive` for a few seconds while a GET of it is already 404. Every
droplet's creation and deletion times are kept, so tests and benchmarks can
read billed seconds.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import random
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dropship.emulator.dockerd import DockerDaemon
from dropship.emulator.machines import Boot, ContainerMachines, Machines, ProcessMachines
from dropship.emulator.network import NAME_NET, Internet, stock_internet
from dropship.errors import ConfigError, MachineError
from dropship.machines import MachineRequest

ALL_REGIONS = ("nyc1", "nyc3", "ams3", "fra1", "sfo3")
REGIONS = {
    "nyc1": "New York 1",
    "nyc3": "New York 3",
    "ams3": "Amsterdam 3",
    "fra1": "Frankfurt 1",
    "sfo3": "San Francisco 3",
}
SIZES: dict[str, dict[str, Any]] = {
    "s-1vcpu-1gb": {
        "memory": 1024,
        "vcpus": 1,
        "disk": 25,
        "transfer": 1.0,
        "price_monthly": 6.0,
        "price_hourly": 0.00893,
        "regions": list(ALL_REGIONS),
    },
    "s-2vcpu-4gb": {
        "memory": 4096,
        "vcpus": 2,
        "disk": 80,
        "transfer": 4.0,
        "price_monthly": 24.0,
        "price_hourly": 0.03571,
        "regions": list(ALL_REGIONS),
    },
    "c2-8vcpu-16gb-intel": {
        "memory": 16384,
        "vcpus": 8,
        "disk": 100,
        "transfer": 6.0,
        "price_monthly": 189.0,
        "price_hourly": 0.28125,
        "regions": ["nyc1", "nyc3", "ams3", "fra1", "sfo3"],
    },
    # Not offered everywhere, as many of DigitalOcean's larger sizes.
    "c2-16vcpu-32gb": {
        "memory": 32768,
        "vcpus": 16,
        "disk": 200,
        "transfer": 7.0,
        "price_monthly": 336.0,
        "price_hourly": 0.5,
        "regions": ["nyc1", "nyc3", "fra1"],
    },
}
PUBLIC_IMAGES: dict[str, dict[str, Any]] = {
    "debian-12-x64": {
        "id": 153_000_001,
        "name": "12 x64",
        "distribution": "Debian",
        "slug": "debian-12-x64",
        "public": True,
        "regions": list(ALL_REGIONS),
        "created_at": "2024-06-11T13:28:52Z",
        "type": "base",
        "min_disk_size": 15,
        "size_gigabytes": 0.83,
        "description": "Debian 12 x64",
        "tags": [],
        "status": "available",
        "error_message": "",
    },
}
TAG_RE = re.compile(r"^[A-Za-z0-9:_\-.]{1,255}$")
NOT_FOUND = "The resource you were accessing could not be found."
PENDING = "Droplet already has a pending event."
FAULTS_HELP = (
    "rate-limit[:N], server-error[:N], stuck-new, slow-boot[:S], delete-error[:N], quota, "
    "create-then-5xx[:N], 404-after-create[:N], pending-event-on-delete[:N]"
)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def vpc_id(region: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dropship-emulator/vpc/{region}"))


VPCS = {vpc_id(r): r for r in ALL_REGIONS}


class ApiError(Exception):
    """An error answer: HTTP status, DigitalOcean's error id and message, extra headers."""

    def __init__(self, status: int, error_id: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.error_id = error_id
        self.message = message
        self.headers = headers or {}
        super().__init__(message)


def not_found() -> ApiError:
    return ApiError(404, "not_found", NOT_FOUND)


def unprocessable(message: str) -> ApiError:
    return ApiError(422, "unprocessable_entity", message)


@dataclass
class Faults:
    """Counters and switches; a fault with a count fires that many times."""

    rate_limit: int = 0
    server_error: int = 0
    delete_error: int = 0
    stuck_new: bool = False
    slow_boot: float = 0.0
    quota: bool = False
    create_then_5xx: int = 0
    not_found_after_create: int = 0
    """How many GETs of each droplet created while set answer 404 before it shows."""
    pending_event_on_delete: int = 0

    def apply(self, spec: str) -> None:
        """`name[:value]` as given to `--fault`."""
        name, _, value = spec.partition(":")
        if name in _SWITCHES:
            setattr(self, _SWITCHES[name], True)
            return
        if name not in _AMOUNTS:
            raise ConfigError(f"unknown fault {spec!r}: give one of {FAULTS_HELP}")
        field, kind, default = _AMOUNTS[name]
        try:
            setattr(self, field, kind(value) if value else default)
        except ValueError as exc:
            raise ConfigError(f"fault {spec!r}: the value after ':' must be a number") from exc


_SWITCHES = {"stuck-new": "stuck_new", "quota": "quota"}
"""`--fault` names that turn a `Faults` switch on."""
_AMOUNTS: dict[str, tuple[str, type[int] | type[float], int | float]] = {
    "rate-limit": ("rate_limit", int, 1),
    "server-error": ("server_error", int, 1),
    "delete-error": ("delete_error", int, 1),
    "slow-boot": ("slow_boot", float, 5.0),
    "create-then-5xx": ("create_then_5xx", int, 1),
    "404-after-create": ("not_found_after_create", int, 2),
    "pending-event-on-delete": ("pending_event_on_delete", int, 1),
}
"""`--fault` names with an amount: the `Faults` field, its type and the amount without `:N`."""


@dataclass
class SshKey:
    id: int
    name: str
    public_key: str
    fingerprint: str

    def to_api(self) -> dict[str, Any]:
        return {"id": self.id, "fingerprint": self.fingerprint, "public_key": self.public_key, "name": self.name}


def fingerprint(public_key: str) -> str:
    """DigitalOcean's fingerprint: MD5 of the key blob, colon-separated hex; ValueError if not a key."""
    words = public_key.split()
    if len(words) < 2:
        raise ValueError("not `type key [comment]`")
    try:
        blob = base64.b64decode(words[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("key is not base64") from exc
    if len(blob) < 4 or blob[4 : 4 + int.from_bytes(blob[:4], "big")] != words[0].encode():
        raise ValueError("key type does not match its blob")
    digest = hashlib.md5(blob).hexdigest()  # DigitalOcean's fingerprint format
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2))


@dataclass
class Snapshot:
    id: int
    name: str
    droplet_id: int
    region: str
    ref: str
    created: float
    size_gigabytes: float
    min_disk_size: int

    def to_snapshot_api(self) -> dict[str, Any]:
        """As `/v2/snapshots` shows it (string id, the droplet it was taken from)."""
        return {
            "id": str(self.id),
            "name": self.name,
            "created_at": _iso(self.created),
            "regions": [self.region],
            "resource_id": str(self.droplet_id),
            "resource_type": "droplet",
            "min_disk_size": self.min_disk_size,
            "size_gigabytes": self.size_gigabytes,
            "tags": [],
        }

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "distribution": "Debian",
            "slug": None,
            "public": False,
            "regions": [self.region],
            "created_at": _iso(self.created),
            "type": "snapshot",
            "min_disk_size": self.min_disk_size,
            "size_gigabytes": self.size_gigabytes,
            "description": "",
            "tags": [],
            "status": "available",
            "error_message": "",
        }


@dataclass
class Action:
    id: int
    type: str
    droplet_id: int
    region: str
    started: float = field(default_factory=time.time)
    completed: float | None = None
    status: str = "in-progress"

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "type": self.type,
            "started_at": _iso(self.started),
            "completed_at": _iso(self.completed) if self.completed else None,
            "resource_id": self.droplet_id,
            "resource_type": "droplet",
            "region": region_api(self.region),
            "region_slug": self.region,
        }


def region_api(slug: str) -> dict[str, Any]:
    return {
        "slug": slug,
        "name": REGIONS[slug],
        "available": True,
        "sizes": [s for s, v in SIZES.items() if slug in v["regions"]],
        "features": ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"],
    }


@dataclass
class Droplet:
    id: int
    name: str
    size: str
    image: dict[str, Any]
    image_ref: str
    region: str
    tags: list[str]
    user_data: str
    vpc_uuid: str
    address: str
    ssh_keys: list[str]
    created: float = field(default_factory=time.time)
    status: str = "new"
    details: dict[str, str] = field(default_factory=dict)
    deleted: float | None = None
    hidden_gets: int = 0
    snapshot_ids: list[int] = field(default_factory=list)
    active_at: float | None = None

    def to_api(self) -> dict[str, Any]:
        size = {"slug": self.size, **SIZES[self.size], "available": True, "description": "Basic"}
        network = {"ip_address": self.address, "netmask": "255.0.0.0", "gateway": "127.0.0.1"}
        return {
            "id": self.id,
            "name": self.name,
            "memory": size["memory"],
            "vcpus": size["vcpus"],
            "disk": size["disk"],
            "locked": False,
            "status": self.status,
            "kernel": None,
            "created_at": _iso(self.created),
            "features": ["private_networking"],
            "backup_ids": [],
            "next_backup_window": None,
            "snapshot_ids": list(self.snapshot_ids),
            "volume_ids": [],
            "image": dict(self.image),
            "size": size,
            "size_slug": self.size,
            "networks": {"v4": [{**network, "type": "private"}, {**network, "type": "public"}], "v6": []},
            "region": region_api(self.region),
            "tags": list(self.tags),
            "vpc_uuid": self.vpc_uuid,
        }


class Emulator:
    """Thread-safe state behind the HTTP server.

    `machines` is "processes" (local machines, the default of this class, for
    quick unit tests) or "containers" (separate machines in `docker`, a
    started `DockerDaemon`; without one the emulator starts and stops its own
    under `state_dir`). `rate_limit` is the hourly request budget;
    `archive_seconds` how long a deleted droplet stays listed. `internet` is what container droplets
    reach beyond themselves ("name:port" -> "host:port" as this host reaches it); the stock image's
    Debian mirror and PyPI are always in it, and `publish` adds more (the orchestrator's public name).
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        token: str,
        ssh_port: int | None = None,
        droplet_limit: int = 25,
        machines: str = "processes",
        docker: DockerDaemon | None = None,
        rate_limit: int = 5000,
        archive_seconds: float = 5.0,
        boot_timeout: float = 120.0,
        internet: Mapping[str, str] | None = None,
    ) -> None:
        self.token = token
        self.droplet_limit = droplet_limit
        self.rate_limit = rate_limit
        self.archive_seconds = archive_seconds
        self.boot_timeout = boot_timeout
        self.faults = Faults()
        self.instance = secrets.token_hex(3)
        self.image_ref = ""
        self._own_docker: DockerDaemon | None = None
        self.backend: Machines
        if machines == "containers":
            from dropship.emulator.image import apt_mirror, ensure_image

            if docker is None:
                docker = self._own_docker = DockerDaemon(state_dir / "dockerd").start()
            try:
                self.image_ref = ensure_image(docker)
            except BaseException:
                if self._own_docker is not None:
                    self._own_docker.stop()
                raise
            self.docker: DockerDaemon | None = docker
            self.internet = stock_internet([apt_mirror()])
            self.backend = ContainerMachines(docker, state_dir / "droplets", self.instance, self.internet)
            self.ssh_port = ssh_port or 22
            self.ssh_user = "root"
        elif machines == "processes":
            self.docker = None
            self.internet = Internet()  # process droplets share this host's network
            process = ProcessMachines(state_dir)
            self.backend = process
            self.ssh_port = ssh_port or 2222
            self.ssh_user = process.local.user
        else:
            raise ConfigError(f"the emulator's machines are 'containers' or 'processes', not {machines!r}: pick one")
        for public, real in (internet or {}).items():
            self.internet.publish(public, real)
        self.machines_kind = machines
        self._lock = threading.Lock()
        self._droplets: dict[int, Droplet] = {}
        self._keys: dict[int, SshKey] = {}
        self._snapshots: dict[int, Snapshot] = {}
        self._actions: dict[int, Action] = {}
        self._requests: collections.deque[float] = collections.deque()
        rng = random.Random()
        self._next_id = rng.randrange(300_000_000, 400_000_000)
        self._next_key = rng.randrange(40_000_000, 50_000_000)
        self._next_action = rng.randrange(2_000_000_000, 2_100_000_000)
        self._next_image = rng.randrange(170_000_000, 180_000_000)
        self._next_address = rng.randrange(0, 250 * 250)
        self._threads: list[threading.Thread] = []

    def publish_orchestrator(self, url: str) -> str:
        """Let droplets reach the service at `url` of this host under the orchestrator's public name (see
        `network.ORCHESTRATOR`); returns the URL they use (a block's `worker_api_url` for the Prefect API)."""
        return self.internet.publish_orchestrator(url)

    # --- request gate -------------------------------------------------
    def gate(self, method: str, authorization: str | None) -> dict[str, str]:
        """Auth, the hourly budget and the request-wide faults; returns the ratelimit headers, raises ApiError."""
        if authorization != f"Bearer {self.token}":
            raise ApiError(401, "unauthorized", "Unable to authenticate you")
        now = time.time()
        with self._lock:
            while self._requests and self._requests[0] <= now - 3600:
                self._requests.popleft()
            if len(self._requests) >= self.rate_limit or self.faults.rate_limit > 0:
                if len(self._requests) < self.rate_limit:
                    self.faults.rate_limit -= 1
                    reset = int(now) + 1
                else:
                    reset = int(self._requests[0] + 3600) + 1
                raise ApiError(
                    429,
                    "too_many_requests",
                    "API rate limit exceeded.",
                    {
                        "ratelimit-limit": str(self.rate_limit),
                        "ratelimit-remaining": "0",
                        "ratelimit-reset": str(reset),
                    },
                )
            self._requests.append(now)
            headers = {
                "ratelimit-limit": str(self.rate_limit),
                "ratelimit-remaining": str(self.rate_limit - len(self._requests)),
                "ratelimit-reset": str(int(self._requests[0] + 3600)),
            }
            if self.faults.server_error > 0:
                self.faults.server_error -= 1
                raise ApiError(500, "server_error", "Server Error", headers)
            if method == "DELETE" and self.faults.delete_error > 0:
                self.faults.delete_error -= 1
                raise ApiError(500, "server_error", "Server Error", headers)
        return headers

    # --- catalogue ------------------------------------------------------
    def images(self, kind: str | None = None, private: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            snapshots = [s.to_api() for s in self._snapshots.values()]
        public = [dict(i) for i in PUBLIC_IMAGES.values()]
        if private or kind in ("snapshot",):
            return snapshots
        if kind == "distribution":
            return public
        if kind in ("application", "backup", "custom"):
            return []
        return public + snapshots

    def snapshots(self) -> list[Snapshot]:
        with self._lock:
            return list(self._snapshots.values())

    def image(self, key: str) -> dict[str, Any]:
        for image in self.images():
            if str(image["id"]) == key or image["slug"] == key:
                return image
        raise not_found()

    def delete_image(self, image_id: int) -> None:
        with self._lock:
            snapshot = self._snapshots.pop(image_id, None)
            if snapshot is None:
                raise not_found()
            for droplet in self._droplets.values():
                if image_id in droplet.snapshot_ids:
                    droplet.snapshot_ids.remove(image_id)
        self._backend_call(lambda: self.backend.delete_image(snapshot.ref))

    # --- SSH keys -------------------------------------------------------
    def add_key(self, body: dict[str, Any]) -> SshKey:
        name, public_key = str(body.get("name") or "").strip(), str(body.get("public_key") or "").strip()
        if not name:
            raise unprocessable("Name can't be blank")
        try:
            print_ = fingerprint(public_key)
        except ValueError as exc:
            raise unprocessable("Key invalid, key should be of the format `type key [comment]`") from exc
        with self._lock:
            if any(k.fingerprint == print_ for k in self._keys.values()):
                raise unprocessable("SSH Key is already in use on your account")
            self._next_key += 1
            key = SshKey(self._next_key, name, public_key, print_)
            self._keys[key.id] = key
            return key

    def ssh_keys(self) -> list[SshKey]:
        with self._lock:
            return list(self._keys.values())

    def key(self, ident: str) -> SshKey:
        with self._lock:
            for key in self._keys.values():
                if str(key.id) == ident or key.fingerprint == ident:
                    return key
        raise not_found()

    def rename_key(self, ident: str, body: dict[str, Any]) -> SshKey:
        key = self.key(ident)
        name = str(body.get("name") or "").strip()
        if name:
            key.name = name
        return key

    def delete_key(self, ident: str) -> None:
        key = self.key(ident)
        with self._lock:
            self._keys.pop(key.id, None)

    # --- droplets -------------------------------------------------------
    def create(self, body: dict[str, Any]) -> Droplet:
        name = str(body.get("name") or "")
        if not re.fullmatch(r"[A-Za-z0-9.\-]{1,255}", name):
            raise unprocessable("Name Only valid hostname characters are allowed. (a-z, A-Z, 0-9, . and -)")
        region, size = body.get("region"), body.get("size")
        if region not in REGIONS:
            raise unprocessable("You specified an invalid region for Droplet creation.")
        if size not in SIZES:
            raise unprocessable("You specified an invalid size for Droplet creation.")
        if region not in SIZES[str(size)]["regions"]:
            raise unprocessable("Size is not available in this region.")
        image, image_ref = self._image_for(body.get("image"))
        if region not in image["regions"]:
            raise unprocessable("The image you specified is not available in the selected region.")
        if image["min_disk_size"] and SIZES[str(size)]["disk"] < image["min_disk_size"]:
            raise unprocessable("The image's minimum disk size is larger than the size's disk.")
        vpc = body.get("vpc_uuid")
        if vpc is not None and str(vpc) not in VPCS:
            raise unprocessable(f"vpc_uuid {vpc} is not a VPC of this account.")
        if vpc is not None and VPCS[str(vpc)] != region:
            raise unprocessable(f"The VPC {vpc} is in region {VPCS[str(vpc)]}, not {region}.")
        tags = [str(t) for t in body.get("tags") or []]
        bad = [t for t in tags if not TAG_RE.match(t)]
        if bad:
            raise unprocessable(f"tag {bad[0]!r}: only letters, numbers, colons, dashes, dots and underscores")
        public_keys = [self._key_for(k).public_key for k in body.get("ssh_keys") or []]
        with self._lock:
            alive = sum(1 for d in self._droplets.values() if d.deleted is None)
            if self.faults.quota or alive >= self.droplet_limit:
                raise unprocessable("creating this/these droplet(s) will exceed your droplet limit")
            self._next_id += 1
            droplet = Droplet(
                id=self._next_id,
                name=name,
                size=str(size),
                image=image,
                image_ref=image_ref,
                region=str(region),
                tags=tags,
                user_data=str(body.get("user_data") or ""),
                vpc_uuid=str(vpc or vpc_id(str(region))),
                address=self._free_address(),
                ssh_keys=public_keys,
                hidden_gets=self.faults.not_found_after_create,
            )
            self._droplets[droplet.id] = droplet
            stuck, delay = self.faults.stuck_new, self.faults.slow_boot
            then_5xx = self.faults.create_then_5xx > 0
            if then_5xx:
                self.faults.create_then_5xx -= 1
        if not stuck:
            self._spawn(self._boot, droplet, delay)
        if then_5xx:
            raise ApiError(500, "server_error", "Server Error")
        return droplet

    def _image_for(self, value: Any) -> tuple[dict[str, Any], str]:
        key = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
        if key in PUBLIC_IMAGES:
            return dict(PUBLIC_IMAGES[key]), self.image_ref
        with self._lock:
            for public in PUBLIC_IMAGES.values():
                if str(public["id"]) == key:
                    return dict(public), self.image_ref
            if key.isdigit() and int(key) in self._snapshots:
                snapshot = self._snapshots[int(key)]
                return snapshot.to_api(), snapshot.ref
        raise unprocessable("You specified an invalid image for Droplet creation.")

    def _key_for(self, ident: Any) -> SshKey:
        try:
            return self.key(str(ident))
        except ApiError as exc:
            raise unprocessable(f"ssh_keys: {ident} is not an SSH key of this account.") from exc

    def _free_address(self) -> str:
        """The next loopback address whose SSH port nobody holds (another emulator may share the host)."""
        used = {d.address for d in self._droplets.values() if d.deleted is None}
        for _ in range(250 * 250):
            self._next_address = (self._next_address + 1) % (250 * 250)
            address = f"127.0.{1 + self._next_address // 250}.{1 + self._next_address % 250}"
            if address in used or address == "127.0.1.1" or address.startswith(NAME_NET):
                continue  # inside a droplet those are its hostname's and the published names' addresses
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((address, self.ssh_port))
                except OSError:
                    continue
            return address
        raise ApiError(
            500,
            "server_error",
            f"the emulator found no loopback address with port {self.ssh_port} free: "
            f"is something listening on 0.0.0.0:{self.ssh_port}? Give the emulator another --ssh-port",
        )

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _boot(self, droplet: Droplet, delay: float) -> None:
        time.sleep(delay)
        request = MachineRequest(
            droplet.name,
            tuple(droplet.tags),
            droplet.size,
            str(droplet.image.get("slug")),
            droplet.region,
            droplet.user_data,
            host_public_key="",
        )
        try:
            details = self.backend.boot(
                Boot(
                    droplet.id,
                    request,
                    image=droplet.image_ref,
                    address=droplet.address,
                    port=self.ssh_port,
                    public_keys=droplet.ssh_keys,
                    timeout=self.boot_timeout,
                )
            )
        except MachineError:
            with self._lock:
                gone = droplet.deleted is not None
                if not gone:
                    droplet.status = "off"
            if gone:
                self._destroy(droplet.id)
            return
        with self._lock:
            gone = droplet.deleted is not None
            if not gone:
                droplet.details = details
                droplet.status = "active"
                droplet.active_at = time.time()
        if gone:  # deleted while booting
            self._destroy(droplet.id)
            return
        self.backend.activate(droplet.id)

    def _destroy(self, droplet_id: int) -> None:
        try:
            self.backend.destroy(droplet_id)
        except MachineError:
            pass

    def _backend_call(self, fn: Any) -> Any:
        try:
            return fn()
        except MachineError as exc:
            raise unprocessable(str(exc)) from exc

    def get(self, droplet_id: int) -> Droplet:
        with self._lock:
            droplet = self._droplets.get(droplet_id)
            if droplet is None or droplet.deleted is not None:
                raise not_found()
            if droplet.hidden_gets > 0:  # not yet visible to reads (404-after-create)
                droplet.hidden_gets -= 1
                raise not_found()
            return droplet

    def listed(self, tag: str | None) -> list[Droplet]:
        """Droplets a list shows: live ones and, for `archive_seconds`, deleted ones as `archive`."""
        now = time.time()
        with self._lock:
            return [
                d
                for d in self._droplets.values()
                if (d.deleted is None or now - d.deleted < self.archive_seconds) and (tag is None or tag in d.tags)
            ]

    def tagged(self, tag: str | None) -> list[Droplet]:
        with self._lock:
            return [d for d in self._droplets.values() if d.deleted is None and (tag is None or tag in d.tags)]

    def _pending(self, droplet_id: int) -> bool:
        return any(a.droplet_id == droplet_id and a.status == "in-progress" for a in self._actions.values())

    def delete(self, droplet_id: int) -> None:
        with self._lock:
            droplet = self._droplets.get(droplet_id)
            if droplet is None or droplet.deleted is not None:
                raise not_found()
            if self.faults.pending_event_on_delete > 0:
                self.faults.pending_event_on_delete -= 1
                raise unprocessable(PENDING)
            if self._pending(droplet_id):
                raise unprocessable(PENDING)
            droplet.deleted = time.time()
            droplet.status = "archive"
        self._destroy(droplet_id)

    def delete_by_tag(self, tag: str) -> None:
        for droplet in self.tagged(tag):
            try:
                self.delete(droplet.id)
            except ApiError as exc:
                if exc.status != 404:
                    raise

    # --- actions --------------------------------------------------------
    def act(self, droplet_id: int, body: dict[str, Any]) -> Action:
        kind = str(body.get("type") or "")
        droplet = self.get(droplet_id)
        if kind not in ("power_off", "power_on", "shutdown", "reboot", "power_cycle", "snapshot"):
            raise unprocessable(
                f"The emulator does not support the droplet action type {kind!r}." if kind else "type is required"
            )
        with self._lock:
            if droplet.status == "new" or self._pending(droplet_id):
                raise unprocessable(PENDING)
            if not self.backend.separate:
                raise unprocessable(f"process droplets can't {kind}: start the emulator with container droplets")
            self._next_action += 1
            action = Action(self._next_action, kind, droplet_id, droplet.region)
            self._actions[action.id] = action
        self._spawn(self._run_action, action, droplet, str(body.get("name") or ""))
        return action

    def _run_action(self, action: Action, droplet: Droplet, name: str) -> None:
        status = "completed"
        try:
            if action.type in ("power_off", "shutdown") and droplet.status != "off":
                self.backend.power_off(droplet.id)
                droplet.status = "off"
            elif action.type == "power_on" and droplet.status == "off":
                self.backend.power_on(droplet.id, self.boot_timeout)
                droplet.status = "active"
                self.backend.activate(droplet.id)
            elif action.type in ("reboot", "power_cycle"):
                if droplet.status != "off":
                    self.backend.power_off(droplet.id)
                droplet.status = "off"
                self.backend.power_on(droplet.id, self.boot_timeout)
                droplet.status = "active"
                self.backend.activate(droplet.id)
            elif action.type == "snapshot":
                with self._lock:
                    self._next_image += 1
                    image_id = self._next_image
                ref, gigabytes = self.backend.snapshot(droplet.id, image_id)
                snapshot = Snapshot(
                    image_id,
                    name or f"{droplet.name}-{int(time.time())}",
                    droplet.id,
                    droplet.region,
                    ref,
                    time.time(),
                    gigabytes,
                    SIZES[droplet.size]["disk"],
                )
                with self._lock:
                    self._snapshots[image_id] = snapshot
                    droplet.snapshot_ids.append(image_id)
        except MachineError:
            status = "errored"
        with self._lock:
            action.status, action.completed = status, time.time()

    def action(self, action_id: int, droplet_id: int | None = None) -> Action:
        with self._lock:
            action = self._actions.get(action_id)
        if action is None or (droplet_id is not None and action.droplet_id != droplet_id):
            raise not_found()
        return action

    def actions(self, droplet_id: int | None = None) -> list[Action]:
        with self._lock:
            return [a for a in self._actions.values() if droplet_id is None or a.droplet_id == droplet_id]

    # --- for tests, benchmarks and the summary --------------------------
    def lifetimes(self) -> list[dict[str, Any]]:
        """Every droplet ever created: name, tags, created, deleted, billed seconds."""
        with self._lock:
            return [
                {
                    "id": d.id,
                    "name": d.name,
                    "tags": list(d.tags),
                    "size": d.size,
                    "created": d.created,
                    "deleted": d.deleted,
                    "seconds": (d.deleted or time.time()) - d.created,
                    "price_hourly": SIZES[d.size]["price_hourly"],
                    "active_at": d.active_at,
                }
                for d in self._droplets.values()
            ]

    def droplet(self, droplet_id: int) -> Droplet | None:
        """A droplet's record, deleted or not, without faults (for tests)."""
        with self._lock:
            return self._droplets.get(droplet_id)

    def alive(self) -> list[Droplet]:
        return self.tagged(None)

    def shutdown(self) -> None:
        """Delete every droplet and snapshot (the emulator going away takes its machines with it)."""
        self.faults = Faults()
        for droplet in self.alive():
            with self._lock:
                droplet.deleted = time.time()
                droplet.status = "archive"
            self._destroy(droplet.id)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=60)
        for snapshot in list(self._snapshots.values()):
            try:
                self.backend.delete_image(snapshot.ref)
            except MachineError:
                pass
        try:
            self.backend.close()
        finally:
            if self._own_docker is not None:
                self._own_docker.stop()
