"""StageRunner and CaptureRunner: own the sockets, the poll loop, stamps, edge policy,
end-of-stream, heartbeats and the error policy. Stages know nothing of any of it.

Control channel: every runner has a DEALER (identity = its name) connected to the supervisor's
ROUTER. Runner -> supervisor: ``ready`` (after ``open()``), ``hb`` (heartbeat from the poll
loop, so a hung ``process`` stops them: the application watchdog), ``done`` (stats), ``fatal``
(message). Supervisor -> runner: ``start`` (captures wait for it: the ready handshake, so no
frame is sent before every stage is up), ``stop``.

Edge policies (the consumer's input socket decides):
  * ``block``  - lossless: PUSH/PULL with bounded HWMs; a full queue blocks the producer
    (backpressure up to the source). The producer stays responsive to ``stop`` while blocked.
  * ``latest`` - the consumer drains its socket and processes only the newest frame per stream
    (its receive queue is deep, ``LATEST_DEPTH`` x hwm, and the producer's send queue shallow,
    so the frames waiting are where the drain sees them);
    every superseded frame is forwarded as a header-only packet with ``status="dropped"`` so it
    is counted and accounted for downstream (ZMQ_CONFLATE truncates multipart messages, so it is
    not used).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import zmq

from sonoflow.stream import messages as m
from sonoflow.stream import transport
from sonoflow.stream.errors import SonoflowError, SourceError, WireError

log = logging.getLogger(__name__)

POLICIES = ("block", "latest")
# A `latest` consumer's receive queue holds this many times hwm frames: deep enough that a
# producer never blocks on a busy consumer, drained whole before each frame is processed.
LATEST_DEPTH = 8


@dataclass
class RunnerSpec:
    """Everything a runner needs; plain data, so it crosses process boundaries."""

    name: str
    key: str | None  # stage registry key; None for a capture runner
    config: dict[str, Any] = field(default_factory=dict)
    input_endpoint: str | None = None
    input_policy: str = "block"
    output_endpoint: str | None = None
    output_policy: str = "block"
    control_endpoint: str = ""
    expected_eos: int = 1
    hwm: int = 8
    curve: dict[str, str] | None = None
    max_consecutive_errors: int = 10
    heartbeat_s: float = 0.25
    # stage runners only: a fused chain of stages run one after the other in this runner
    # (``[{"name", "key", "config"}, ...]``); empty = the one stage ``name`` / ``key`` / ``config``
    chain: list[dict[str, Any]] = field(default_factory=list)
    # capture runners only
    source: str | None = None
    stream_id: str = ""
    pacing: str = "fast"  # "fast" | "realtime"
    source_options: dict[str, Any] = field(default_factory=dict)
    max_frames: int | None = None
    tap_endpoint: str | None = None  # PUB copy of every output, for `sonoflow inspect`
    # credit-based flow control (``max_in_flight`` > 0, see ``CaptureRunner``): a capture
    # binds ``credit_endpoint`` (PULL); the runner that ends the pipeline acknowledges every
    # frame it finished to its stream's capture (``credit_endpoints``: stream id -> endpoint)
    max_in_flight: int = 0
    # a capture waiting for a credit this long goes on without it (frames lost in flight, e.g.
    # to a stage that died and was restarted, are never acknowledged); counted and logged
    credit_timeout_s: float = 10.0
    credit_endpoint: str | None = None
    credit_endpoints: dict[str, str] = field(default_factory=dict)


_ctl_enc = msgspec.msgpack.Encoder()
_ctl_dec = msgspec.msgpack.Decoder()


class _Base:
    def __init__(self, spec: RunnerSpec, ctx: zmq.Context | None = None):
        self.spec = spec
        self._own_ctx = ctx is None
        self.ctx = ctx or zmq.Context()
        self.keys = transport.CurveKeys.from_dict(spec.curve) if spec.curve else None
        self.ctrl: zmq.Socket | None = None
        self.out: zmq.Socket | None = None
        self.tap: zmq.Socket | None = None
        self.credit_socks: list[zmq.Socket] = []
        self.credit_auth = None  # a capture's ZAP authenticator for its credit socket (tcp)
        self._send_poller: zmq.Poller | None = None
        self.stopped = False
        self.stats: dict[str, Any] = {"processed": 0, "errors": 0, "drops": 0, "gaps": 0,
                                      "sent": 0, "eos": 0}
        self._last_hb = 0.0

    # -- control ------------------------------------------------------------------------
    def _open_control(self) -> None:
        if self.ctrl is not None:
            return
        self.ctrl = transport.configure(self.ctx.socket(zmq.DEALER), sndhwm=transport.CONTROL_HWM,
                                        rcvhwm=transport.CONTROL_HWM)
        self.ctrl.setsockopt(zmq.IDENTITY, self.spec.name.encode())
        transport.secure_client(self.ctrl, self.keys)
        self.ctrl.connect(self.spec.control_endpoint)

    def tell(self, kind: str, **payload) -> None:
        if self.ctrl is not None:
            try:
                self.ctrl.send(_ctl_enc.encode({"t": kind, **payload}), zmq.NOBLOCK)
            except zmq.Again:
                log.warning("%s: control queue full, %s message lost", self.spec.name, kind)

    def heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_hb >= self.spec.heartbeat_s:
            self._last_hb = now
            self.tell("hb", processed=self.stats["processed"])

    def check_control(self, timeout_ms: int = 0) -> None:
        if self.ctrl is None:
            return
        while self.ctrl.poll(timeout_ms, zmq.POLLIN):
            msg = _ctl_dec.decode(self.ctrl.recv())
            if msg.get("t") == "stop":
                self.stopped = True
            elif msg.get("t") == "start":
                self._started = True
            timeout_ms = 0

    # -- output ----------------------------------------------------------------------------
    def _open_output(self) -> None:
        if self.spec.output_endpoint:
            # shallow on the sending side, always: on a `latest` edge the depth lives in the
            # consumer's receive queue, which its drain empties, so the newest frame is never
            # stuck behind stale ones in a queue the consumer cannot see
            hwm = self.spec.hwm
            self.out = transport.configure(self.ctx.socket(zmq.PUSH), sndhwm=hwm, rcvhwm=hwm)
            transport.secure_client(self.out, self.keys)
            self.out.connect(self.spec.output_endpoint)
        if self.spec.tap_endpoint:
            self.tap = transport.configure(self.ctx.socket(zmq.PUB), sndhwm=4, rcvhwm=4)
            transport.bind(self.tap, self.spec.tap_endpoint)

    def send(self, packet: m.Packet) -> None:
        """Send one packet downstream, staying responsive to ``stop`` while blocked."""
        frames = m.encode(packet)
        if self.tap is not None:
            try:
                self.tap.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                pass  # an inspector that cannot keep up never slows the pipeline
        if self.out is None:
            return
        while not self.stopped:
            try:
                self.out.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                self.stats["sent"] += 1
                return
            except zmq.Again:
                if self.spec.output_policy == "latest" and "image" in packet.arrays \
                        and isinstance(packet.header, m.FrameHeader):
                    # the consumer is far behind: drop the pixels here, keep the account
                    self.stats["drops"] += 1
                    packet = _dropped(packet.header, f"latest: queue full after {self.spec.name}")
                    frames = m.encode(packet)
                self.heartbeat()
                self._wait_writable()

    def _wait_writable(self, timeout_ms: int = 100) -> None:
        """Block until the output can take a packet, a control message arrives or the timeout
        passes, whichever is first (one poll on both sockets: a freed queue slot wakes the
        sender at once, not at the next tick of a fixed sleep)."""
        if self._send_poller is None:
            self._send_poller = zmq.Poller()
            self._send_poller.register(self.out, zmq.POLLOUT)
            if self.ctrl is not None:
                self._send_poller.register(self.ctrl, zmq.POLLIN)
        ready = dict(self._send_poller.poll(timeout_ms))
        if self.ctrl is not None and self.ctrl in ready:
            self.check_control()

    def close_sockets(self) -> None:
        # A normal end must not lose the EOS (or the last frames) still queued for a slow
        # consumer: linger long (bounded). A stop linger short: shutdown must be quick even
        # when a peer is dead.
        out_linger = transport.LINGER_MS if self.stopped else transport.DRAIN_LINGER_MS
        for s, linger in ((self.out, out_linger), (self.tap, 0), (self.ctrl, transport.LINGER_MS),
                          *((c, 0) for c in self.credit_socks)):
            if s is not None:
                s.close(linger=linger)
        if self.credit_auth is not None:
            self.credit_auth.stop()
        if self._own_ctx:
            self.ctx.term()


HOLD_MAX_S = 60.0  # a finished stage waits this long at most for the supervisor's `stop`


def _dropped(header: m.FrameHeader, reason: str) -> m.Packet:
    """A header-only copy of a frame, marked dropped (pixels are not forwarded)."""
    h = msgspec.structs.replace(header, status="dropped", error=reason, buffers=[])
    return m.Packet(h, {})


@dataclass
class _Link:
    """One stage of a runner's chain (a runner runs one stage, or several fused ones)."""

    name: str
    key: str
    config: dict[str, Any]
    stage: Any
    accepts: tuple[str, ...]
    all_frames: bool
    per_stream: dict[str, Any] = field(default_factory=dict)
    processed: int = 0


class StageRunner(_Base):
    """Runs one stage, or a fused chain of stages (no hop between them): receive, process,
    stamp, send; EOS, errors, heartbeats."""

    _count_last_link = True  # the runner's `processed` is its last stage's

    def _open_chain(self) -> list[_Link]:
        from sonoflow.stream import stage as stage_registry

        decls = self.spec.chain or [{"name": self.spec.name, "key": self.spec.key,
                                     "config": self.spec.config}]
        links: list[_Link] = []
        try:
            for d in decls:
                stage = stage_registry.create(d["key"], d.get("config") or {})
                # sinks see every frame record, including failed and header-only dropped ones
                links.append(_Link(d["name"], d["key"], d.get("config") or {}, stage,
                                   tuple(getattr(stage, "accepts", ("frame",))),
                                   bool(getattr(stage, "wants_all_frames", False))))
                stage.open()
        except Exception:
            for link in links:  # the one whose open() failed too, as a lone stage always was
                link.stage.close()
            raise
        return links

    def run(self) -> int:
        self._started = True
        if not self._open_or_report(f"stage {self.spec.name!r} ({self.spec.key}) failed to open"):
            return 2
        depth = self.spec.hwm * (LATEST_DEPTH if self.spec.input_policy == "latest" else 1)
        inp = transport.configure(self.ctx.socket(zmq.PULL), sndhwm=self.spec.hwm,
                                  rcvhwm=depth)
        transport.secure_server(inp, self.keys)
        auth = transport.start_authenticator(self.ctx, self.keys) if self.keys else None
        transport.bind(inp, self.spec.input_endpoint)
        self._open_output()
        acks = self._open_acks()
        self.tell("ready")
        last_seq: dict[str, int] = {}
        eos_seen: set[str] = set()
        self._consecutive = 0
        code = 0
        try:
            while not self.stopped and self.stats["eos"] < self.spec.expected_eos:
                self.heartbeat()
                self.check_control()
                if not inp.poll(int(self.spec.heartbeat_s * 1000), zmq.POLLIN):
                    continue
                batch = [inp.recv_multipart(copy=False)]
                if self.spec.input_policy == "latest":
                    while True:
                        try:
                            batch.append(inp.recv_multipart(flags=zmq.NOBLOCK, copy=False))
                        except zmq.Again:
                            break
                packets = []
                for frames in batch:
                    try:
                        packets.append(m.decode(frames))
                    except WireError as e:
                        self.stats["errors"] += 1
                        log.error("%s: undecodable packet dropped: %s", self.spec.name, e)
                        self.send(m.Packet(m.ErrorHeader(stream_id="?", seq=None,
                                                         stage=self.spec.name,
                                                         error_type="WireError", message=str(e))))
                if self.spec.input_policy == "latest":
                    packets = self._supersede(packets)
                for p in packets:
                    h = p.header
                    log.debug("%s: got %s seq=%s", self.spec.name, type(h).__name__,
                              getattr(h, "seq", getattr(h, "last_seq", None)))
                    if isinstance(h, m.FrameHeader):
                        prev = last_seq.get(h.stream_id)
                        if prev is not None and h.seq > prev + 1:
                            self.stats["gaps"] += h.seq - prev - 1
                            log.warning("%s: stream %s seq gap %d -> %d (%d frame(s) lost)",
                                        self.spec.name, h.stream_id, prev, h.seq, h.seq - prev - 1)
                        last_seq[h.stream_id] = max(h.seq, prev if prev is not None else -1)
                    elif isinstance(h, m.EosHeader):
                        if h.stream_id in eos_seen:
                            continue  # captures repeat their EOS until stopped (see below)
                        eos_seen.add(h.stream_id)
                        self.stats["eos"] += 1
                        log.info("%s: end of stream %s (last seq %d, %s)", self.spec.name,
                                 h.stream_id, h.last_seq, h.reason)
                    self._deliver(0, p)
                    if acks and isinstance(h, m.FrameHeader) and h.stream_id in acks:
                        try:  # cumulative: a lost ack is covered by the next one
                            acks[h.stream_id].send(_ctl_enc.encode(h.seq), zmq.NOBLOCK)
                        except zmq.Again:
                            pass
                    if self._consecutive > self.spec.max_consecutive_errors:
                        msg = (f"stage {self.spec.name!r}: {self._consecutive} consecutive "
                               f"errors (limit {self.spec.max_consecutive_errors}); exiting")
                        log.error(msg)
                        self.tell("fatal", message=msg, restartable=True)
                        code = 3
                        return code
        finally:
            # a fused runner: what each of its stages processed (the runner's own `processed`
            # is its last stage's, as for a lone stage, so a fused sink reports progress right)
            self.stats["per_stage"] = {link.name: link.processed for link in self._links}
            self.tell("done", stats=self.stats, code=code)
            if code == 0 and not self.stopped and self.out is not None:
                self._hold_until_stopped()
            try:
                self._close_chain()
            finally:
                inp.close(linger=transport.LINGER_MS)
                if auth is not None:
                    auth.stop()
                self.close_sockets()
        return code

    def _open_acks(self) -> dict[str, zmq.Socket]:
        """The end of the pipeline: one PUSH per stream to its capture's credit endpoint."""
        acks = {}
        for sid, endpoint in self.spec.credit_endpoints.items():
            sock = transport.configure(self.ctx.socket(zmq.PUSH), sndhwm=1000, rcvhwm=1000)
            transport.secure_client(sock, self.keys)
            sock.connect(endpoint)
            acks[sid] = sock
            self.credit_socks.append(sock)
        return acks

    def _open_or_report(self, what: str) -> bool:
        """Open the control socket and the chain's stages; an open() failure is fatal: told to
        the supervisor as ``"<what>: <error>"``, sockets closed, ``False`` returned."""
        self._open_control()
        try:
            self._links = self._open_chain()
        except Exception as e:  # noqa: BLE001 - open() failures are fatal, reported, never hidden
            msg = f"{what}: {type(e).__name__}: {e}"
            log.error(msg)
            self.tell("fatal", message=msg)
            time.sleep(0.05)
            self.close_sockets()
            return False
        return True

    def _close_chain(self) -> None:
        for link in self._links:
            for inst in link.per_stream.values():
                if inst is not link.stage:
                    inst.close()
            link.stage.close()

    def _hold_until_stopped(self) -> None:
        """After the last EOS, keep the output open until the supervisor ends the run.

        A process that exits right after its last send can lose what it sent: libzmq stops
        reading a connection while the receiver's queue is full, and when the sending process
        is gone the bytes still waiting on that connection are dropped with it (reproduced:
        30 small frames through 3 fast pass-through processes; the second stage got 17 and
        the run hung waiting for the EOS). The supervisor says ``stop`` once the sink has
        everything, so holding until then loses nothing; the bound only matters when the
        supervisor is gone."""
        deadline = time.monotonic() + HOLD_MAX_S
        while not self.stopped and time.monotonic() < deadline:
            self.heartbeat()
            self.check_control(timeout_ms=100)

    def _deliver(self, i: int, p: m.Packet) -> None:
        """Hand ``p`` to link ``i`` of the chain; what it emits goes on to link ``i + 1``, and
        past the last link out of the runner (in order, depth first)."""
        if i == len(self._links):
            _Base.send(self, p)
            return
        link = self._links[i]
        h = p.header
        if isinstance(h, m.FrameHeader):
            if (h.status == "failed" or "image" not in p.arrays) and not link.all_frames:
                self._deliver(i + 1, p)  # accounted upstream; nothing to process
                return
            for q in self._process(link, self._for_stream(link, h.stream_id), p):
                self._deliver(i + 1, q)
        elif isinstance(h, m.EosHeader):
            for extra in self._for_stream(link, h.stream_id).flush(p) or []:
                self._deliver(i + 1, extra)
            self._deliver(i + 1, p)
        elif h.__struct_config__.tag in link.accepts:
            for q in _as_list(self._for_stream(link, h.stream_id).process(p)):
                self._deliver(i + 1, q)
        else:
            self._deliver(i + 1, p)

    def _for_stream(self, link: _Link, stream_id: str):
        """The stage instance for ``stream_id``: the one instance, or, for stages that keep
        per-stream state (``per_stream = True``), one instance per stream, created and opened
        on the stream's first packet (the first stream gets the instance opened at start)."""
        stage = link.stage
        if not getattr(stage, "per_stream", False):
            return stage
        inst = link.per_stream.get(stream_id)
        if inst is None:
            from sonoflow.stream import stage as stage_registry

            if not link.per_stream:
                inst = stage
            else:
                inst = stage_registry.create(link.key, link.config)
                inst.open()
            link.per_stream[stream_id] = inst
        return inst

    def _supersede(self, packets: list[m.Packet]) -> list[m.Packet]:
        """Latest policy: keep the newest image-carrying frame per stream; the rest become
        header-only ``dropped`` packets, forwarded in order so they are accounted for."""
        newest: dict[str, int] = {}
        for i, p in enumerate(packets):
            if isinstance(p.header, m.FrameHeader) and "image" in p.arrays:
                newest[p.header.stream_id] = i
        out = []
        for i, p in enumerate(packets):
            h = p.header
            if isinstance(h, m.FrameHeader) and "image" in p.arrays and newest[h.stream_id] != i:
                self.stats["drops"] += 1
                out.append(_dropped(h, f"latest: superseded before {self.spec.name}"))
            else:
                out.append(p)
        return out

    def _process(self, link: _Link, stage, p: m.Packet) -> list[m.Packet]:
        """Run one frame through one stage: its outputs, stamped; on an exception an error
        packet and the frame marked failed (the error policy: log, emit, count, go on)."""
        h = p.header
        t_in = m.now_ns()
        try:
            out = stage.process(p)
        except Exception as e:  # noqa: BLE001 - the error policy: log, emit, count, go on
            self.stats["errors"] += 1
            self._consecutive += 1
            msg = f"{type(e).__name__}: {e}"
            log.error("stage error (stream_id=%s, seq=%d, stage=%s): %s", h.stream_id, h.seq,
                      link.name, msg, exc_info=log.isEnabledFor(logging.DEBUG))
            failed = msgspec.structs.replace(h, status="failed", error=f"{link.name}: {msg}",
                                             buffers=[])
            return [m.Packet(m.ErrorHeader(stream_id=h.stream_id, seq=h.seq, stage=link.name,
                                           error_type=type(e).__name__, message=str(e))),
                    m.Packet(failed, {})]
        t_out = m.now_ns()
        link.processed += 1
        if link is self._links[-1] and self._count_last_link:
            self.stats["processed"] += 1
        self._consecutive = 0
        outs = _as_list(out)
        for q in outs:
            if isinstance(q.header, m.FrameHeader) and q.header.seq == h.seq \
                    and q.header.stream_id == h.stream_id:
                q.header.stamps.append(m.Stamp(link.name, t_in, t_out))
        return outs


def _as_list(out) -> list[m.Packet]:
    if out is None:
        return []
    if isinstance(out, m.Packet):
        return [out]
    return list(out)


class CaptureRunner(_Base):
    """Reads a source, stamps seq / capture_ns, paces, and sends frames downstream.

    With ``max_in_flight`` = N > 0 (credit-based flow control), frame ``seq`` is read only
    once the end of the pipeline has finished frame ``seq - N``: at most N frames are between
    the capture and the sink, whatever the queues could hold. In ``fast`` mode this turns
    queueing into waiting at the source, so a frame's latency is the pipeline's own cost
    (N = 1: one frame in flight, as a single-threaded scheduler runs a graph) and throughput
    is what N frames in flight allow. The time spent waiting is ``credit_wait_ms`` in the
    stats, before the frame is read and stamped.
    """

    def run(self) -> int:
        from sonoflow.stream.sources.registry import open_source

        self._started = False
        self._open_control()
        spec = self.spec
        try:
            source = open_source(spec.source, **spec.source_options)
            source.open()
        except SonoflowError as e:
            self.tell("fatal", message=str(e))
            time.sleep(0.05)
            self.close_sockets()
            return 2
        except Exception as e:  # noqa: BLE001 - a reader bug must still name the file
            log.debug("opening %s failed", spec.source, exc_info=True)
            self.tell("fatal", message=f"{spec.source}: cannot open this source "
                                       f"({type(e).__name__}: {e})")
            time.sleep(0.05)
            self.close_sockets()
            return 2
        self._open_output()
        credit = self._open_credit()
        self.tell("ready", fps=source.fps, frame_count=source.frame_count,
                  calibration=[source.calibration.mm_per_px, source.calibration.source,
                               source.calibration.note],
                  pixel_format=getattr(source, "pixel_format", ""))
        while not self._started and not self.stopped:
            self.heartbeat()
            self.check_control(timeout_ms=50)
        seq = -1
        reason, error = "end", None
        self._lag_s = 0.0
        self._period_s = 1.0 / source.fps if source.fps else 0.0
        t0_wall = None
        pts0 = None
        cal = source.calibration
        try:
            it = iter(source.frames())
            while not self.stopped:
                if credit is not None:
                    self._wait_for_credit(credit, seq + 1)
                    if self.stopped:
                        break
                t_in = m.now_ns()
                try:
                    sf = next(it)
                except StopIteration:
                    break
                except (SourceError, Exception) as e:  # noqa: BLE001 - any reader failure ends
                    # the stream with an error naming the file; frames already sent are kept
                    if not isinstance(e, SourceError):
                        log.debug("reading %s failed", spec.source, exc_info=True)
                        e = SourceError(spec.source, f"read failed after frame {seq}: "
                                                     f"{type(e).__name__}: {e}")
                    reason, error = "error", str(e)
                    log.error("capture %s: %s", spec.stream_id, e)
                    self.send(m.Packet(m.ErrorHeader(stream_id=spec.stream_id, seq=seq + 1,
                                                     stage="capture", error_type="SourceError",
                                                     message=str(e), fatal=True)))
                    break
                seq += 1
                if spec.pacing == "realtime" and source.fps:
                    pts_s = sf.pts * sf.time_base[0] / sf.time_base[1]
                    if t0_wall is None:
                        t0_wall, pts0 = time.monotonic(), pts_s
                    delay = t0_wall + (pts_s - pts0) - time.monotonic()
                    self._lag_s = -delay  # > 0: the frame is already late when read
                    while delay > 0 and not self.stopped:
                        self.check_control(timeout_ms=int(min(delay, 0.05) * 1000) + 1)
                        delay = t0_wall + (pts_s - pts0) - time.monotonic()
                    t_in = m.now_ns()
                img = sf.image
                pf = "rgb24" if img is not None and img.ndim == 3 else "gray8"
                h = m.FrameHeader(stream_id=spec.stream_id, seq=seq, frame_index=sf.frame_index,
                                  pts=sf.pts, time_base=tuple(sf.time_base), capture_ns=0,
                                  pixel_format=pf, pixel_spacing_mm=cal.mm_per_px,
                                  spacing_source=cal.source, spacing_note=cal.note,
                                  source=spec.source or "",
                                  extra={"capture": sf.extra} if sf.extra else {})
                arrays = {}
                if sf.error is not None or img is None:
                    h.status, h.error = "failed", f"capture: {sf.error or 'no image'}"
                else:
                    arrays["image"] = img
                h.capture_ns = m.now_ns()
                h.stamps.append(m.Stamp("capture", t_in, h.capture_ns))
                self.send(m.Packet(h, arrays))
                self.stats["processed"] += 1
                self.heartbeat()
                self.check_control()
                if spec.max_frames is not None and seq + 1 >= spec.max_frames:
                    break
            if self.stopped and reason == "end":
                reason = "stopped"
        finally:
            source.close()
        eos = m.EosHeader(stream_id=spec.stream_id, last_seq=seq, frames_total=seq + 1,
                          reason=reason, error=error)
        stop_state = self.stopped
        self.stopped = False  # EOS must go out even when asked to stop
        self._send_eos(m.Packet(eos), stop_state)
        self.tell("done", stats=self.stats, reason=reason, error=error, code=0)
        # An EOS can be lost with a stage that dies and restarts (packets in flight to the dead
        # process are gone). Repeat it until the supervisor says the run is over; stages
        # ignore repeats (one EOS per stream).
        last = time.monotonic()
        while not stop_state and not self.stopped:
            self.check_control(timeout_ms=100)
            if time.monotonic() - last > 1.0:
                last = time.monotonic()
                self._send_eos(m.Packet(eos), True)
        self.stopped = True
        self.close_sockets()
        return 0

    def _open_credit(self) -> zmq.Socket | None:
        if not (self.spec.max_in_flight > 0 and self.spec.credit_endpoint):
            return None
        sock = transport.configure(self.ctx.socket(zmq.PULL), sndhwm=1000, rcvhwm=1000)
        transport.secure_server(sock, self.keys)
        if self.keys is not None:
            self.credit_auth = transport.start_authenticator(self.ctx, self.keys)
        transport.bind(sock, self.spec.credit_endpoint)
        self.credit_socks.append(sock)
        self._acked = 0  # every frame before this seq has been finished at the sink
        self._credit_poller = zmq.Poller()
        self._credit_poller.register(sock, zmq.POLLIN)
        self._credit_poller.register(self.ctrl, zmq.POLLIN)
        self.stats.update(credit_wait_ms=0.0, credit_timeouts=0)
        return sock

    def _wait_for_credit(self, credit: zmq.Socket, seq: int) -> None:
        """Block until frame ``seq`` may go (``seq < acked + max_in_flight``), staying
        responsive to ``stop`` and heartbeating; after ``credit_timeout_s`` without a credit,
        go on (the frames in flight were lost) and count it."""
        window = self.spec.max_in_flight
        if seq < self._acked + window:
            return
        t0 = time.monotonic()
        while seq >= self._acked + window and not self.stopped:
            ready = dict(self._credit_poller.poll(int(self.spec.heartbeat_s * 1000)))
            if credit in ready:
                while True:
                    try:
                        self._acked = max(self._acked, int(_ctl_dec.decode(
                            credit.recv(zmq.NOBLOCK))) + 1)
                    except zmq.Again:
                        break
            if self.ctrl in ready:
                self.check_control()
            self.heartbeat()
            if seq >= self._acked + window and \
                    time.monotonic() - t0 > self.spec.credit_timeout_s:
                self.stats["credit_timeouts"] += 1
                log.warning("capture %s: no credit for frame %d in %.0f s (frames %d..%d lost "
                            "in flight?); going on", self.spec.stream_id, seq,
                            self.spec.credit_timeout_s, self._acked, seq - 1)
                self._acked = seq - window + 1
        self.stats["credit_wait_ms"] += (time.monotonic() - t0) * 1000.0

    def _send_eos(self, packet: m.Packet, stopping: bool) -> None:
        deadline = time.monotonic() + (0.5 if stopping else 3600)
        frames = m.encode(packet)
        while self.out is not None and time.monotonic() < deadline:
            try:
                self.out.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                return
            except zmq.Again:
                self._wait_writable(timeout_ms=20)
                if self.stopped:
                    deadline = min(deadline, time.monotonic() + 0.5)


class InlineRunner(CaptureRunner, StageRunner):
    """A capture that runs the first stages of the pipeline itself.

    Each frame goes from the source through the chain by function call: no socket, no
    encode / decode, no thread or process hand-over, the way a single-threaded scheduler runs
    a graph. What leaves the chain goes on by socket as usual (nothing, when the chain ends
    with the sink). One stream per inline runner.

    With the ``latest`` policy on the capture's edge, a frame read later than one frame
    period after it came due (the chain was still busy with an earlier one) is not analysed:
    it is counted as a drop and passed on header-only, so a slow chain never makes the
    capture fall behind the clock. With ``block`` every frame is analysed, late or not.
    """

    _count_last_link = False  # `processed` counts frames captured; per-stage counts are apart

    def run(self) -> int:
        self._consecutive = 0
        self._eos_sent = False
        names = ", ".join(d["name"] for d in self.spec.chain)
        if not self._open_or_report(f"stage(s) {names} failed to open in {self.spec.name!r}"):
            return 2
        try:
            return CaptureRunner.run(self)
        finally:
            self._close_chain()

    def send(self, packet: m.Packet) -> None:
        h = packet.header
        if isinstance(h, m.FrameHeader) and "image" in packet.arrays \
                and self.spec.input_policy == "latest" and self._period_s \
                and self._lag_s > self._period_s:
            self.stats["drops"] += 1
            packet = _dropped(h, f"latest: late by {self._lag_s * 1000:.0f} ms before "
                                 f"{self._links[0].name}")
        self._deliver(0, packet)
        self.stats["per_stage"] = {link.name: link.processed for link in self._links}
        if self._consecutive > self.spec.max_consecutive_errors:
            msg = (f"{self.spec.name!r}: {self._consecutive} consecutive errors in its stages "
                   f"(limit {self.spec.max_consecutive_errors}); stopping")
            log.error(msg)
            self.tell("fatal", message=msg)
            self.stopped = True

    def _send_eos(self, packet: m.Packet, stopping: bool) -> None:
        # through the chain once (its stages flush); the repeats that guard against an EOS
        # lost to a restarting stage go out of the chain's end only
        if not self._eos_sent:
            self._eos_sent = True
            self._deliver(0, packet)
        elif self.out is not None:
            CaptureRunner._send_eos(self, packet, stopping)
