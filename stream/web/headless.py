"""A minimal W3C WebDriver client for headless Chromium (Debian ``chromium`` + ``chromium-driver``).

Used by the viewer's end-to-end test and its benchmark to open the page like a user would. It
speaks the plain WebDriver HTTP protocol to ``chromedriver`` with the standard library only.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sonoflow.stream.errors import SonoflowError

CHROMIUM_PATHS = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
DRIVER_START_TIMEOUT_S = 15.0


class BrowserError(SonoflowError):
    """Headless Chromium or chromedriver is missing, failed to start, or a command failed."""


def find_browser() -> tuple[str, str] | None:
    """``(chromium binary, chromedriver)`` paths when both are installed, else None."""
    driver = shutil.which("chromedriver")
    browser = next((p for p in CHROMIUM_PATHS if Path(p).exists()), None)
    return (browser, driver) if browser and driver else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HeadlessChromium:
    """One headless Chromium session driven through chromedriver. Use as a context manager.

    Args:
        window_px: browser window size ``(width, height)`` in px.

    Raises:
        BrowserError: Chromium or chromedriver is not installed, or the session cannot start.
    """

    def __init__(self, window_px: tuple[int, int] = (1280, 800)):
        found = find_browser()
        if found is None:
            raise BrowserError("headless Chromium needs the Debian packages chromium and "
                               "chromium-driver (apt-get install chromium chromium-driver)")
        self.browser, self.driver = found
        self.window_px = window_px
        self._proc: subprocess.Popen | None = None
        self._base = ""
        self._session = ""
        self._profile = tempfile.TemporaryDirectory(prefix="sonoflow-chromium-")

    def __enter__(self) -> HeadlessChromium:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Start chromedriver and a browser session.

        Raises:
            BrowserError: chromedriver did not answer in time or refused the session.
        """
        port = _free_port()
        self._proc = subprocess.Popen([self.driver, f"--port={port}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + DRIVER_START_TIMEOUT_S
        while True:
            try:
                if self._call("GET", "/status").get("ready"):
                    break
            except BrowserError:
                pass
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self.close()
                raise BrowserError(f"chromedriver ({self.driver}) did not become ready in "
                                   f"{DRIVER_START_TIMEOUT_S} s")
            time.sleep(0.1)
        w, h = self.window_px
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": self.browser, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={w},{h}", f"--user-data-dir={self._profile.name}",
                "--no-first-run", "--disable-extensions"]},
        }}}
        value = self._call("POST", "/session", caps)
        self._session = value["sessionId"]

    def close(self) -> None:
        """End the session and chromedriver (idempotent)."""
        if self._session:
            try:
                self._call("DELETE", f"/session/{self._session}")
            except BrowserError:
                pass  # the driver is being torn down anyway
            self._session = ""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None
        self._profile.cleanup()

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self._base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                payload = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            detail = e.read()[:500].decode(errors="replace")
            raise BrowserError(f"WebDriver {method} {path} failed: HTTP {e.code} {detail}") from e
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            raise BrowserError(f"WebDriver {method} {path}: no answer from chromedriver ({e})") from e
        return payload.get("value", payload)

    def open(self, url: str) -> None:
        """Navigate to ``url`` and wait for the page load."""
        self._call("POST", f"/session/{self._session}/url", {"url": url})

    def run_js(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``arguments[i]`` are ``args``) and return its value."""
        return self._call("POST", f"/session/{self._session}/execute/sync",
                          {"script": script, "args": list(args)})

    def wait_for(self, script: str, timeout_s: float = 20.0, poll_s: float = 0.1) -> Any:
        """Poll ``script`` until it returns a truthy value; return that value.

        Raises:
            BrowserError: still falsy after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.run_js(script)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"page condition not met within {timeout_s} s: {script!r} "
                                   f"(last value {value!r})")
            time.sleep(poll_s)

    def screenshot(self, path: str | Path) -> Path:
        """Save a PNG of the visible page to ``path``."""
        data = self._call("GET", f"/session/{self._session}/screenshot")
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path
