"""Load a page in headless Chromium over the DevTools protocol: which images loaded, what
the console and the browser's log reported as errors, and a full-page PNG screenshot.

Chromium is started with ``--remote-debugging-port=0`` and a fresh profile; the port it
chose is read from ``DevToolsActivePort`` in that profile, and the page's websocket from
``/json/list``. Needs ``websocket-client`` (a dev dependency).
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome")
START_TIMEOUT_S = 60.0
LOAD_TIMEOUT_S = 60.0
IMAGES_JS = (
    "JSON.stringify(Array.from(document.images).map(i => "
    "({alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth})))"
)


def find_chromium() -> str | None:
    """The first Chromium binary on PATH, or None."""
    return next((p for n in CHROMIUM_NAMES if (p := shutil.which(n))), None)


@dataclass(frozen=True)
class PageCheck:
    """What loading one page gave: per image (alt, complete, naturalWidth), the console
    and log errors, and the screenshot's path."""

    images: list[dict[str, Any]]
    errors: list[str]
    screenshot: Path


class _Session:
    def __init__(self, ws_url: str) -> None:
        import websocket

        self._ws = websocket.create_connection(ws_url, timeout=LOAD_TIMEOUT_S, suppress_origin=True)
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer, keeping the events that come first."""
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self.events.append(message)

    def wait_for(self, method: str) -> None:
        """Read events until ``method`` arrives (or the socket times out)."""
        if any(e.get("method") == method for e in self.events):
            return
        while True:
            message = json.loads(self._ws.recv())
            self.events.append(message)
            if message.get("method") == method:
                return

    def close(self) -> None:
        self._ws.close()


def _errors(events: list[dict[str, Any]]) -> list[str]:
    found = []
    for e in events:
        params = e.get("params", {})
        if e.get("method") == "Runtime.exceptionThrown":
            found.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif e.get("method") == "Runtime.consoleAPICalled" and params.get("type") in (
            "error",
            "assert",
        ):
            texts = [str(a.get("value", a.get("description"))) for a in params.get("args", [])]
            found.append(f"console.{params['type']}: {' '.join(texts)}")
        elif e.get("method") == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            found.append(f"log {entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")
    return found


def _devtools_port(profile: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    active = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if active.exists() and (lines := active.read_text().splitlines()):
            return int(lines[0])
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode} before listening")
        time.sleep(0.1)
    raise RuntimeError("chromium did not open its DevTools port in time")


def check_page(chromium: str, page: Path, workdir: Path, width_px: int = 1280) -> PageCheck:
    """Load ``page`` (a local file) in headless Chromium; see ``PageCheck``."""
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-dev-shm-usage", "--remote-debugging-port=0", "--remote-allow-origins=*",
         f"--user-data-dir={profile}", f"--window-size={width_px},900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        port = _devtools_port(profile, process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.load(r)
        [target] = [t for t in targets if t.get("type") == "page"][:1]
        session = _Session(target["webSocketDebuggerUrl"])
        try:
            for domain in ("Page", "Runtime", "Log"):
                session.call(f"{domain}.enable")
            session.events.clear()  # what about:blank said is not the page's
            session.call("Page.navigate", url=page.resolve().as_uri())
            session.wait_for("Page.loadEventFired")
            value = session.call("Runtime.evaluate", expression=IMAGES_JS, returnByValue=True)
            images = json.loads(value["result"]["value"])
            size = session.call("Page.getLayoutMetrics")["cssContentSize"]
            shot = session.call(
                "Page.captureScreenshot", format="png", captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                      "scale": 1},
            )  # fmt: skip
            screenshot = workdir / f"{page.parent.name}-{page.stem}.png"
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            return PageCheck(images, _errors(session.events), screenshot)
        finally:
            session.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def png_size_px(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; ValueError when it is not a PNG."""
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
