"""The browser viewer end to end, in headless Chromium (Debian chromium + chromium-driver).

Skips cleanly where ``/usr/bin/chromium`` (or chromedriver) is absent. Screenshots are saved
under the test's tmp folder, and copied to ``$SONOFLOW_SCREENSHOT_DIR`` when that is set, so a
person can look at them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from sonoflow.stream.web.headless import HeadlessChromium, find_browser

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists() or find_browser() is None,
                       reason="headless Chromium needs /usr/bin/chromium and chromedriver "
                              "(Debian packages chromium, chromium-driver)"),
]

FRAME_PERIOD_S = 1 / 30


def _need_simulator():
    sim = pytest.importorskip("sonoflow.stream.sim")
    if not hasattr(sim, "simulate_clip"):
        pytest.skip("sonoflow.stream.sim.simulate_clip is not built yet")


def _keep(path: Path) -> None:
    out = os.environ.get("SONOFLOW_SCREENSHOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(out) / path.name)


def _status(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _check_access_rules(url: str) -> None:
    base = url.split("?")[0]
    port = base.split(":")[2].rstrip("/")
    assert _status(base) == 401
    assert _status(url.replace("token=", "token=x")) == 401
    assert _status(url, {"Origin": "http://evil.example"}) == 403
    assert _status(url, {"Origin": f"http://127.0.0.1:{port}"}) == 200


def _canvas_mean(browser: HeadlessChromium) -> float:
    return browser.run_js("""
        const c = document.getElementById('overlay');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i + 1];
        return s / (d.length / 4);""")


def _look_at(png: Path) -> np.ndarray:
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] >= 600 and img.shape[1] >= 1000
    return img


def test_view_stage_in_headless_chromium(tmp_path):
    _need_simulator()
    from sonoflow.stream.render.truth_frames import truth_packets
    from sonoflow.stream.stages.render import RenderStage
    from sonoflow.stream.stages.view import ViewStage

    packets = list(truth_packets(7, 30, n_lesions=2, events=False))
    render, view = RenderStage(), ViewStage({"kind": "web"})
    view.open()
    stop = threading.Event()

    def produce():  # a 30 fps live stream, looping the clip, seq always increasing
        seq = 0
        while not stop.is_set():
            pk = packets[seq % len(packets)]
            pk.header.seq, pk.header.capture_ns = seq, time.monotonic_ns()
            view.process(render.process(pk))
            seq += 1
            time.sleep(FRAME_PERIOD_S)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        _check_access_rules(view.url)
        with HeadlessChromium() as browser:
            browser.open(view.url)
            browser.wait_for("return window.sonoflow.shown >= 20", timeout_s=30)
            rows = browser.wait_for("return window.sonoflow.lesionRows", timeout_s=10)
            assert rows >= 1
            table = browser.run_js("return document.querySelector('#lesions tbody').innerText")
            assert "mm" in table
            assert browser.run_js("return window.sonoflow.state") == "live"
            assert browser.run_js("return document.getElementById('lirads').textContent") \
                .startswith("US-")
            assert _canvas_mean(browser) > 10  # the overlay is on the canvas, not black
            # the page is not allowed to read anything without the token either
            assert browser.run_js(
                "return fetch('/stats').then(r => r.status)") == 401
            png = browser.screenshot(tmp_path / "viewer_view_stage.png")
        _keep(png)
        _look_at(png)
        stats = view.viewer.stats()
        assert stats["acked"] >= 20 and stats["age_ms_p50"] < 1000
    finally:
        stop.set()
        thread.join(5)
        view.close()


def _live_command(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sonoflow.stream.cli", "live", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _first_line(proc: subprocess.Popen, timeout_s: float = 60) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not result or not result[0]:
        proc.kill()
        err = proc.stderr.read()
        pytest.fail(f"`sonoflow live` printed no URL within {timeout_s} s; stderr:\n{err}")
    return result[0].strip()


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["spine", "analyse"])
def test_sonoflow_live_view_web(tmp_path, pipeline):
    _need_simulator()
    from sonoflow.stream.stage import stage_class

    if pipeline == "analyse":
        from sonoflow.models.errors import ModelError
        from sonoflow.models.registry import resolve

        try:
            infer = stage_class("infer")
        except ImportError as e:
            pytest.skip(f"the infer stage is not built yet ({e})")
        try:
            resolve(infer.defaults["frame_model"], infer.defaults["precision"])
        except ModelError as e:
            pytest.skip(f"the shipped frame model is not built yet: {e}")
    proc = _live_command(["sim:seed=5,frames=900,fps=30,width=640,height=480,ui=1,events=0,lesions=3",
                          "--view", "web", "--pipeline", pipeline])
    try:
        url = _first_line(proc)
        assert url.startswith("http://127.0.0.1:") and "/?token=" in url, url
        _check_access_rules(url)
        with HeadlessChromium() as browser:
            browser.open(url)
            browser.wait_for("return window.sonoflow.shown >= 15", timeout_s=60)
            if pipeline == "analyse":
                browser.wait_for("return window.sonoflow.lesionRows >= 1", timeout_s=30)
            assert _canvas_mean(browser) > 5
            png = browser.screenshot(tmp_path / f"viewer_live_{pipeline}.png")
        _keep(png)
        _look_at(png)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
