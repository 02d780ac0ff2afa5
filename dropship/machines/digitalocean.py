"""DigitalOcean droplets through pydo.

Droplets carry `dropship`, `dropship-run-<run id>` and the target's tag, so
teardown and the reaper find them by tag. The orchestrator's per-run SSH key
is registered as an account key named `dropship-run-<run id>` (or a
long-lived key named in the block is used) and sent as `ssh_keys`, so the
droplet's cloud-init installs it for root; teardown and the reaper delete
the run's key with its droplets.

Requests that DigitalOcean answers 429 or 5xx are retried with backoff that
honours `Retry-After`, and `ratelimit-reset` on a 429 without it (azure-core's
own retry policy is switched off). A create is never retried blindly: after a
5xx or a dropped connection the droplet may exist all the same, so the run's
droplets are listed and the target's droplet is taken if it is there. Some
pydo calls return DigitalOcean's 404 body instead of raising: every call goes
through `_capture`, which hands back the real status code, so a 404 is a 404
whichever way pydo reports it. While droplets boot, one list-by-tag request
per poll serves every droplet of the run (16 droplets cost one request per
poll, not 16), with a growing interval. Every pydo/azure-core exception is
converted here.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pydo
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.policies import RetryPolicy

from dropship.errors import ConfigError, DropshipError, MachineError, NotFound
from dropship.machines import BASE_TAG, RUN_TAG_PREFIX, WORK_DIR, Machine, MachineRequest

SNAPSHOT_PREFIX = "dropship-"
"""Names of snapshots made by `dropship image build`: dropship-<base image>-<hash>."""


@dataclass(frozen=True)
class DigitalOceanSettings:
    token: str
    endpoint: str = "https://api.digitalocean.com"
    ssh_port: int = 22
    ssh_user: str = "root"
    vpcs: Mapping[str, str] = field(default_factory=dict)
    """Region slug -> VPC uuid; a region not named uses the account's default VPC."""
    private_network: bool = True
    """Connect to the droplet's private address (the orchestrator in the same VPC)."""
    ssh_key: str | None = None
    """A long-lived account SSH key (name or fingerprint) to send instead of a per-run key."""
    ready_timeout: float = 300.0
    poll_interval: float = 2.0
    max_poll_interval: float = 10.0
    not_found_grace: float = 30.0
    """How long a droplet just created may be missing from the API (404) before it counts as gone."""
    max_attempts: int = 6

    def __repr__(self) -> str:  # the token never reaches a log line
        return f"DigitalOceanSettings(endpoint={self.endpoint!r}, ssh_port={self.ssh_port}, token=****)"


class _Transient(Exception):
    """An answer worth trying again: 429, 5xx, a dropped connection, a pending event."""

    def __init__(self, message: str, delay: float, maybe_done: bool, unreachable: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.delay = delay
        self.maybe_done = maybe_done
        """True when the request may have taken effect although it failed (5xx, dropped connection)."""
        self.unreachable = unreachable
        """The OS's reason when nothing answered at the endpoint (refused, no route, no name): not the
        token's fault."""


_OS_ERROR = re.compile(r"\[Errno -?\d+\] [^'\")]+")


def _no_answer(exc: Exception) -> str:
    """The OS's reason inside azure-core's long connection error (`[Errno 111] Connection refused`)."""
    found = _OS_ERROR.search(str(exc))
    return found.group(0).strip() if found else type(exc).__name__


def _capture(pipeline_response: Any, deserialized: Any, headers: Any) -> tuple[int, Any]:
    """pydo's `cls` hook: the real status code with the body."""
    return int(pipeline_response.http_response.status_code), deserialized


def key_name(run_id: str) -> str:
    """The account SSH key of one run: the reaper finds it by this name."""
    return f"{RUN_TAG_PREFIX}{run_id}"


def image_hash_of(name: str) -> tuple[str, str] | None:
    """(base image, hash) of a snapshot named by `dropship image build`, else None."""
    if not name.startswith(SNAPSHOT_PREFIX):
        return None
    base, _, digest = name[len(SNAPSHOT_PREFIX) :].rpartition("-")
    if not base or len(digest) != 20 or not all(c in "0123456789abcdef" for c in digest):
        return None
    return base, digest


def snapshot_name(base: str, digest: str) -> str:
    return f"{SNAPSHOT_PREFIX}{base}-{digest[:20]}"


class _Watch:
    """The last list-by-tag answer for one run, shared by every droplet waiting on it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.polled = float("-inf")
        self.seen: dict[int, dict[str, Any]] = {}
        self.requests = 0


_WATCHES: dict[tuple[str, str], _Watch] = {}
_KEY_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()


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

    # --- the boundary -----------------------------------------------------
    def _once(self, what: str, operation: Callable[..., Any], **kwargs: Any) -> Any:
        """One request; errors classified; a 404 (raised or returned) becomes `NotFound`."""
        try:
            status, body = operation(**kwargs, enforce_https=self._enforce_https, cls=_capture)
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
            if status == 422 and "pending event" in message.lower():
                raise _Transient(f"422 {message}", 5.0, maybe_done=False) from exc
            if status == 422:
                raise ConfigError(
                    f"DigitalOcean refused to {what} (422): {message}. Check the target's size, image and region "
                    "in dropship.toml, and the account's droplet limit"
                ) from exc
            if status == 429 or status >= 500:
                raise _Transient(f"{status} {message}", _retry_delay(exc), maybe_done=status != 429) from exc
            raise MachineError(f"DigitalOcean answered {status} to {what}: {message}") from exc
        except ServiceRequestError as exc:  # the request never got an answer: refused, no route, no name
            reason = _no_answer(exc)
            raise _Transient(f"no answer ({reason})", 2.0, maybe_done=False, unreachable=reason) from exc
        except ServiceResponseError as exc:
            raise _Transient(f"no answer ({_no_answer(exc)})", 2.0, maybe_done=True) from exc
        if status == 404:
            message = str((body or {}).get("message", "")) if isinstance(body, dict) else ""
            raise NotFound(f"{what}: not found (404): {message}")
        return body if body is not None else {}

    def _exhausted(self, what: str, last: _Transient | None) -> DropshipError:
        """The error once the attempts ran out: an endpoint where nothing answers says so, as a
        configuration error (the token is not the question then)."""
        if last is not None and last.unreachable is not None:
            return ConfigError(
                f"nothing answers at the DigitalOcean endpoint {self.settings.endpoint} "
                f"({last.unreachable}, {self.settings.max_attempts} attempts "
                f"to {what}): check `endpoint` in the DigitalOceanCredentials block (for the emulator: is "
                "`dropship emulator` running, and has it printed that it listens?)"
            )
        answer = last.message if last is not None else "none"
        return MachineError(f"could not {what} after {self.settings.max_attempts} attempts: last answer {answer}")

    def _call(self, what: str, operation: Callable[..., Any], **kwargs: Any) -> Any:
        """`_once`, retried with backoff; only for requests that are safe to repeat."""
        last: _Transient | None = None
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                return self._once(what, operation, **kwargs)
            except _Transient as exc:
                last = exc
                if attempt < self.settings.max_attempts:
                    self._sleep(_backoff(exc.delay, attempt))
        raise self._exhausted(what, last)

    def _all(self, what: str, operation: Callable[..., Any], key: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Every page of a list call."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = self._call(what, operation, per_page=200, page=page, **kwargs)
            batch = answer.get(key) or []
            items += batch
            total = int((answer.get("meta") or {}).get("total", len(items)))
            has_next = bool(((answer.get("links") or {}).get("pages") or {}).get("next"))
            if not batch or (len(items) >= total and not has_next):
                return items
            page += 1

    # --- preflight --------------------------------------------------------
    def preflight(self, machines: Iterable[tuple[str, str, str]]) -> dict[str, dict[str, Any]]:
        """Check (size, image, region) triples before any droplet exists; return each image found.

        The token; each size exists, is available and is offered in its
        region; each image (slug, id or snapshot name) exists in its region;
        and the account's droplet limit leaves room for one droplet per
        machine next to the droplets already alive.
        """
        wanted = list(machines)
        account = self._call("read the account", self.client.account.get)["account"]
        sizes = {s["slug"]: s for s in self._all("list sizes", self.client.sizes.list, "sizes")}
        regions = {r["slug"]: r for r in self._all("list regions", self.client.regions.list, "regions")}
        images: dict[str, dict[str, Any]] = {}
        for size, image, region in wanted:
            if region not in regions:
                raise ConfigError(f"DigitalOcean has no region {region}: fix the region in dropship.toml")
            if size not in sizes:
                raise ConfigError(f"DigitalOcean has no droplet size {size}: fix the size in dropship.toml")
            offered = sizes[size]
            if not offered.get("available", True) or region not in (offered.get("regions") or []):
                raise ConfigError(
                    f"droplet size {size} is not available in region {region}: choose another size or region in "
                    "dropship.toml"
                )
            found = images.get(image) or self.find_image(image)
            if found is None:
                raise ConfigError(
                    f"DigitalOcean has no image {image} (neither a distribution slug nor a snapshot of this account): "
                    "fix the image in dropship.toml, or make the snapshot with `dropship image build`"
                )
            if region not in (found.get("regions") or []):
                raise ConfigError(
                    f"image {image} is not available in region {region}: transfer the snapshot there or change the "
                    "region in dropship.toml"
                )
            images[image] = found
        limit = int(account.get("droplet_limit", 0))
        alive = sum(
            1 for d in self._all("list droplets", self.client.droplets.list, "droplets") if d.get("status") != "archive"
        )
        if limit - alive < len(wanted):
            raise ConfigError(
                f"this release needs {len(wanted)} droplet(s) but the account's droplet limit is {limit} with {alive} "
                "alive: delete droplets or ask DigitalOcean to raise the limit"
            )
        return images

    def find_image(self, image: str) -> dict[str, Any] | None:
        """A distribution image by slug or id, or a snapshot of this account by name or id."""
        public = self._all("list distribution images", self.client.images.list, "images", type="distribution")
        private = self._all("list this account's snapshots", self.client.images.list, "images", private=True)
        for candidate in public:
            if image in (str(candidate.get("slug") or ""), str(candidate.get("id"))):
                return candidate
        for candidate in private:
            if image in (str(candidate.get("name") or ""), str(candidate.get("id"))):
                return candidate
        return None

    # --- SSH keys ---------------------------------------------------------
    def _ssh_key_ids(self, request: MachineRequest) -> list[int]:
        keys = self._all("list SSH keys", self.client.ssh_keys.list, "ssh_keys")
        if self.settings.ssh_key:
            for key in keys:
                if self.settings.ssh_key in (key.get("name"), key.get("fingerprint"), str(key.get("id"))):
                    return [int(key["id"])]
            raise ConfigError(
                f"DigitalOcean account has no SSH key {self.settings.ssh_key!r}: register it or fix ssh_key in the "
                "DigitalOceanCredentials block"
            )
        run_id = next((t[len(RUN_TAG_PREFIX) :] for t in request.tags if t.startswith(RUN_TAG_PREFIX)), None)
        if not request.authorized_key or run_id is None:
            return []
        name = key_name(run_id)
        with _REGISTRY_LOCK:
            lock = _KEY_LOCKS.setdefault((self.settings.endpoint, name), threading.Lock())
        with lock:  # the run's targets provision in parallel: one key for all of them
            mine = _same_key(request.authorized_key)
            for key in self._all("list SSH keys", self.client.ssh_keys.list, "ssh_keys"):
                if key.get("name") == name or _same_key(str(key.get("public_key", ""))) == mine:
                    return [int(key["id"])]
            answer = self._call(
                f"register SSH key {name}",
                self.client.ssh_keys.create,
                body={"name": name, "public_key": request.authorized_key},
            )
            return [int(answer["ssh_key"]["id"])]

    def release_run(self, run_id: str) -> None:
        """Delete what a run registered besides its droplets: its SSH key."""
        name = key_name(run_id)
        for key in self._all("list SSH keys", self.client.ssh_keys.list, "ssh_keys"):
            if key.get("name") == name:
                try:
                    self._call(f"delete SSH key {name}", self.client.ssh_keys.delete, ssh_key_identifier=int(key["id"]))
                except NotFound:
                    pass

    def run_leftovers(self) -> list[str]:
        """Run ids whose SSH key is still registered."""
        return [
            str(k["name"])[len(RUN_TAG_PREFIX) :]
            for k in self._all("list SSH keys", self.client.ssh_keys.list, "ssh_keys")
            if str(k.get("name", "")).startswith(RUN_TAG_PREFIX)
        ]

    # --- Provider ---------------------------------------------------------
    def create(self, request: MachineRequest) -> Machine:
        body: dict[str, Any] = {
            "name": request.name,
            "region": request.region,
            "size": request.size,
            "image": self._image_ref(request.image),
            "tags": list(dict.fromkeys((BASE_TAG, *request.tags))),
            "user_data": request.user_data,
            "ssh_keys": self._ssh_key_ids(request),
            "ipv6": False,
            "monitoring": False,
            "backups": False,
        }
        vpc = self.settings.vpcs.get(request.region)
        if vpc:
            body["vpc_uuid"] = vpc
        droplet_id = self._create_once(request, body)
        try:
            droplet = self._wait_active(droplet_id, request)
        except BaseException:
            self.delete(str(droplet_id))
            raise
        return self._machine(droplet, request.host_public_key)

    def _image_ref(self, image: str) -> int | str:
        """What `POST /v2/droplets` takes: a slug or an id; a snapshot named in the manifest becomes its id."""
        if image.isdigit():
            return int(image)
        found = self.find_image(image)
        if found is None:
            raise ConfigError(
                f"DigitalOcean has no image {image} (slug or snapshot name): fix the image in dropship.toml"
            )
        return str(found["slug"]) if found.get("slug") == image else int(found["id"])

    def _create_once(self, request: MachineRequest, body: dict[str, Any]) -> int:
        """POST the droplet; after an answer that may hide a success, look for it before posting again."""
        what = f"create droplet {request.name}"
        last = ""
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                answer = self._once(what, self.client.droplets.create, body=body)
                return int(answer["droplet"]["id"])
            except _Transient as exc:
                last = exc.message
                self._sleep(_backoff(exc.delay, attempt))
                if exc.maybe_done:
                    found = self._find_created(request)
                    if found is not None:
                        return found
        raise MachineError(f"could not {what} after {self.settings.max_attempts} attempts: last answer {last}")

    def _find_created(self, request: MachineRequest) -> int | None:
        """The droplet of this run and target, if a failed-looking create made it."""
        run = next((t for t in request.tags if t.startswith(RUN_TAG_PREFIX)), None)
        if run is None:
            return None
        target_tags = set(request.tags)
        for droplet in self._all(f"list droplets tagged {run}", self.client.droplets.list, "droplets", tag_name=run):
            if (
                target_tags <= set(droplet.get("tags") or [])
                and droplet.get("name") == request.name
                and droplet.get("status") != "archive"
            ):
                return int(droplet["id"])
        return None

    def _watch(self, tag: str) -> _Watch:
        with _REGISTRY_LOCK:
            return _WATCHES.setdefault((self.settings.endpoint, tag), _Watch())

    def _poll(self, tag: str, droplet_id: int, interval: float) -> dict[str, Any] | None:
        """The droplet as last listed; lists the tag again only if that answer is older than `interval`."""
        watch = self._watch(tag)
        with watch.lock:
            if time.monotonic() - watch.polled >= interval * 0.9:
                listed = self._all(f"list droplets tagged {tag}", self.client.droplets.list, "droplets", tag_name=tag)
                watch.seen = {int(d["id"]): d for d in listed}
                watch.polled = time.monotonic()
                watch.requests += 1
            return watch.seen.get(droplet_id)

    def poll_requests(self, tag: str) -> int:
        """How many list requests the waits on `tag` made (for tests and benchmarks)."""
        return self._watch(tag).requests

    def _wait_active(self, droplet_id: int, request: MachineRequest) -> dict[str, Any]:
        name = request.name
        tag = next((t for t in request.tags if t.startswith(RUN_TAG_PREFIX)), None) or BASE_TAG
        started = time.monotonic()
        deadline = started + self.settings.ready_timeout
        interval = self.settings.poll_interval
        while True:
            droplet = self._poll(tag, droplet_id, interval)
            if droplet is None:
                if time.monotonic() - started > self.settings.not_found_grace:
                    raise MachineError(
                        f"droplet {name} ({droplet_id}) was created but DigitalOcean has not listed it for "
                        f"{self.settings.not_found_grace:.0f} s; deleted it"
                    )
            elif droplet["status"] == "active":
                return droplet
            elif droplet["status"] != "new":
                raise MachineError(f"droplet {name} ({droplet_id}) is {droplet['status']!r} instead of booting")
            if time.monotonic() >= deadline:
                raise MachineError(
                    f"droplet {name} ({droplet_id}) was still 'new' after {self.settings.ready_timeout:.0f} s; deleted it"
                )
            self._sleep(interval)
            interval = min(interval * 1.5, max(self.settings.max_poll_interval, self.settings.poll_interval))

    def _machine(self, droplet: dict[str, Any], host_public_key: str = "") -> Machine:
        kind = "private" if self.settings.private_network else "public"
        addresses = {n["type"]: n["ip_address"] for n in droplet.get("networks", {}).get("v4", [])}
        host = addresses.get(kind) or addresses.get("public") or ""
        # The emulator may say which folder plays the droplet's /, and its SSH
        # port and user; a real droplet has no such field.
        emulated = droplet.get("dropship_emulator") or {}
        root = str(emulated.get("root", ""))
        created = datetime.strptime(droplet["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        size = droplet.get("size") or {}
        image = droplet.get("image") or {}
        return Machine(
            id=str(droplet["id"]),
            name=droplet["name"],
            provider=self.name,
            tags=tuple(droplet.get("tags", [])),
            host=host,
            port=int(emulated.get("ssh_port", self.settings.ssh_port)),
            user=str(emulated.get("ssh_user", self.settings.ssh_user)),
            work_dir=f"{root}{WORK_DIR}",
            root=root,
            created_at=created,
            host_public_key=host_public_key,
            price_hourly=float(size["price_hourly"]) if size.get("price_hourly") is not None else None,
            details={
                "size": str(droplet.get("size_slug", "")),
                "region": str((droplet.get("region") or {}).get("slug", "")),
                "image": str(image.get("slug") or image.get("name") or image.get("id") or ""),
            },
        )

    def list(self, tag: str = BASE_TAG) -> list[Machine]:
        droplets = self._all(f"list droplets tagged {tag}", self.client.droplets.list, "droplets", tag_name=tag)
        return [self._machine(d) for d in droplets if d.get("status") != "archive"]  # archive: deleted, still listed

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

    # --- snapshots --------------------------------------------------------
    def _wait_action(self, droplet_id: int, action: dict[str, Any], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        interval = self.settings.poll_interval
        while action.get("status") == "in-progress":
            if time.monotonic() >= deadline:
                raise MachineError(f"{what} was still in progress after {timeout:.0f} s")
            self._sleep(interval)
            interval = min(interval * 1.5, max(self.settings.max_poll_interval, self.settings.poll_interval))
            action = self._call(
                f"read the {what} action",
                self.client.droplet_actions.get,
                droplet_id=droplet_id,
                action_id=int(action["id"]),
            )["action"]
        if action.get("status") != "completed":
            raise MachineError(f"{what} ended {action.get('status')!r}")

    def snapshot(self, machine_id: str, name: str, *, timeout: float = 1800.0) -> dict[str, Any]:
        """Power the droplet off, snapshot it as `name`, wait; return the snapshot image."""
        droplet_id = int(machine_id)
        for kind, body in (("power_off", {"type": "power_off"}), ("snapshot", {"type": "snapshot", "name": name})):
            what = f"{kind} of droplet {machine_id}"
            action = self._call(what, self.client.droplet_actions.post, droplet_id=droplet_id, body=body)["action"]
            self._wait_action(droplet_id, action, what, timeout)
        found = [
            i
            for i in self._all("list this account's snapshots", self.client.images.list, "images", private=True)
            if i.get("name") == name
        ]
        if not found:
            raise MachineError(f"the snapshot {name} of droplet {machine_id} completed but is not listed among images")
        return max(found, key=lambda i: int(i["id"]))


MINIMUM_SECONDS = 60
MINIMUM_CHARGE = 0.01


def billed_seconds(seconds: float) -> int:
    """Droplets are billed per second since 2026-01-01, at least 60 seconds (docs/architecture.md)."""
    return max(MINIMUM_SECONDS, math.ceil(seconds))


def droplet_cost(seconds: float, price_hourly: float) -> float:
    """USD for one droplet's life: per second, with the minimum of 60 s or $0.01, whichever is higher."""
    return max(billed_seconds(seconds) / 3600 * price_hourly, MINIMUM_CHARGE)


def _same_key(line: str) -> str:
    """A public key line without its comment."""
    return " ".join(line.split()[:2])


def _api_message(exc: HttpResponseError) -> str:
    response: Any = exc.response
    try:
        data = response.json() if response is not None else {}
        return str(data.get("message") or data)
    except (ValueError, AttributeError):
        return str(exc.message or exc)


def _backoff(delay: float, attempt: int) -> float:
    """At least what the server asked for; exponential with jitter otherwise."""
    return max(delay, min(2.0 ** (attempt - 1), 30.0) * (0.5 + random.random() / 2))


def _retry_delay(exc: HttpResponseError) -> float:
    """Retry-After if given; for a 429 without it, until ratelimit-reset.

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
    return 0.0
