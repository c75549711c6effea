"""An external ZeroMQ producer: ``zmq:tcp://127.0.0.1:5555`` (or ``zmq:ipc:///path``).

The source *connects* a PULL socket to the producer's bound PUSH socket and reads our wire
format (``sonoflow.stream.messages``): ``frame`` packets carrying an ``image`` buffer (uint8
``HxW`` grey or ``HxWx3`` RGB; other wire dtypes go through ``pixels.to_uint8``), ended by an
``eos`` packet. ``tools/zmq_producer_example.py`` is a producer written with plain pyzmq +
msgpack + numpy, the contract in runnable form.

Rules: the stream ends on ``eos`` or when no packet arrives for ``idle_timeout_s`` after the
first one; no packet at all within ``first_timeout_s`` is an error (nothing is producing). A
packet that does not decode, or a frame without an image, becomes a failed ``SourceFrame``
(the stream goes on); a fatal ``error`` packet from the producer ends the stream with a
:class:`SourceError`. ``frame_index`` counts the frames received (from 0); the producer's own
``seq``/``frame_index`` are kept in ``extra`` and gaps in its ``seq`` are reported there
(``producer_gap``). The receive high-water mark is bounded (``hwm``), so a slow pipeline
pushes back on the producer instead of buffering without limit; ``linger`` is bounded.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import zmq

from sonoflow.stream import messages
from sonoflow.stream.errors import SourceError, WireError
from sonoflow.stream.sources.base import Source, SourceFrame
from sonoflow.stream.sources.pixels import FrameGuard, PtsGuard, to_grey_or_rgb, to_uint8

log = logging.getLogger(__name__)

SCHEMES = ("tcp://", "ipc://")


class ZmqSource(Source):
    """Frames pushed by an external process in SonoFlow's wire format.

    Attributes:
        endpoint: the ZeroMQ endpoint connected to.
        pixel_format: ``"gray8"`` or ``"rgb24"``, from the first frame (``"rgb24"`` before).
        end_reason: ``"eos"``, ``"idle"`` or ``""`` (still running).
        producer_gaps: frames missing in the producer's ``seq`` numbering so far.
        timing_source: ``"producer"`` (pts and time base from the frame headers).
    """

    live = True

    def __init__(self, endpoint: str, *, idle_timeout_s: float = 5.0,
                 first_timeout_s: float | None = None, hwm: int = 16, linger_ms: int = 200,
                 max_msg_bytes: int = 256 * 1024 * 1024, fps: float | None = None,
                 strict_pts: bool = False, spec: str | None = None):
        """Args:
            endpoint: ``tcp://host:port`` or ``ipc:///path`` where the producer binds.
            idle_timeout_s: end of stream after this long without a packet.
            first_timeout_s: how long to wait for the first packet (default:
                ``idle_timeout_s``).
            hwm: receive high-water mark (messages).
            linger_ms: socket linger on close.
            max_msg_bytes: largest message accepted (ZMQ_MAXMSGSIZE).
            fps: nominal rate for pacing, when the producer has one (None = unknown).
            strict_pts: raise on non-monotonic pts instead of warning.
            spec: the string the user gave (defaults to ``zmq:<endpoint>``).
        """
        self.endpoint = endpoint
        self.spec = spec or f"zmq:{endpoint}"
        self.idle_timeout_s = float(idle_timeout_s)
        self.first_timeout_s = float(first_timeout_s if first_timeout_s is not None
                                     else idle_timeout_s)
        self.hwm = int(hwm)
        self.linger_ms = int(linger_ms)
        self.max_msg_bytes = int(max_msg_bytes)
        self.fps = fps
        self.frame_count = None
        self.pixel_format = "rgb24"
        self.end_reason = ""
        self.producer_gaps = 0
        self.timing_source = "producer"
        self.pts_guard = PtsGuard(self.spec, strict=strict_pts)
        self._ctx: zmq.Context | None = None
        self._sock: zmq.Socket | None = None

    def open(self) -> None:
        """Create the context and connect the PULL socket (idempotent).

        Raises:
            SourceError: unsupported endpoint scheme or an endpoint ZeroMQ rejects.
        """
        if self._sock is not None:
            return
        if not self.endpoint.startswith(SCHEMES):
            raise SourceError(self.spec, f"endpoint {self.endpoint!r} is not supported; "
                                         f"expected {' or '.join(s + '...' for s in SCHEMES)} "
                                         "(inproc:// cannot reach another process)")
        if self.idle_timeout_s <= 0 or self.first_timeout_s <= 0 or self.hwm <= 0:
            raise SourceError(self.spec, "idle_timeout_s, first_timeout_s and hwm must be "
                                         "positive")
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, self.hwm)
        sock.setsockopt(zmq.LINGER, self.linger_ms)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_msg_bytes)
        try:
            sock.connect(self.endpoint)
        except zmq.ZMQError as e:
            sock.close(linger=0)
            ctx.term()
            raise SourceError(self.spec, f"cannot connect to {self.endpoint}: {e}") from e
        self._ctx, self._sock = ctx, sock

    def frames(self) -> Iterator[SourceFrame]:
        """Yield frames as they arrive until ``eos`` or the idle timeout.

        Yields:
            ``SourceFrame``; ``extra`` holds ``producer_seq``, ``producer_frame_index``,
            ``producer_stream`` and, when the producer sent them, ``pixel_spacing_mm`` and
            ``spacing_source``.

        Raises:
            SourceError: nothing arrived within ``first_timeout_s``, the producer sent a fatal
                error, or the frame size changed mid-stream.
        """
        self.open()
        sock = self._sock
        guard = FrameGuard(self.spec)
        index = 0
        received = 0
        last_seq: int | None = None
        last_pts = -1
        while True:
            timeout_s = self.idle_timeout_s if received else self.first_timeout_s
            if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
                if not received:
                    raise SourceError(self.spec, f"no packet from a producer within "
                                                 f"{timeout_s:g} s on {self.endpoint} (is the "
                                                 "producer running and bound there?)")
                log.warning("%s: no packet for %.1f s, ending the stream after %d frame(s)",
                            self.spec, timeout_s, index)
                self.end_reason = "idle"
                return
            parts = sock.recv_multipart(copy=False)
            received += 1
            try:
                packet = messages.decode(parts)
            except WireError as e:
                log.warning("%s: undecodable packet: %s", self.spec, e)
                yield SourceFrame(image=None, frame_index=index, pts=last_pts + 1,
                                  time_base=(1, 1), error=f"undecodable packet: {e}")
                index += 1
                continue
            header = packet.header
            if isinstance(header, messages.EosHeader):
                self.end_reason = "eos"
                return
            if isinstance(header, messages.ErrorHeader):
                if header.fatal:
                    raise SourceError(self.spec, f"the producer reported a fatal error "
                                                 f"({header.error_type}): {header.message}")
                log.warning("%s: producer error (%s): %s", self.spec, header.error_type,
                            header.message)
                continue
            if not isinstance(header, messages.FrameHeader):
                log.debug("%s: ignoring a %s packet", self.spec, packet.kind)
                continue
            extra: dict[str, Any] = {"producer_seq": header.seq,
                                     "producer_frame_index": header.frame_index,
                                     "producer_stream": header.stream_id}
            if last_seq is not None and header.seq > last_seq + 1:
                gap = header.seq - last_seq - 1
                self.producer_gaps += gap
                extra["producer_gap"] = gap
            last_seq = header.seq
            if header.pixel_spacing_mm is not None:
                extra["pixel_spacing_mm"] = list(header.pixel_spacing_mm)
                extra["spacing_source"] = header.spacing_source
            tb = (int(header.time_base[0]), int(header.time_base[1]))
            image = packet.arrays.get("image")
            bad_tb = tb[0] <= 0 or tb[1] <= 0
            if header.status == "failed" or image is None or bad_tb:
                why = header.error or (f"time_base {list(tb)} is not positive [num, den]"
                                       if bad_tb else "frame packet has no 'image' buffer "
                                       f"(buffers: {sorted(packet.arrays)})")
                tb = (1, 1) if bad_tb else tb
                yield SourceFrame(image=None, frame_index=index, pts=int(header.pts),
                                  time_base=tb, extra=extra, error=f"producer: {why}")
                index += 1
                continue
            arr = to_uint8(image, path=self.spec, frame_index=index)
            img, fmt = to_grey_or_rgb(arr, path=self.spec, frame_index=index)
            if fmt != header.pixel_format:
                extra["producer_pixel_format"] = header.pixel_format
            guard.check(img, fmt, index)
            self.pixel_format = fmt
            note = self.pts_guard.check(int(header.pts), index)
            if note:
                extra["pts_warning"] = note
            last_pts = int(header.pts)
            yield SourceFrame(image=img, frame_index=index, pts=int(header.pts), time_base=tb,
                              extra=extra)
            index += 1

    def close(self) -> None:
        """Close the socket (bounded linger) and the context (idempotent)."""
        if self._sock is not None:
            self._sock.close(linger=self.linger_ms)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
