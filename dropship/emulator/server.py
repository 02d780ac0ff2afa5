"""The emulator's HTTP API on 127.0.0.1: the routes pydo calls for droplets and around them.

Responses use DigitalOcean's shapes and status codes (from its OpenAPI
description): 202 with `droplet` on create, 201 with `action` on a droplet
action, 200 lists with `links.pages` (absolute first/prev/next/last URLs) and
`meta.total`, `per_page` 20 by default and at most 200, 204 on delete,
`{"id", "message", "request_id"}` bodies on errors, and the `ratelimit-*`
headers on every authenticated answer.

Routes: account; sizes, regions, vpcs; images (public, `private=true`,
`type=`), one image, delete a snapshot; account keys (create, list, get,
rename, delete by id or fingerprint); droplets (create, list by tag, get,
delete, delete by tag); droplet actions (power_off, power_on, shutdown,
reboot, power_cycle, snapshot), actions (list, by id), snapshots (list, get,
delete).
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlparse

from dropship.emulator.state import (
    REGIONS,
    SIZES,
    VPCS,
    ApiError,
    Droplet,
    Emulator,
    not_found,
    region_api,
)


class _Handler(BaseHTTPRequestHandler):
    emulator: Emulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any] | None, headers: dict[str, str], request_id: str) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", request_id)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        try:
            data = json.loads(self.rfile.read(length))
        except ValueError as exc:
            raise ApiError(400, "bad_request", f"invalid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ApiError(400, "bad_request", "the body must be a JSON object")
        return data

    def _handle(self, method: str) -> None:
        request_id = str(uuid.uuid4())
        headers: dict[str, str] = {}
        try:
            body = self._body() if method in ("POST", "PUT") else {}
            headers = self.emulator.gate(method, self.headers.get("Authorization"))
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            parts = [unquote(p) for p in url.path.split("/") if p]
            self.base = f"http://{self.headers.get('Host') or '127.0.0.1'}{url.path}"
            status, answer = self._route(method, parts, query, body)
            self._send(status, answer, headers, request_id)
        except ApiError as exc:
            error = {"id": exc.error_id, "message": exc.message, "request_id": request_id}
            self._send(exc.status, error, {**headers, **exc.headers}, request_id)

    def _page(self, key: str, items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
        """One page of `items` as DigitalOcean pages: `links.pages` and `meta.total`."""
        try:
            page = int(query.get("page", 1))
            per_page = int(query.get("per_page", 20))
        except ValueError as exc:
            raise ApiError(400, "bad_request", "page and per_page must be integers") from exc
        page, per_page = max(page, 1), min(max(per_page, 1), 200)
        last = max(1, -(-len(items) // per_page))
        rest = {k: v for k, v in query.items() if k not in ("page", "per_page")}

        def link(number: int) -> str:
            return f"{self.base}?{urlencode({**rest, 'page': number, 'per_page': per_page})}"

        pages: dict[str, str] = {}
        if page > 1:
            pages.update(first=link(1), prev=link(min(page - 1, last)))
        if page < last:
            pages.update(next=link(page + 1), last=link(last))
        return {
            key: items[(page - 1) * per_page : page * per_page],
            "links": {"pages": pages} if pages else {},
            "meta": {"total": len(items)},
        }

    def _droplet(self, droplet: Droplet) -> dict[str, Any]:
        answer = droplet.to_api()
        emulator = self.emulator
        if not emulator.backend.separate:
            # Process droplets only: the folder that plays the droplet's `/`. A real
            # (or container) droplet's files are reachable over SSH alone.
            answer["dropship_emulator"] = {
                "root": droplet.details.get("root", ""),
                "ssh_port": emulator.ssh_port,
                "ssh_user": emulator.ssh_user,
            }
        return answer

    def _route(
        self, method: str, parts: list[str], query: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any] | None]:
        emulator = self.emulator
        if parts[:1] != ["v2"]:
            raise not_found()
        route = parts[1:]
        if method == "GET" and route == ["account"]:
            return 200, {
                "account": {
                    "droplet_limit": emulator.droplet_limit,
                    "floating_ip_limit": 3,
                    "email": "emulator@example.invalid",
                    "uuid": emulator.instance,
                    "status": "active",
                    "status_message": "",
                    "email_verified": True,
                }
            }
        if method == "GET" and route == ["sizes"]:
            return 200, self._page(
                "sizes", [{"slug": s, **v, "available": True, "description": "Basic"} for s, v in SIZES.items()], query
            )
        if method == "GET" and route == ["regions"]:
            return 200, self._page("regions", [region_api(s) for s in REGIONS], query)
        if method == "GET" and route == ["vpcs"]:
            vpcs = [
                {
                    "id": v,
                    "urn": f"do:vpc:{v}",
                    "name": f"default-{r}",
                    "description": "",
                    "region": r,
                    "ip_range": f"10.{100 + i}.0.0/20",
                    "default": True,
                    "created_at": "2024-01-01T00:00:00Z",
                }
                for i, (v, r) in enumerate(VPCS.items())
            ]
            return 200, self._page("vpcs", vpcs, query)
        if route[:1] == ["images"]:
            return self._images(method, route, query)
        if route[:2] == ["account", "keys"]:
            return self._keys(method, route[2:], query, body)
        if method == "GET" and route == ["actions"]:
            return 200, self._page("actions", [a.to_api() for a in emulator.actions()], query)
        if method == "GET" and len(route) == 2 and route[0] == "actions" and route[1].isdigit():
            return 200, {"action": emulator.action(int(route[1])).to_api()}
        if route[:1] == ["snapshots"]:
            return self._snapshots(method, route[1:], query)
        if route[:1] == ["droplets"]:
            return self._droplets(method, route[1:], query, body)
        raise not_found()

    def _images(self, method: str, route: list[str], query: dict[str, str]) -> tuple[int, dict[str, Any] | None]:
        emulator = self.emulator
        if len(route) == 1 and method == "GET":
            private = query.get("private", "").lower() == "true"
            return 200, self._page("images", emulator.images(query.get("type"), private), query)
        if len(route) == 2 and method == "GET":
            return 200, {"image": emulator.image(route[1])}
        if len(route) == 2 and method == "DELETE" and route[1].isdigit():
            emulator.delete_image(int(route[1]))
            return 204, None
        raise not_found()

    def _snapshots(self, method: str, route: list[str], query: dict[str, str]) -> tuple[int, dict[str, Any] | None]:
        """`/v2/snapshots`: the droplet snapshots again, in that endpoint's shape (no volume snapshots here)."""
        emulator = self.emulator
        snapshots = [] if query.get("resource_type") == "volume" else emulator.snapshots()
        if not route and method == "GET":
            return 200, self._page("snapshots", [s.to_snapshot_api() for s in snapshots], query)
        if len(route) == 1 and route[0].isdigit():
            found = [s for s in snapshots if s.id == int(route[0])]
            if found and method == "GET":
                return 200, {"snapshot": found[0].to_snapshot_api()}
            if found and method == "DELETE":
                emulator.delete_image(found[0].id)
                return 204, None
        raise not_found()

    def _keys(
        self, method: str, route: list[str], query: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any] | None]:
        emulator = self.emulator
        if not route:
            if method == "GET":
                return 200, self._page("ssh_keys", [k.to_api() for k in emulator.ssh_keys()], query)
            if method == "POST":
                return 201, {"ssh_key": emulator.add_key(body).to_api()}
        elif len(route) == 1:
            if method == "GET":
                return 200, {"ssh_key": emulator.key(route[0]).to_api()}
            if method == "PUT":
                return 200, {"ssh_key": emulator.rename_key(route[0], body).to_api()}
            if method == "DELETE":
                emulator.delete_key(route[0])
                return 204, None
        raise not_found()

    def _droplets(
        self, method: str, route: list[str], query: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any] | None]:
        emulator = self.emulator
        if not route:
            if method == "POST":
                droplet = emulator.create(body)
                return 202, {"droplet": self._droplet(droplet), "links": {"actions": []}}
            if method == "GET":
                droplets = [self._droplet(d) for d in emulator.listed(query.get("tag_name"))]
                return 200, self._page("droplets", droplets, query)
            if method == "DELETE" and "tag_name" in query:
                emulator.delete_by_tag(query["tag_name"])
                return 204, None
            raise not_found()
        if not route[0].isdigit():
            raise not_found()
        droplet_id = int(route[0])
        if len(route) == 1:
            if method == "GET":
                return 200, {"droplet": self._droplet(emulator.get(droplet_id))}
            if method == "DELETE":
                emulator.delete(droplet_id)
                return 204, None
        elif route[1] == "actions":
            if len(route) == 2 and method == "POST":
                return 201, {"action": emulator.act(droplet_id, body).to_api()}
            if len(route) == 2 and method == "GET":
                emulator.get(droplet_id)
                return 200, self._page("actions", [a.to_api() for a in emulator.actions(droplet_id)], query)
            if len(route) == 3 and method == "GET" and route[2].isdigit():
                return 200, {"action": emulator.action(int(route[2]), droplet_id).to_api()}
        elif route[1] == "snapshots" and len(route) == 2 and method == "GET":
            droplet = emulator.get(droplet_id)
            snapshots = [i for i in emulator.images("snapshot") if i["id"] in droplet.snapshot_ids]
            return 200, self._page("snapshots", snapshots, query)
        raise not_found()

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


class EmulatorServer:
    """Serves `emulator` on 127.0.0.1:`port` (0 picks a free port) in a thread."""

    def __init__(self, emulator: Emulator, port: int = 0) -> None:
        handler = type("Handler", (_Handler,), {"emulator": emulator})
        self.emulator = emulator
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> EmulatorServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.emulator.shutdown()
