"""Browser viewer without a browser: token, Host/Origin checks, payload, latest-frame policy."""

from __future__ import annotations

import asyncio
import json
import struct
import time
import urllib.error
import urllib.request

import aiohttp
import cv2
import numpy as np
import pytest

from sonoflow.stream.errors import ConfigError
from sonoflow.stream.messages import (
    CaseHeader,
    EosHeader,
    FrameHeader,
    LesionHeader,
    LesionSummary,
    Packet,
    QualityResult,
    now_ns,
)
from sonoflow.stream.stages.view import ViewStage
from sonoflow.stream.web.security import allowed_hosts
from sonoflow.stream.web.server import WebViewer

H, W = 120, 160


def _header(seq: int, lesion_ids=(1,)) -> FrameHeader:
    lesions = [LesionSummary(i, 0, seq, 0, (10, 10, 30, 30), 12.5 + i, 8.0, "hemangioma",
                             {"hemangioma": 0.8}, 0.1, {}, seq + 1) for i in lesion_ids]
    return FrameHeader(stream_id="s0", seq=seq, frame_index=seq, pts=seq, time_base=(1, 30),
                       capture_ns=now_ns(), pixel_format="gray8", quality=QualityResult(0.7),
                       lesions=lesions, extra={"lirads": {"category": "US-2",
                                                          "provisional": True}})


def _overlay(seq: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[:, :, 0] = 40 + seq  # identifiable after JPEG: red channel carries the seq
    return img


def _parse(payload: bytes):
    n = struct.unpack(">I", payload[:4])[0]
    meta = json.loads(payload[4:4 + n])
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(payload[4 + n:], np.uint8), cv2.IMREAD_COLOR),
                       cv2.COLOR_BGR2RGB)
    return meta, rgb


@pytest.fixture
def viewer():
    v = WebViewer()
    v.start()
    yield v
    v.stop()


def _status(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except urllib.error.URLError:
        return None  # nothing listening


def test_binds_loopback_with_a_random_token(viewer):
    assert viewer.url.startswith(f"http://127.0.0.1:{viewer.port}/?token=")
    assert viewer.port > 0 and len(viewer.token) >= 20
    assert WebViewer().token != WebViewer().token


@pytest.mark.parametrize("path, token, headers, expected", [
    ("/", None, {}, 401),
    ("/", "wrong-token-wrong-token", {}, 401),
    ("/viewer.js", None, {}, 401),
    ("/stats", None, {}, 401),
    ("/", "OK", {}, 200),
    ("/viewer.js", "OK", {}, 200),
    ("/viewer.css", "OK", {}, 200),
    ("/stats", "OK", {}, 200),
    ("/", "OK", {"Origin": "http://evil.example"}, 403),
    ("/", "OK", {"Origin": "http://127.0.0.1:1"}, 403),
    ("/", "OK", {"Origin": "SELF"}, 200),
    ("/", "OK", {"Host": "rebind.example:80"}, 403),
    ("/nothing", "OK", {}, 404),
])
def test_http_access_rules(viewer, path, token, headers, expected):
    url = f"http://127.0.0.1:{viewer.port}{path}"
    if token is not None:
        url += f"?token={viewer.token if token == 'OK' else token}"
    headers = {k: (f"http://127.0.0.1:{viewer.port}" if v == "SELF" else v)
               for k, v in headers.items()}
    assert _status(url, headers) == expected


def test_page_carries_security_headers_and_its_token(viewer):
    with urllib.request.urlopen(viewer.url, timeout=5) as r:
        body = r.read().decode()
        assert r.headers["Cache-Control"] == "no-store"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert f'viewer.js?token={viewer.token}"' in body


def test_allowed_hosts():
    assert allowed_hosts("127.0.0.1", 8080) == frozenset(
        {"127.0.0.1:8080", "localhost:8080", "[::1]:8080"})
    assert allowed_hosts("10.0.0.5", 80) == frozenset({"10.0.0.5:80"})


@pytest.mark.parametrize("kwargs, match", [
    ({"token": "short"}, "16\\+ characters"),
    ({"token": 'x"><script>alert(1)</script>'}, "16\\+ characters"),
    ({"jpeg_quality": 0}, "jpeg_quality"),
])
def test_bad_viewer_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        WebViewer(**kwargs)


async def _ws(viewer, origin=None, token=None):
    session = aiohttp.ClientSession()
    url = f"ws://127.0.0.1:{viewer.port}/ws?token={token or viewer.token}"
    headers = {"Origin": origin or f"http://127.0.0.1:{viewer.port}"}
    try:
        return session, await session.ws_connect(url, headers=headers)
    except BaseException:
        await session.close()
        raise


@pytest.mark.parametrize("origin, token, status", [
    ("http://evil.example", None, 403),
    (None, "not-the-token-at-all", 401),
])
def test_websocket_refuses_foreign_origin_and_bad_token(viewer, origin, token, status):
    async def go():
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await _ws(viewer, origin, token)
        return err.value.status
    assert asyncio.run(go()) == status


def test_latest_frame_policy_and_frame_age(viewer):
    async def go():
        session, ws = await _ws(viewer)
        try:
            viewer.publish(_overlay(0), _header(0))
            meta, rgb = _parse((await ws.receive(timeout=5)).data)
            assert meta["seq"] == 0 and rgb.shape == (H, W, 3)
            assert abs(int(rgb[..., 0].mean()) - 40) <= 2
            assert meta["lesions"][0]["class"] == "hemangioma"
            assert meta["lesions"][0]["long_axis_mm"] == 13.5
            assert meta["lirads"] == "US-2 prov."
            # no ack yet: nine more frames are published, none may be sent (no backlog)
            for seq in range(1, 10):
                viewer.publish(_overlay(seq), _header(seq, lesion_ids=(1, 2)))
            with pytest.raises(asyncio.TimeoutError):
                await ws.receive(timeout=0.3)
            await ws.send_str(json.dumps({"ack": 0}))
            meta, rgb = _parse((await ws.receive(timeout=5)).data)
            assert meta["seq"] == 9  # the newest, not the next
            assert abs(int(rgb[..., 0].mean()) - 49) <= 2
            assert [r["lesion_id"] for r in meta["lesions"]] == [1, 2]
            await ws.send_str(json.dumps({"ack": 9}))
            await ws.send_str("not json")  # ignored, not fatal
            viewer.end("end")
            end = await ws.receive(timeout=5)
            assert json.loads(end.data)["end"] == "end"
        finally:
            await ws.close()
            await session.close()
    asyncio.run(go())
    stats = viewer.stats()
    assert stats["published"] == 10 and stats["sent"] == 2 and stats["acked"] == 2
    assert stats["skipped"] == 8
    ages = viewer.frame_ages_ms()
    assert len(ages) == 2 and all(0 < a < 10_000 for a in ages)
    assert stats["age_ms_p50"] == pytest.approx(float(np.median(ages)))


def test_view_stage_prints_the_url_first_and_forwards_packets(capsys):
    stage = ViewStage({"kind": "web", "port": 0})
    stage.open()
    try:
        first = capsys.readouterr().out.splitlines()[0]
        assert first == stage.url
        assert first.startswith("http://127.0.0.1:") and "/?token=" in first
        image = np.full((H, W), 90, np.uint8)
        frame = Packet(_header(0), {"image": image})
        assert stage.process(frame) is frame  # no overlay: the plain image is shown
        les = Packet(LesionHeader("s0", 1, _header(1, (5,)).lesions[0]))
        assert stage.process(les) is les
        case = Packet(CaseHeader("s0", {"lirads": {"category": "US-3"}}))
        assert stage.process(case) is case
        assert stage.flush(Packet(EosHeader("s0", 1, 2))) == []
        stats = stage.viewer.stats()
        assert stats["published"] == 1 and stats["ended"] == "end"
        assert set(stage.viewer._lesions["s0"]) == {1, 5}
    finally:
        stage.close()
    assert stage.viewer is None


@pytest.mark.parametrize("config, match", [
    ({"kind": "mjpeg"}, "kind must be one of"),
    ({"kind": "web", "bind": "0.0.0.0"}, "unknown config key"),
])
def test_view_stage_config_errors(config, match):
    with pytest.raises(ConfigError, match=match):
        ViewStage(config)


def test_port_in_use_is_a_clear_error(viewer):
    from sonoflow.stream.errors import StageError

    with pytest.raises(StageError, match="cannot bind"):
        WebViewer(port=viewer.port).start()


def test_stop_is_quick_with_a_page_connected():
    viewer = WebViewer()
    viewer.start()

    async def go():
        session, ws = await _ws(viewer)
        viewer.publish(_overlay(0), _header(0))
        await ws.receive(timeout=5)
        t0 = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, viewer.stop)
        elapsed = time.monotonic() - t0
        closed = await ws.receive(timeout=5)
        await session.close()
        return elapsed, closed.type
    elapsed, kind = asyncio.run(go())
    assert elapsed < 2.0
    assert kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert _status(f"http://127.0.0.1:{viewer.port}/") is None


def test_lesion_table_mirrors_the_frames_live_view_and_takes_lesion_events():
    viewer = WebViewer()  # not started: publish works before and without pages
    viewer.publish(_overlay(0), _header(0, lesion_ids=(1, 2, 3)))
    viewer.publish(_overlay(1), _header(1, lesion_ids=(2, 3)))  # the tracker dropped #1
    assert sorted(viewer._lesions["s0"]) == [2, 3]
    viewer.update_lesions("s0", _header(2, lesion_ids=(9,)).lesions)
    assert sorted(viewer._lesions["s0"]) == [2, 3, 9]
    viewer.publish(_overlay(3), _header(3, lesion_ids=()))  # a frame with no list: kept
    assert sorted(viewer._lesions["s0"]) == [2, 3, 9]
    assert viewer.stats()["published"] == 3
