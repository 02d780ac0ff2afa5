"""Headless Chromium screenshots of the Prefect UI, for the tests and for looking at.

A page's tab (the run page's Artifacts) is not reachable by URL, so this
drives Chromium over the DevTools protocol: navigate, wait, click what is
asked, capture. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import struct
import subprocess
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from websockets.sync.client import connect


class Browser:
    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        self.size = (width, height)
        self._profile = Path(tempfile.mkdtemp(prefix="dropship-chromium-"))
        self._ids = itertools.count(1)
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: Any = None

    def __enter__(self) -> Self:
        self._process = subprocess.Popen(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={self._profile}",
                f"--window-size={self.size[0]},{self.size[1]}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(t for t in json.loads(response.read()) if t["type"] == "page")
        self._socket = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.call("Page.enable")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._socket is not None:
            self._socket.close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        self._socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv(timeout=60))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True).get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return True
            time.sleep(0.3)
        return False

    def open(self, url: str, ready: str, timeout: float = 45.0) -> bool:
        self.call("Page.navigate", url=url)
        return self.wait_for(ready, timeout)

    def click(self, selector: str) -> bool:
        found = f"document.querySelector({json.dumps(selector)})"
        return bool(self.evaluate(f"(() => {{ const e = {found}; if (!e) return false; e.click(); return true; }})()"))

    def screenshot(self, path: Path, *, height: int | None = None) -> Path:
        """Capture the viewport; `height` makes it taller first (the UI scrolls inside its own panes)."""
        if height:
            self.call(
                "Emulation.setDeviceMetricsOverride",
                width=self.size[0],
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        time.sleep(1.5)  # let charts and transitions settle
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path


def png_colours(path: Path) -> int:
    """How many distinct pixel rows the PNG has (a blank page has one or two)."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return 0
    offset, idat, width, channels = 8, b"", 0, 4
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            width = struct.unpack(">I", body[:4])[0]
            channels = {2: 3, 6: 4, 0: 1, 4: 2}.get(body[9], 4)
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels + 1
    return len({raw[i + 1 : i + stride] for i in range(0, len(raw), stride)})
