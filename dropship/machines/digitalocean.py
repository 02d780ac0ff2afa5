"""DigitalOcean droplets through pydo.

Droplets carry `dropship`, `dropship-run-<run id>` and the target's tag, so
teardown and the reaper find them by tag. Requests that DigitalOcean answers
429 or 5xx are retried with backoff that honours `Retry-After` and
`ratelimit-reset` (azure-core's own retry policy is switched off: it knows
neither the reset header nor when to give up with a useful message); 401, 404
and 422 become errors that say what to fix. Every pydo/azure-core exception
is converted here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pydo
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.policies import RetryPolicy

from dropship.errors import ConfigError, MachineError
from dropship.machines import BASE_TAG, Machine, MachineRequest
from dropship.machines.local import WORK_DIR


@dataclass(frozen=True)
class DigitalOceanSettings:
    token: str
    endpoint: str = "https://api.digitalocean.com"
    ssh_port: int = 22
    ssh_user: str = "root"
    vpc_uuid: str | None = None
    private_network: bool = True
    """Connect to the droplet's private address (the orchestrator in the same VPC)."""
    ready_timeout: float = 300.0
    poll_interval: float = 2.0
    max_attempts: int = 6

    def __repr__(self) -> str:  # the token never reaches a log line
        return f"DigitalOceanSettings(endpoint={self.endpoint!r}, ssh_port={self.ssh_port}, token=****)"


class NotFound(MachineError):
    """The droplet does not exist (any more)."""


class DigitalOceanProvider:
    name = "digitalocean"

    def __init__(self, settings: DigitalOceanSettings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        if not settings.token:
            raise ConfigError("no DigitalOcean token: set it in the DigitalOceanCredentials block")
        self.settings = settings
        self._sleep = sleep
        self.client = pydo.Client(
            token=settings.token, endpoint=settings.endpoint, retry_policy=RetryPolicy(retry_total=0), timeout=60
        )
        # azure-core sends a bearer token over HTTPS only; the emulator on loopback speaks plain HTTP.
        self._enforce_https = not settings.endpoint.startswith(("http://127.", "http://localhost"))

    # --- the retrying boundary ----------------------------------------------
    def _call(self, what: str, operation: Callable[..., Any], **kwargs: Any) -> Any:
        last = ""
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                return operation(**kwargs, enforce_https=self._enforce_https)
            except HttpResponseError as exc:
                status = exc.status_code or 0
                message = _api_message(exc)
                if status == 401:
                    raise ConfigError(
                        f"DigitalOcean refused the API token (401) while trying to {what}: check the token in the "
                        "DigitalOceanCredentials block"
                    ) from exc
                if status == 404:
                    raise NotFound(f"{what}: not found (404): {message}") from exc
                if status == 422:
                    raise ConfigError(
                        f"DigitalOcean refused to {what} (422): {message}. Check the target's size, image and region "
                        "in dropship.toml, and the account's droplet limit"
                    ) from exc
                if status != 429 and status < 500:
                    raise MachineError(f"DigitalOcean answered {status} to {what}: {message}") from exc
                last = f"{status} {message}"
                delay = _retry_delay(exc, attempt)
            except (ServiceRequestError, ServiceResponseError) as exc:
                last = f"no answer ({exc})"
                delay = min(2.0 ** attempt, 30.0)
            if attempt < self.settings.max_attempts:
                self._sleep(delay)
        raise MachineError(f"could not {what} after {self.settings.max_attempts} attempts: last answer {last}")

    def preflight(self, sizes: set[str], regions: set[str]) -> None:
        """Check the token, sizes and regions before any droplet is created."""
        self._call("read the account", self.client.account.get)
        known_sizes = {s["slug"] for s in self._call("list sizes", self.client.sizes.list, per_page=200)["sizes"]}
        known_regions = {r["slug"] for r in self._call("list regions", self.client.regions.list, per_page=200)["regions"]}
        unknown = sorted(sizes - known_sizes)
        if unknown:
            raise ConfigError(f"DigitalOcean has no droplet size {', '.join(unknown)}: fix the size in dropship.toml")
        unknown = sorted(regions - known_regions)
        if unknown:
            raise ConfigError(f"DigitalOcean has no region {', '.join(unknown)}: fix the region in dropship.toml")

    # --- Provider --------------------------------------------------------
    def create(self, request: MachineRequest) -> Machine:
        body: dict[str, Any] = {
            "name": request.name,
            "region": request.region,
            "size": request.size,
            "image": request.image,
            "tags": list(dict.fromkeys((BASE_TAG, *request.tags))),
            "user_data": request.user_data,
            "ipv6": False,
            "monitoring": False,
            "backups": False,
        }
        if self.settings.vpc_uuid:
            body["vpc_uuid"] = self.settings.vpc_uuid
        answer = self._call(f"create droplet {request.name}", self.client.droplets.create, body=body)
        droplet_id = int(answer["droplet"]["id"])
        try:
            droplet = self._wait_active(droplet_id, request.name)
        except BaseException:
            self.delete(str(droplet_id))
            raise
        return self._machine(droplet, request.host_public_key)

    def _wait_active(self, droplet_id: int, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.settings.ready_timeout
        while True:
            droplet: dict[str, Any] = self._call(f"read droplet {name}", self.client.droplets.get, droplet_id=droplet_id)["droplet"]
            if droplet["status"] == "active":
                return droplet
            if droplet["status"] not in ("new",):
                raise MachineError(f"droplet {name} ({droplet_id}) is {droplet['status']!r} instead of booting")
            if time.monotonic() >= deadline:
                raise MachineError(
                    f"droplet {name} ({droplet_id}) was still 'new' after {self.settings.ready_timeout:.0f} s; deleted it"
                )
            self._sleep(self.settings.poll_interval)

    def _machine(self, droplet: dict[str, Any], host_public_key: str = "") -> Machine:
        kind = "private" if self.settings.private_network else "public"
        addresses = {n["type"]: n["ip_address"] for n in droplet.get("networks", {}).get("v4", [])}
        host = addresses.get(kind) or addresses.get("public") or ""
        # The emulator says which folder plays the droplet's /, and its SSH port
        # and user; a real droplet has no such field.
        emulated = droplet.get("dropship_emulator") or {}
        root = str(emulated.get("root", ""))
        created = datetime.strptime(droplet["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        size = droplet.get("size") or {}
        return Machine(
            id=str(droplet["id"]), name=droplet["name"], provider=self.name, tags=tuple(droplet.get("tags", [])),
            host=host, port=int(emulated.get("ssh_port", self.settings.ssh_port)),
            user=str(emulated.get("ssh_user", self.settings.ssh_user)), work_dir=f"{root}{WORK_DIR}",
            created_at=created, host_public_key=host_public_key,
            details={"size": str(droplet.get("size_slug", "")), "region": str((droplet.get("region") or {}).get("slug", "")),
                     "price_hourly": str(size.get("price_hourly", ""))},
        )

    def list(self, tag: str = BASE_TAG) -> list[Machine]:
        machines: list[Machine] = []
        page = 1
        while True:
            answer = self._call(f"list droplets tagged {tag}", self.client.droplets.list, tag_name=tag, per_page=200, page=page)
            machines += [self._machine(d) for d in answer.get("droplets", [])]
            if len(machines) >= int((answer.get("meta") or {}).get("total", 0)) or not answer.get("droplets"):
                return machines
            page += 1

    def alive(self, machine_id: str) -> bool:
        """The droplet exists and is `active` (not `off` or `archive`)."""
        try:
            answer = self._call(f"read droplet {machine_id}", self.client.droplets.get, droplet_id=int(machine_id))
        except NotFound:
            return False
        return bool(answer.get("droplet", {}).get("status") == "active")

    def delete(self, machine_id: str) -> None:
        try:
            self._call(f"delete droplet {machine_id}", self.client.droplets.destroy, droplet_id=int(machine_id))
        except NotFound:
            pass  # already gone


def _api_message(exc: HttpResponseError) -> str:
    response: Any = exc.response
    try:
        data = response.json() if response is not None else {}
        return str(data.get("message") or data)
    except (ValueError, AttributeError):
        return str(exc.message or exc)


def _retry_delay(exc: HttpResponseError, attempt: int) -> float:
    """Retry-After if given; for 429, until ratelimit-reset; else exponential backoff with jitter.

    Every DigitalOcean answer carries ratelimit-reset; it only means "wait
    until then" when the limit was hit.
    """
    response: Any = exc.response
    headers = response.headers if response is not None else {}
    retry_after = headers.get("Retry-After")
    if retry_after and retry_after.isdigit():
        return float(retry_after)
    reset = headers.get("ratelimit-reset")
    if exc.status_code == 429 and reset and reset.isdigit():
        return max(0.0, min(float(reset) - time.time(), 60.0))
    return min(2.0 ** (attempt - 1), 30.0) * (0.5 + random.random() / 2)
