"""The emulator's API as DigitalOcean's reference describes it: pagination, error bodies,
the hourly rate budget, the catalogue's region rules, VPCs, SSH keys, archived droplets
and the faults. Droplets here never boot (`stuck-new`): these tests are about the API."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dropship.emulator.server import EmulatorServer
from dropship.emulator.state import Emulator
from dropship.errors import ConfigError
from dropship.ssh import generate_keypair
from tests.droplets import TOKEN, EmulatorUnderTest, pydo_client


@pytest.fixture
def api(tmp_path: Path) -> Iterator[EmulatorUnderTest]:
    emulator = Emulator(tmp_path / "emulator", token=TOKEN, machines="processes", archive_seconds=2.0)
    emulator.faults.apply("stuck-new")
    server = EmulatorServer(emulator).start()
    yield EmulatorUnderTest(emulator, server.url, pydo_client(server.url))
    server.stop()


def raw(
    api: EmulatorUnderTest, method: str, path: str, body: dict[str, Any] | None = None, token: str = TOKEN
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One request without pydo, to see status and headers."""
    request = urllib.request.Request(
        f"{api.url}{path}",
        method=method,
        headers={"Authorization": f"Bearer {token}"},
        data=json.dumps(body).encode() if body is not None else None,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            data = response.read()
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                json.loads(data) if data else {},
            )
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(exc.read() or b"{}")


DROPLET = {"name": "api-1", "region": "nyc1", "size": "s-1vcpu-1gb", "image": "debian-12-x64", "tags": ["api"]}


def test_ssh_keys_paginate_as_digitalocean(api: EmulatorUnderTest) -> None:
    for n in range(45):
        api.call(
            api.client.ssh_keys.create, body={"name": f"key-{n}", "public_key": generate_keypair(f"k{n}").public_line}
        )
    first = api.call(api.client.ssh_keys.list)
    assert len(first["ssh_keys"]) == 20 and first["meta"] == {"total": 45}  # type: ignore[arg-type]
    pages = first["links"]["pages"]  # type: ignore[index]
    assert set(pages) == {"next", "last"}
    assert pages["next"] == f"{api.url}/v2/account/keys?page=2&per_page=20"
    assert pages["last"] == f"{api.url}/v2/account/keys?page=3&per_page=20"
    middle = api.call(api.client.ssh_keys.list, page=2)
    assert set(middle["links"]["pages"]) == {"first", "prev", "next", "last"}  # type: ignore[index]
    last = api.call(api.client.ssh_keys.list, page=3)
    assert len(last["ssh_keys"]) == 5 and set(last["links"]["pages"]) == {"first", "prev"}  # type: ignore[arg-type, index]
    names = [k["name"] for p in (first, middle, last) for k in p["ssh_keys"]]  # type: ignore[attr-defined]
    assert names == [f"key-{n}" for n in range(45)]
    everything = api.call(api.client.ssh_keys.list, per_page=500)  # above the maximum: 200
    assert len(everything["ssh_keys"]) == 45 and everything["links"] == {}  # type: ignore[arg-type]
    status, _, error = raw(api, "GET", "/v2/account/keys?per_page=many")
    assert status == 400 and error["id"] == "bad_request"


def test_ssh_keys_have_digitaloceans_md5_fingerprint_and_are_found_by_id_or_fingerprint(
    api: EmulatorUnderTest, tmp_path: Path
) -> None:
    key = generate_keypair("fp")
    (tmp_path / "key.pub").write_text(key.public_line + "\n")
    expected = (
        subprocess.run(
            ["ssh-keygen", "-l", "-E", "md5", "-f", str(tmp_path / "key.pub")],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.split()[1]
        .removeprefix("MD5:")
    )
    made = api.call(api.client.ssh_keys.create, body={"name": "laptop", "public_key": key.public_line})["ssh_key"]
    assert made == {"id": made["id"], "fingerprint": expected, "public_key": key.public_line, "name": "laptop"}  # type: ignore[index]
    assert api.call(api.client.ssh_keys.get, ssh_key_identifier=expected)["ssh_key"] == made
    assert api.call(api.client.ssh_keys.get, ssh_key_identifier=made["id"])["ssh_key"] == made  # type: ignore[index]
    status, _, error = raw(api, "POST", "/v2/account/keys", {"name": "again", "public_key": key.public_line})
    assert (status, error["message"]) == (422, "SSH Key is already in use on your account")
    status, _, error = raw(api, "POST", "/v2/account/keys", {"name": "bad", "public_key": "ssh-ed25519 bm90IGEga2V5"})
    assert status == 422 and error["id"] == "unprocessable_entity"
    api.call(api.client.ssh_keys.delete, ssh_key_identifier=expected)
    assert raw(api, "GET", f"/v2/account/keys/{made['id']}")[0] == 404  # type: ignore[index]


def test_errors_carry_id_message_and_request_id(api: EmulatorUnderTest) -> None:
    status, headers, error = raw(api, "GET", "/v2/droplets/12345")
    assert status == 404 and set(error) == {"id", "message", "request_id"} and error["id"] == "not_found"
    assert headers["x-request-id"] == error["request_id"]
    status, _, error = raw(api, "GET", "/v2/droplets", token="wrong")
    assert status == 401 and error["id"] == "unauthorized"


def test_rate_budget_decreases_and_429_has_no_retry_after(tmp_path: Path) -> None:
    emulator = Emulator(tmp_path / "emulator", token=TOKEN, machines="processes", rate_limit=5)
    server = EmulatorServer(emulator).start()
    api = EmulatorUnderTest(emulator, server.url, pydo_client(server.url))
    try:
        first_at = time.time()
        remaining = []
        for _ in range(5):
            status, headers, _ = raw(api, "GET", "/v2/account")
            assert status == 200 and headers["ratelimit-limit"] == "5"
            remaining.append(int(headers["ratelimit-remaining"]))
        assert remaining == [4, 3, 2, 1, 0]
        status, headers, error = raw(api, "GET", "/v2/account")
        assert status == 429 and error["id"] == "too_many_requests" and "retry-after" not in headers
        assert headers["ratelimit-remaining"] == "0"
        reset = int(headers["ratelimit-reset"])  # when the oldest request of the hour expires
        assert first_at + 3600 - 2 <= reset <= first_at + 3600 + 2
        assert raw(api, "GET", "/v2/account", token="wrong")[0] == 401  # unauthenticated: not the budget's concern
    finally:
        server.stop()


def test_sizes_and_images_live_in_regions(api: EmulatorUnderTest) -> None:
    sizes = {s["slug"]: s for s in api.call(api.client.sizes.list)["sizes"]}  # type: ignore[attr-defined]
    assert all(s["available"] and s["regions"] for s in sizes.values())
    missing = [
        (slug, region)
        for slug, s in sizes.items()
        for region in ("nyc1", "nyc3", "ams3", "fra1", "sfo3")
        if region not in s["regions"]
    ]
    assert missing  # some size is not offered somewhere
    slug, region = missing[0]
    status, _, error = raw(api, "POST", "/v2/droplets", {**DROPLET, "size": slug, "region": region})
    assert (status, error["message"]) == (422, "Size is not available in this region.")
    images = api.call(api.client.images.list, type="distribution")["images"]
    (debian,) = [i for i in images if i["slug"] == "debian-12-x64"]  # type: ignore[attr-defined]
    assert debian["public"] and debian["type"] == "base" and "nyc1" in debian["regions"]
    assert raw(api, "POST", "/v2/droplets", {**DROPLET, "image": "ubuntu-99-x64"})[0] == 422
    assert raw(api, "POST", "/v2/droplets", {**DROPLET, "image": debian["id"]})[0] == 202
    assert api.call(api.client.images.list, private=True)["images"] == []


def test_vpc_must_be_of_the_droplets_region(api: EmulatorUnderTest) -> None:
    vpcs = api.call(api.client.vpcs.list)["vpcs"]
    by_region = {v["region"]: v for v in vpcs}  # type: ignore[attr-defined]
    assert len(by_region) == len(vpcs) and all(v["default"] for v in vpcs)  # type: ignore[arg-type, attr-defined]
    status, _, error = raw(api, "POST", "/v2/droplets", {**DROPLET, "vpc_uuid": by_region["fra1"]["id"]})
    assert status == 422 and "fra1" in error["message"]
    status, _, created = raw(api, "POST", "/v2/droplets", {**DROPLET, "vpc_uuid": by_region["nyc1"]["id"]})
    assert status == 202 and created["droplet"]["vpc_uuid"] == by_region["nyc1"]["id"]
    plain = raw(api, "POST", "/v2/droplets", {**DROPLET, "name": "api-2"})[2]["droplet"]
    assert plain["vpc_uuid"] == by_region["nyc1"]["id"]  # the region's default VPC


def test_unknown_ssh_key_is_refused(api: EmulatorUnderTest) -> None:
    status, _, error = raw(api, "POST", "/v2/droplets", {**DROPLET, "ssh_keys": [424242]})
    assert status == 422 and "424242" in error["message"]
    assert api.emulator.lifetimes() == []


def test_deleted_droplet_is_listed_as_archive_for_a_while(api: EmulatorUnderTest) -> None:
    droplet = api.call(api.client.droplets.create, body=DROPLET)["droplet"]
    api.call(api.client.droplets.destroy, droplet_id=droplet["id"])  # type: ignore[index]
    assert api.call(api.client.droplets.get, droplet_id=droplet["id"])["id"] == "not_found"  # type: ignore[index]
    (listed,) = api.call(api.client.droplets.list, tag_name="api")["droplets"]  # type: ignore[misc]
    assert listed["status"] == "archive"
    assert raw(api, "DELETE", f"/v2/droplets/{droplet['id']}")[0] == 404  # type: ignore[index]
    time.sleep(2.2)
    assert api.call(api.client.droplets.list)["droplets"] == []


def test_fault_create_then_5xx_creates_the_droplet(api: EmulatorUnderTest) -> None:
    api.emulator.faults.apply("create-then-5xx")
    status, _, error = raw(api, "POST", "/v2/droplets", DROPLET)
    assert (status, error["id"]) == (500, "server_error")
    (listed,) = api.call(api.client.droplets.list, tag_name="api")["droplets"]  # type: ignore[misc]
    assert listed["name"] == "api-1" and listed["status"] == "new"
    assert raw(api, "POST", "/v2/droplets", {**DROPLET, "name": "api-2"})[0] == 202  # once only


def test_fault_404_after_create(api: EmulatorUnderTest) -> None:
    api.emulator.faults.apply("404-after-create:3")
    droplet = api.call(api.client.droplets.create, body=DROPLET)["droplet"]
    path = f"/v2/droplets/{droplet['id']}"  # type: ignore[index]
    assert [raw(api, "GET", path)[0] for _ in range(4)] == [404, 404, 404, 200]


def test_fault_pending_event_on_delete(api: EmulatorUnderTest) -> None:
    droplet = api.call(api.client.droplets.create, body=DROPLET)["droplet"]
    api.emulator.faults.apply("pending-event-on-delete:2")
    path = f"/v2/droplets/{droplet['id']}"  # type: ignore[index]
    answers = [raw(api, "DELETE", path) for _ in range(3)]
    assert [a[0] for a in answers] == [422, 422, 204]
    assert answers[0][2]["message"] == "Droplet already has a pending event."


def test_existing_faults_still_fire(api: EmulatorUnderTest) -> None:
    api.emulator.faults.apply("rate-limit:1")
    api.emulator.faults.apply("server-error:1")
    status, headers, _ = raw(api, "GET", "/v2/account")
    assert status == 429 and "retry-after" not in headers and int(headers["ratelimit-reset"]) <= time.time() + 2
    assert raw(api, "GET", "/v2/account")[0] == 500
    assert raw(api, "GET", "/v2/account")[0] == 200
    api.emulator.faults.apply("quota")
    status, _, error = raw(api, "POST", "/v2/droplets", DROPLET)
    assert status == 422 and "droplet limit" in error["message"]
    with pytest.raises(ConfigError, match="unknown fault"):
        api.emulator.faults.apply("explode")


def test_actions_need_container_droplets_and_a_booted_droplet(api: EmulatorUnderTest) -> None:
    droplet = api.call(api.client.droplets.create, body=DROPLET)["droplet"]
    status, _, error = raw(api, "POST", f"/v2/droplets/{droplet['id']}/actions", {"type": "power_off"})  # type: ignore[index]
    assert (status, error["message"]) == (422, "Droplet already has a pending event.")  # still new
    assert raw(api, "GET", "/v2/actions/1")[0] == 404
