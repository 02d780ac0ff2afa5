"""The emulator's HTTP API on 127.0.0.1: the routes pydo calls for droplets.

Responses use DigitalOcean's shapes and status codes: 202 with `droplet` on
create, 200 with `droplets`, `links` and `meta` on list, 204 on delete,
`{"id": ..., "message": ...}` bodies on errors, and the `ratelimit-*` headers
on every answer.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from dropship.emulator.state import IMAGES, REGIONS, SIZES, ApiError, Emulator


class _Handler(BaseHTTPRequestHandler):
    emulator: Emulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        limits = {"ratelimit-limit": "5000", "ratelimit-remaining": "4999", "ratelimit-reset": str(int(time.time()) + 60)}
        for name, value in {**limits, **(headers or {})}.items():
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
        try:
            body = self._body() if method == "POST" else {}
            self.emulator.gate(method, self.headers.get("Authorization"))
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            parts = [p for p in url.path.split("/") if p]
            status, answer = self._route(method, parts, query, body)
            self._send(status, answer)
        except ApiError as exc:
            self._send(exc.status, {"id": exc.error_id, "message": exc.message}, exc.headers)

    def _route(self, method: str, parts: list[str], query: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        emulator = self.emulator
        if parts[:1] != ["v2"]:
            raise ApiError(404, "not_found", "The resource you were accessing could not be found.")
        route = parts[1:]
        if method == "GET" and route == ["account"]:
            return 200, {"account": {"droplet_limit": emulator.droplet_limit, "email": "emulator@example.invalid",
                                     "status": "active", "email_verified": True}}
        if method == "GET" and route == ["sizes"]:
            return 200, _page("sizes", [{"slug": s, **v, "regions": list(REGIONS), "available": True} for s, v in SIZES.items()])
        if method == "GET" and route == ["regions"]:
            return 200, _page("regions", [{"slug": s, "name": n, "available": True, "sizes": list(SIZES)} for s, n in REGIONS.items()])
        if method == "GET" and route == ["images"]:
            return 200, _page("images", [{"slug": s, "name": n, "public": True, "regions": list(REGIONS)} for s, n in IMAGES.items()])
        if method == "GET" and route == ["account", "keys"]:
            return 200, _page("ssh_keys", [])
        if route[:1] == ["droplets"]:
            if len(route) == 1:
                if method == "POST":
                    return 202, {"droplet": emulator.create(body).to_api(emulator.ssh_port, emulator.ssh_user), "links": {"actions": []}}
                if method == "GET":
                    droplets = [d.to_api(emulator.ssh_port, emulator.ssh_user) for d in emulator.tagged(query.get("tag_name"))]
                    page, per_page = int(query.get("page", 1)), int(query.get("per_page", 20))
                    return 200, _page("droplets", droplets[(page - 1) * per_page: page * per_page], total=len(droplets))
                if method == "DELETE" and "tag_name" in query:
                    emulator.delete_by_tag(query["tag_name"])
                    return 204, None
            elif len(route) == 2 and route[1].isdigit():
                droplet_id = int(route[1])
                if method == "GET":
                    return 200, {"droplet": emulator.get(droplet_id).to_api(emulator.ssh_port, emulator.ssh_user)}
                if method == "DELETE":
                    emulator.delete(droplet_id)
                    return 204, None
        raise ApiError(404, "not_found", "The resource you were accessing could not be found.")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


def _page(key: str, items: list[dict[str, Any]], total: int | None = None) -> dict[str, Any]:
    return {key: items, "links": {}, "meta": {"total": len(items) if total is None else total}}


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
