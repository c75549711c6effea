"""The browser viewer: an aiohttp server, in its own thread, that pushes the live overlay.

Transport: one WebSocket per page. Each frame goes as ONE binary message::

    uint32 big-endian n | n bytes of UTF-8 JSON metadata | JPEG bytes of the overlay

Latest-frame policy: at most one frame is in flight per page. The page answers every frame it
has drawn with ``{"ack": seq}``; only then does the server send the *newest* frame published
since (older ones are skipped and counted). A slow browser therefore never builds a backlog,
neither in the socket nor in the page.

Frame age at the browser: when an ack arrives, ``monotonic_ns() - capture_ns`` of that frame
(capture and viewer run on the same host and clock) is recorded: capture to displayed, plus the
ack's trip back over loopback (well under a millisecond).

Endpoints (all need the token, see :mod:`sonoflow.stream.web.security`): ``/`` the page,
``/viewer.js`` and ``/viewer.css`` its code, ``/ws`` the WebSocket, ``/stats`` JSON counters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import cv2
import numpy as np
from aiohttp import WSMsgType, web

from sonoflow.stream.errors import ConfigError, StageError
from sonoflow.stream.messages import FrameHeader, LesionSummary, now_ns
from sonoflow.stream.render.layers import lirads_text
from sonoflow.stream.render.stream_stats import StreamStats
from sonoflow.stream.web.security import allowed_hosts, check_request, new_token

log = logging.getLogger(__name__)

#: seconds to wait for the server thread to bind, and to shut down
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 1.5
#: a page that has not acknowledged its frame after this long gets the newest one anyway
#: (e.g. a background tab whose rendering the browser paused)
ACK_TIMEOUT_S = 2.0
#: frame ages kept for statistics (about an hour at 30 fps)
MAX_AGES = 100_000
#: largest message accepted from a page (acks are tiny)
MAX_CLIENT_MSG_BYTES = 4096
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,}")
STATIC_FILES = {"/": ("index.html", "text/html"), "/viewer.js": ("viewer.js", "text/javascript"),
                "/viewer.css": ("viewer.css", "text/css")}
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' blob:; connect-src 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
}


@dataclass
class _Frame:
    """The newest published frame; the JPEG is encoded once, on first send."""

    seq: int
    ordinal: int  # count of frames published before this one (skips are counted on it)
    capture_ns: int
    overlay: np.ndarray
    meta: dict[str, Any]
    payload: bytes | None = None


@dataclass(eq=False)  # identity semantics: kept in a set
class _Client:
    ws: web.WebSocketResponse
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int | None = None
    sent_at_s: float = 0.0
    last_sent: int | None = None
    last_ordinal: int | None = None
    capture_ns_by_seq: dict[int, int] = field(default_factory=dict)


def lesion_row(les: LesionSummary) -> dict[str, Any]:
    """One row of the page's lesion table (keys as in case.json)."""
    return {"lesion_id": les.lesion_id, "class": les.label, "long_axis_mm": les.long_axis_mm,
            "short_axis_mm": les.short_axis_mm, "malignancy": les.malignancy,
            "first_frame": les.first_frame, "last_frame": les.last_frame,
            "n_frames": les.n_frames, "confirmed": les.confirmed}


def percentile_ms(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of ``values`` in ms, None when empty."""
    return float(np.percentile(values, q)) if values else None


def encode_payload(meta: dict[str, Any], overlay_rgb: np.ndarray, quality: int) -> bytes:
    """Pack metadata and the overlay as ``uint32 n | JSON | JPEG`` (see module doc).

    Raises:
        StageError: the overlay is not uint8 HxWx3 or the JPEG encoder failed.
    """
    if overlay_rgb.dtype != np.uint8 or overlay_rgb.ndim != 3 or overlay_rgb.shape[2] != 3:
        raise StageError(f"web viewer: overlay must be uint8 HxWx3 RGB, got "
                         f"{overlay_rgb.dtype} {overlay_rgb.shape}")
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(overlay_rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise StageError(f"web viewer: JPEG encoding failed for a {overlay_rgb.shape} overlay")
    head = json.dumps(meta, separators=(",", ":")).encode()
    return struct.pack(">I", len(head)) + head + jpeg.tobytes()


class WebViewer:
    """Serves the live overlay to browsers. Thread-safe ``publish``; one event loop thread.

    Args:
        host: address to bind; 127.0.0.1 unless the user asks otherwise.
        port: TCP port; 0 picks a free one.
        token: the access token; ``""`` generates a random one.
        jpeg_quality: 1..100.

    Raises:
        ConfigError: ``jpeg_quality`` out of range, or a given token is not 16+ URL-safe
            characters.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str = "",
                 jpeg_quality: int = 80):
        if token and not TOKEN_PATTERN.fullmatch(token):
            raise ConfigError("web viewer: a given token must be 16+ characters of "
                              f"[A-Za-z0-9_-], got {len(token)} character(s) of another form; "
                              "leave it empty to get a random one")
        if not 1 <= int(jpeg_quality) <= 100:
            raise ConfigError(f"web viewer: jpeg_quality must be in 1..100, got {jpeg_quality}")
        self.host = host
        self.port = int(port)
        self.token = token or new_token()
        self.jpeg_quality = int(jpeg_quality)
        self._lock = threading.Lock()
        self._latest: _Frame | None = None
        self._ages_ms: list[float] = []
        self._lesions: dict[str, dict[int, dict[str, Any]]] = {}
        self._stream_stats: dict[str, StreamStats] = {}
        self._counts = {"published": 0, "sent": 0, "acked": 0, "skipped": 0, "clients": 0}
        self._ended: str | None = None
        self._case_lirads: dict[str, str | None] = {}
        self._clients: set[_Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._files: dict[str, tuple[bytes, str]] = {}

    # --- lifecycle (caller's thread) ---------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://<host>:<port>/?token=<token>`` (valid once :meth:`start` returned)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?token={self.token}"

    def start(self) -> str:
        """Bind and serve in a background thread; returns :attr:`url`.

        Raises:
            StageError: the address cannot be bound or the server did not start in time.
        """
        for route, (name, ctype) in STATIC_FILES.items():
            data = resources.files("sonoflow.stream.web").joinpath("static", name).read_bytes()
            if route == "/":  # the page loads its code with the same token (URL-safe text)
                data = data.replace(b'?token="', f'?token={self.token}"'.encode())
            self._files[route] = (data, ctype)
        try:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError as e:
            raise StageError(f"web viewer: cannot bind {self.host}:{self.port}: {e}; pick "
                             "another --port (0 = any free port)") from e
        self.port = sock.getsockname()[1]
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("web viewer bound to %s (not loopback): anyone who can reach it and "
                        "knows the token can watch", self.host)
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="web-viewer",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise StageError(f"web viewer: server did not start within {START_TIMEOUT_S} s")
        if self._start_error is not None:
            raise StageError(f"web viewer: server failed to start: "
                             f"{self._start_error}") from self._start_error
        return self.url

    def stop(self) -> None:
        """Close every page's socket and the server; returns within ~2 s. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                fut.result(STOP_TIMEOUT_S)
            except concurrent.futures.TimeoutError:
                log.warning("web viewer: shutdown took longer than %.1f s", STOP_TIMEOUT_S)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT_S)
        self._loop = self._thread = None

    # --- producer side (pipeline thread) ------------------------------------------------------

    def publish(self, overlay_rgb: np.ndarray, header: FrameHeader) -> None:
        """Make this frame the newest one. Cheap: no encoding happens here.

        Args:
            overlay_rgb: uint8 HxWx3 RGB; must not be modified afterwards (it is read later).
            header: the frame's header (seq, capture_ns, quality, lesions, lirads...).
        """
        t_ns = now_ns()
        stats = self._stream_stats.setdefault(header.stream_id, StreamStats()).update(header, t_ns)
        if header.lesions:  # the aggregator's live view is authoritative: mirror it
            self.update_lesions(header.stream_id, header.lesions, replace=True)
        q = header.quality
        meta = {
            "seq": header.seq, "frame_index": header.frame_index, "stream_id": header.stream_id,
            "status": header.status, "e2e_ms": (t_ns - header.capture_ns) / 1e6,
            "fps": stats.fps, "drops": stats.drops,
            "quality": None if q is None else {"score": q.score, "flags": list(q.flags),
                                                "keyframe": q.keyframe, "reason": q.reason},
            "detections": 0 if header.infer is None else len(header.infer.detections),
            "lirads": lirads_text(header),
            "synthetic_models": bool(header.infer is not None and header.infer.models),
        }
        with self._lock:
            meta["lesions"] = list(self._lesions.get(header.stream_id, {}).values())
            meta["age_ms_p50"] = percentile_ms(self._ages_ms[-300:], 50)
            meta["skipped"] = self._counts["skipped"]
            self._latest = _Frame(header.seq, self._counts["published"], header.capture_ns,
                                  overlay_rgb, meta)
            self._counts["published"] += 1
        self._wake_all()

    def update_lesions(self, stream_id: str, lesions: list[LesionSummary],
                       replace: bool = False) -> None:
        """Insert or update rows of the lesion table; ``replace`` drops rows not in ``lesions``
        (a frame header's list is the whole live view; a lesion event updates one row)."""
        if not lesions and not replace:
            return
        with self._lock:
            if replace:
                self._lesions[stream_id] = {}
            table = self._lesions.setdefault(stream_id, {})
            for les in lesions:
                table[les.lesion_id] = lesion_row(les)

    def end_case(self, stream_id: str, lirads_category: str | None) -> None:
        """Record the final case result (sent to the pages with the end-of-stream notice)."""
        with self._lock:
            self._case_lirads[stream_id] = lirads_category

    def end(self, reason: str = "end") -> None:
        """Tell the pages the stream is over (they show it and stop waiting for frames)."""
        self._ended = reason
        self._wake_all()

    # --- statistics (any thread) --------------------------------------------------------------

    def frame_ages_ms(self) -> list[float]:
        """Capture-to-displayed age in ms of every acknowledged frame, in ack order."""
        with self._lock:
            return list(self._ages_ms)

    def stats(self) -> dict[str, Any]:
        """Counters (published, sent, acked, skipped, clients) and frame age p50/p99 in ms."""
        with self._lock:
            ages = list(self._ages_ms)
            counts = dict(self._counts)
        return {**counts, "age_ms_p50": percentile_ms(ages, 50),
                "age_ms_p99": percentile_ms(ages, 99), "ended": self._ended}

    # --- event loop thread --------------------------------------------------------------------

    def _wake_all(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self._set_wakes)

    def _set_wakes(self) -> None:
        for c in self._clients:
            c.wake.set()

    def _serve(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start_site(sock))
        except OSError as e:
            self._start_error = e
            self._ready.set()
            loop.close()
            return
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _start_site(self, sock: socket.socket) -> None:
        hosts = allowed_hosts(self.host, self.port)

        @web.middleware
        async def guard(request: web.Request, handler):
            check_request(request, self.token, hosts)
            response = await handler(request)
            response.headers.update(SECURITY_HEADERS)
            return response

        app = web.Application(middlewares=[guard], client_max_size=MAX_CLIENT_MSG_BYTES)
        for route in STATIC_FILES:
            app.router.add_get(route, self._static)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/stats", self._stats_handler)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        for c in list(self._clients):
            await c.ws.close(code=1001, message=b"server stopping")
        if self._runner is not None:
            await self._runner.cleanup()

    async def _static(self, request: web.Request) -> web.Response:
        data, ctype = self._files[request.path]
        return web.Response(body=data, content_type=ctype, charset="utf-8")

    async def _stats_handler(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=MAX_CLIENT_MSG_BYTES)
        await ws.prepare(request)
        client = _Client(ws)
        self._clients.add(client)
        with self._lock:
            self._counts["clients"] += 1
        sender = asyncio.ensure_future(self._send_loop(client))
        client.wake.set()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_client_message(client, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            sender.cancel()
            self._clients.discard(client)
        return ws

    def _on_client_message(self, client: _Client, text: str) -> None:
        try:
            seq = int(json.loads(text)["ack"])
        except (ValueError, KeyError, TypeError):
            log.debug("web viewer: ignoring malformed page message %r", text[:80])
            return
        capture_ns = client.capture_ns_by_seq.pop(seq, None)
        if capture_ns is not None:
            age_ms = (now_ns() - capture_ns) / 1e6
            with self._lock:
                self._ages_ms.append(age_ms)
                if len(self._ages_ms) > MAX_AGES:
                    del self._ages_ms[: len(self._ages_ms) - MAX_AGES]
                self._counts["acked"] += 1
        if client.in_flight == seq:
            client.in_flight = None
        client.wake.set()

    async def _send_loop(self, client: _Client) -> None:
        loop = asyncio.get_running_loop()
        ended_sent = False
        while not client.ws.closed:
            try:
                await asyncio.wait_for(client.wake.wait(), ACK_TIMEOUT_S)
            except asyncio.TimeoutError:
                pass
            client.wake.clear()
            if client.in_flight is not None and loop.time() - client.sent_at_s < ACK_TIMEOUT_S:
                continue  # the page is still drawing: latest-frame policy, never queue
            client.in_flight = None
            client.capture_ns_by_seq.clear()
            with self._lock:
                frame = self._latest
            if frame is not None and frame.ordinal != client.last_ordinal:
                if frame.payload is None:
                    frame.payload = await loop.run_in_executor(
                        None, encode_payload, frame.meta, frame.overlay, self.jpeg_quality)
                    frame.overlay = frame.overlay[:0]  # encoded: drop the reference
                skipped = 0 if client.last_ordinal is None else max(
                    0, frame.ordinal - client.last_ordinal - 1)
                client.in_flight = client.last_sent = frame.seq
                client.last_ordinal = frame.ordinal
                client.sent_at_s = loop.time()
                client.capture_ns_by_seq[frame.seq] = frame.capture_ns
                await client.ws.send_bytes(frame.payload)
                with self._lock:
                    self._counts["sent"] += 1
                    self._counts["skipped"] += skipped
            elif self._ended is not None and not ended_sent and client.in_flight is None:
                with self._lock:
                    final = dict(self._case_lirads)
                await client.ws.send_str(json.dumps({"end": self._ended, "lirads": final}))
                ended_sent = True
