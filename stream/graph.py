"""Pipeline files and the supervisor that runs them as threads, processes or tcp processes.

A pipeline file (TOML) declares the stages in order, their config, and the edge policy::

    name = "analyse"
    [edges]
    policy = "block"        # default for every edge; `live` runs override with "latest"
    hwm = 8
    [[stage]]
    key = "preprocess"      # registry key (stream/stage.py); `name` defaults to it
    [stage.config]
    ...
    [[edge]]                # optional per-edge override, by consumer name
    to = "render"
    policy = "latest"

The graph is ``capture(s) -> stage 1 -> ... -> stage N`` (the last stage is the sink). Several
captures (streams) fan into the first stage. The supervisor names the endpoints for the mode,
starts every runner, waits for all to be ready (the handshake), starts the captures, restarts a
stage process that dies, kills a hung one (watchdog on heartbeats), and shuts everything down in
bounded time.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import msgspec
import zmq

from sonoflow.stream import transport
from sonoflow.stream.errors import ConfigError, StageError
from sonoflow.stream.runner import (
    POLICIES,
    CaptureRunner,
    InlineRunner,
    RunnerSpec,
    StageRunner,
)

log = logging.getLogger(__name__)

_ctl_enc = msgspec.msgpack.Encoder()
_ctl_dec = msgspec.msgpack.Decoder()
DONE_GRACE_S = 2.0  # after the sink is done, how long to wait for the other stages' stats
TCP_MIN_HWM = 2  # see Supervisor._build_specs


@dataclass
class StageDecl:
    name: str
    key: str
    config: dict[str, Any] = field(default_factory=dict)
    policy: str | None = None  # policy of this stage's input edge; None = pipeline default
    # consecutive stages with the same group run fused in one runner (no hop between them)
    group: str | None = None


@dataclass
class Pipeline:
    name: str
    stages: list[StageDecl]
    policy: str = "block"
    hwm: int = 8
    path: str = ""
    max_in_flight: int = 0  # credit window per stream (0: none; see CaptureRunner)

    def stage(self, name: str) -> StageDecl:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"pipeline {self.name!r} has no stage {name!r}; "
                          f"stages: {[s.name for s in self.stages]}")

    def with_overrides(self, overrides: dict[str, dict[str, Any]] | None) -> Pipeline:
        stages = [StageDecl(s.name, s.key, dict(s.config), s.policy, s.group)
                  for s in self.stages]
        p = Pipeline(self.name, stages, self.policy, self.hwm, self.path, self.max_in_flight)
        for name, cfg in (overrides or {}).items():
            p.stage(name).config.update(cfg)
        return p


def load_pipeline(name_or_path: str) -> Pipeline:
    """Load a pipeline by shipped name (``analyse``, ``spine``, ``live``) or by file path.

    Raises:
        ConfigError: file missing, bad TOML, unknown keys or policies.
    """
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise ConfigError(f"{p}: pipeline file not found")
        text, where = p.read_text(), str(p)
    else:
        res = resources.files("sonoflow.stream").joinpath("pipelines", f"{name_or_path}.toml")
        if not res.is_file():
            shipped = sorted(f.name[:-5] for f in resources.files("sonoflow.stream")
                             .joinpath("pipelines").iterdir() if f.name.endswith(".toml"))
            raise ConfigError(f"unknown pipeline {name_or_path!r}; shipped: {shipped}, "
                              "or give a path to a .toml file")
        text, where = res.read_text(), f"pipelines/{name_or_path}.toml"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML: {e}") from e
    unknown = set(doc) - {"name", "description", "edges", "stage", "edge"}
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {sorted(unknown)}")
    edges = doc.get("edges", {})
    policy = edges.get("policy", "block")
    if policy not in POLICIES:
        raise ConfigError(f"{where}: edge policy {policy!r}; expected one of {POLICIES}")
    stages = []
    for i, s in enumerate(doc.get("stage", [])):
        if "key" not in s:
            raise ConfigError(f"{where}: stage #{i + 1} has no `key`")
        bad = set(s) - {"key", "name", "config", "group"}
        if bad:
            raise ConfigError(f"{where}: stage {s['key']!r}: unknown field(s) {sorted(bad)}")
        stages.append(StageDecl(s.get("name", s["key"]), s["key"], dict(s.get("config", {})),
                                group=s.get("group")))
    if not stages:
        raise ConfigError(f"{where}: a pipeline needs at least one stage (the sink)")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: stage names must be unique, got {names}")
    _check_groups(stages, where)
    window = _credit_window(edges.get("max_in_flight", 0), f"{where}: [edges] max_in_flight")
    pipe = Pipeline(doc.get("name", p.stem), stages, policy, int(edges.get("hwm", 8)), where,
                    window)
    for e in doc.get("edge", []):
        pol = e.get("policy")
        if pol not in POLICIES:
            raise ConfigError(f"{where}: edge to {e.get('to')!r}: policy {pol!r}; "
                              f"expected one of {POLICIES}")
        pipe.stage(e["to"]).policy = pol
    return pipe


def _credit_window(value: Any, what: str) -> int:
    """A credit window (``max_in_flight``): an integer >= 0, 0 meaning none.

    Raises:
        ConfigError: anything else, naming ``what``.
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{what} must be an integer >= 0 (0 = no credit window), got "
                          f"{value!r}")
    return value


def _check_groups(stages: list[StageDecl], where: str) -> None:
    """A group is a run of consecutive stages, named unlike any stage."""
    names = {s.name for s in stages}
    closed: set[str] = set()
    prev: str | None = None
    for s in stages:
        if s.group is not None:
            if s.group in names:
                raise ConfigError(f"{where}: group {s.group!r} has the name of a stage; "
                                  "name groups apart from stages")
            if s.group in closed:
                raise ConfigError(f"{where}: group {s.group!r} is not one run of "
                                  "consecutive stages")
        if prev is not None and prev != s.group:
            closed.add(prev)
        prev = s.group


def runner_units(stages: list[StageDecl]) -> list[tuple[str, list[StageDecl]]]:
    """Split a stage list into runners: ``(runner name, its stages)``; a group's consecutive
    stages share one runner named after the group, every other stage runs alone."""
    units: list[tuple[str, list[StageDecl]]] = []
    for s in stages:
        if s.group is not None and units and units[-1][1][-1].group == s.group:
            units[-1][1].append(s)
        else:
            units.append((s.group or s.name, [s]))
    return units


def grouped(pipeline: Pipeline, groups: dict[str, str]) -> Pipeline:
    """The same pipeline with stages put in runner groups (``stage name -> group``; ``""``
    gives a stage a runner of its own); stages not named keep the pipeline file's group.

    Raises:
        ConfigError: a name is not a stage, or a group is not one run of consecutive stages.
    """
    p = pipeline.with_overrides(None)
    names = {s.name for s in p.stages}
    unknown = sorted(set(groups) - names)
    if unknown:
        raise ConfigError(f"{p.path or p.name}: groups name no stage {unknown}; stages: "
                          f"{sorted(names)}")
    for s in p.stages:
        if s.name in groups:
            s.group = groups[s.name] or None
    _check_groups(p.stages, p.path or p.name)
    return p


def fused(pipeline: Pipeline, group: str = "fused") -> Pipeline:
    """The same pipeline with every stage in one group: one runner runs the whole chain
    (one hop, capture -> chain), like a single-threaded scheduler."""
    p = pipeline.with_overrides(None)
    for s in p.stages:
        s.group = group
    _check_groups(p.stages, p.path or p.name)
    return p


# ---- workers: the same runner in a thread or a process ------------------------------------


def _run_spec(spec: RunnerSpec, ctx: zmq.Context | None = None) -> int:
    if spec.key is None:
        runner = InlineRunner(spec, ctx) if spec.chain else CaptureRunner(spec, ctx)
    else:
        runner = StageRunner(spec, ctx)
    return runner.run()


def _process_main(spec: RunnerSpec, log_level: int) -> None:
    import sys

    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(_run_spec(spec))


class _Worker:
    def __init__(self, spec: RunnerSpec, mode: str, ctx: zmq.Context):
        self.spec = spec
        self.mode = mode
        self.ctx = ctx
        self.restarts = 0
        self.done = False
        self.ready = False
        self.last_hb = time.monotonic()
        self.stats: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self._code: int | None = None
        self._start()

    def _start(self) -> None:
        if self.mode == "threads":
            def target():
                try:
                    self._code = _run_spec(self.spec, self.ctx)
                except zmq.ContextTerminated:
                    self._code = 0 if self.done else 1  # the run ended around this thread
                except Exception:  # noqa: BLE001 - a crashed thread must surface as an exit code
                    log.exception("runner %s crashed", self.spec.name)
                    self._code = 1
            self._thread = threading.Thread(target=target, name=f"sonoflow-{self.spec.name}",
                                            daemon=True)
            self._thread.start()
        else:
            mpctx = mp.get_context("spawn")
            self._proc = mpctx.Process(target=_process_main,
                                       args=(self.spec, logging.getLogger().level),
                                       name=f"sonoflow-{self.spec.name}", daemon=True)
            self._proc.start()

    @property
    def pid(self) -> int | None:
        return getattr(getattr(self, "_proc", None), "pid", None)

    def alive(self) -> bool:
        if self.mode == "threads":
            return self._thread.is_alive()
        return self._proc.is_alive()

    def exitcode(self) -> int | None:
        if self.mode == "threads":
            return None if self._thread.is_alive() else self._code
        return self._proc.exitcode

    def restart(self) -> None:
        self.restarts += 1
        self.ready = False
        self.last_hb = time.monotonic()
        self._code = None
        self._start()

    def kill(self) -> None:
        if self.mode != "threads" and self._proc.is_alive():
            self._proc.kill()

    def join(self, timeout: float) -> None:
        if self.mode == "threads":
            self._thread.join(timeout)
        else:
            self._proc.join(timeout)


@dataclass
class RunResult:
    ok: bool
    stages: dict[str, dict[str, Any]]
    captures: dict[str, dict[str, Any]]
    restarts: dict[str, int]
    events: list[str]
    error: str | None = None
    elapsed_s: float = 0.0


class Supervisor:
    """Runs a pipeline over one or more sources.

    Args:
        pipeline: the pipeline (last stage is the sink).
        sources: source specs; each becomes a stream (``stream_id`` = its stem, made unique).
        mode: "threads" | "processes" | "tcp".
        pacing: "fast" | "realtime".
        policy: override every edge's policy (``None`` keeps the file's).
        watchdog_s: a stage silent for this long is hung: killed and restarted (processes) or
            the run is stopped (threads, which cannot be killed).
        max_restarts: restarts per stage before the run is failed.
        on_progress: called with the sink's processed-frame count.
        inline_capture: the capture runs the first runner's stages itself (one stream): no
            socket between the source and the first stage group (see ``InlineRunner``).
        max_in_flight: credit window per stream: at most this many frames between a capture
            and the end of the pipeline (``None`` keeps the pipeline file's ``[edges]
            max_in_flight``; 0 = no window, the edge queues alone bound it). See
            ``CaptureRunner``.
    """

    def __init__(self, pipeline: Pipeline, sources: list[str], *, mode: str = "threads",
                 pacing: str = "fast", policy: str | None = None, watchdog_s: float = 30.0,
                 max_restarts: int = 3, ready_timeout_s: float = 120.0,
                 source_options: dict[str, Any] | None = None, stream_ids: list[str] | None = None,
                 max_frames: int | None = None, taps: bool = False,
                 on_progress: Callable[[int], None] | None = None,
                 on_ready: Callable[[dict], None] | None = None,
                 inline_capture: bool = False, max_in_flight: int | None = None):
        if pacing not in ("fast", "realtime"):
            raise ConfigError(f"pacing {pacing!r}; expected 'fast' or 'realtime'")
        if policy is not None and policy not in POLICIES:
            raise ConfigError(f"edge policy {policy!r}; expected one of {POLICIES}")
        self.pipeline = pipeline
        self.sources = list(sources)
        self.mode = mode
        self.pacing = pacing
        self.policy = policy
        self.watchdog_s = watchdog_s
        self.max_restarts = max_restarts
        self.ready_timeout_s = ready_timeout_s
        self.source_options = source_options or {}
        self.max_frames = max_frames
        self.taps = taps
        self.on_progress = on_progress
        self.on_ready = on_ready
        self.inline_capture = inline_capture
        self.max_in_flight = pipeline.max_in_flight if max_in_flight is None else \
            _credit_window(max_in_flight, "max_in_flight")
        if inline_capture and len(sources) != 1:
            raise ConfigError(f"inline capture runs one stream; got {len(sources)} sources")
        self.run_id = uuid.uuid4().hex[:8]
        self.plan = transport.EndpointPlan(mode, self.run_id)
        self.stream_ids = stream_ids or _unique_ids(sources)
        self.keys = transport.CurveKeys.generate() if mode == "tcp" else None
        self.specs = self._build_specs()
        self._stop_requested = threading.Event()

    def _build_specs(self) -> list[RunnerSpec]:
        curve = self.keys.as_dict() if self.keys else None
        ctl = self.plan.endpoint("control")
        stages = self.pipeline.stages
        specs = []
        hwm = self.pipeline.hwm
        if self.mode == "tcp" and hwm < TCP_MIN_HWM:
            # libzmq 4.3.5, CURVE over tcp, RCVHWM 1: a stage's PULL socket polls readable and
            # then blocks in recv for good (reproduced: 3 pass-through hops, 300 frames of
            # 480x640; ipc and inproc are fine at 1, tcp is fine at 2)
            log.warning("tcp edges need hwm >= %d (libzmq stalls at %d); using %d",
                        TCP_MIN_HWM, hwm, TCP_MIN_HWM)
            hwm = TCP_MIN_HWM
        first_in = self.plan.endpoint(f"in-{stages[0].name}")
        first_policy = self.policy or stages[0].policy or self.pipeline.policy
        for sid, src in zip(self.stream_ids, self.sources, strict=True):
            specs.append(RunnerSpec(
                name=f"capture-{sid}", key=None, output_endpoint=first_in,
                output_policy=first_policy, control_endpoint=ctl, hwm=hwm,
                curve=curve, source=src, stream_id=sid, pacing=self.pacing,
                source_options=self.source_options, max_frames=self.max_frames,
                tap_endpoint=self.plan.endpoint(f"tap-capture-{sid}") if self.taps else None))
        units = runner_units(stages)
        if self.inline_capture:
            # the capture runs the first unit's stages; the rest of the graph is unchanged
            cap, (_, first) = specs[0], units[0]
            nxt = units[1] if len(units) > 1 else None
            cap.chain = [{"name": d.name, "key": d.key, "config": d.config} for d in first]
            cap.input_policy = first_policy  # the edge the chain replaces: drop-late if latest
            cap.output_endpoint = self.plan.endpoint(f"in-{nxt[1][0].name}") if nxt else None
            cap.output_policy = (self.policy or nxt[1][0].policy or self.pipeline.policy) \
                if nxt else "block"
            units = units[1:]
        for i, (name, members) in enumerate(units):
            s = members[0]
            pol_in = self.policy or s.policy or self.pipeline.policy
            nxt = units[i + 1] if i + 1 < len(units) else None
            pol_out = (self.policy or nxt[1][0].policy or self.pipeline.policy) if nxt \
                else "block"
            chain = ([{"name": d.name, "key": d.key, "config": d.config} for d in members]
                     if len(members) > 1 or name != s.name else [])
            specs.append(RunnerSpec(
                name=name, key=s.key, config=s.config, chain=chain,
                input_endpoint=self.plan.endpoint(f"in-{s.name}"), input_policy=pol_in,
                output_endpoint=self.plan.endpoint(f"in-{nxt[1][0].name}") if nxt else None,
                output_policy=pol_out, control_endpoint=ctl, expected_eos=len(self.sources),
                hwm=hwm, curve=curve,
                tap_endpoint=self.plan.endpoint(f"tap-{name}") if self.taps and nxt else None))
        if self.max_in_flight and specs[-1].key is not None:
            # the runner that ends the pipeline acknowledges each finished frame to its
            # capture (an inline capture that runs the whole chain needs no credits)
            for cap in specs[:len(self.sources)]:
                cap.max_in_flight = self.max_in_flight
                cap.credit_endpoint = self.plan.endpoint(f"credit-{cap.stream_id}")
                specs[-1].credit_endpoints[cap.stream_id] = cap.credit_endpoint
        return specs

    def tap_endpoints(self) -> dict[str, str]:
        return {s.name: s.tap_endpoint for s in self.specs if s.tap_endpoint}

    def stop(self) -> None:
        """Ask the run to stop (thread-safe): captures end their streams, EOS flushes through."""
        self._stop_requested.set()

    def run(self) -> RunResult:
        t0 = time.monotonic()
        ctx = zmq.Context()
        auth = transport.start_authenticator(ctx, self.keys)
        ctl = transport.configure(ctx.socket(zmq.ROUTER), sndhwm=transport.CONTROL_HWM,
                                  rcvhwm=transport.CONTROL_HWM)
        ctl.setsockopt(zmq.ROUTER_MANDATORY, 1)
        transport.secure_server(ctl, self.keys)
        transport.bind(ctl, self.specs[0].control_endpoint)
        workers = {s.name: _Worker(s, self.mode, ctx) for s in self.specs}
        self.workers = workers  # for observers (tests, live status); read-only outside run()
        sink = self.specs[-1].name
        captures = [s.name for s in self.specs if s.key is None]
        events: list[str] = []
        error: str | None = None
        started = False
        stopping_since: float | None = None
        sink_done_at: float | None = None
        try:
            while True:
                now = time.monotonic()
                if ctl.poll(100, zmq.POLLIN):
                    ident, raw = ctl.recv_multipart()
                    name = ident.decode()
                    msg = _ctl_dec.decode(raw)
                    w = workers.get(name)
                    if w is None:
                        continue
                    w.last_hb = time.monotonic()
                    t = msg.get("t")
                    if t == "ready":
                        w.ready = True
                        w.info = {k: v for k, v in msg.items() if k != "t"}
                        if started and w.spec.key is not None:
                            events.append(f"{name}: restarted and ready")
                    elif t == "hb" and name == sink and self.on_progress:
                        self.on_progress(msg.get("processed", 0))
                    elif t == "done":
                        w.stats = msg.get("stats", {})
                        # a non-zero exit is handled below (restart or fail), not as "done"
                        w.done = msg.get("code", 0) == 0
                        if w.spec.key is None and msg.get("error"):
                            events.append(f"{name}: {msg['error']}")
                            error = error or msg["error"]
                    elif t == "fatal":
                        text = msg.get("message", "")
                        events.append(f"{name}: {text}")
                        if not (started and msg.get("restartable")):
                            error = error or text
                            stopping_since = stopping_since or time.monotonic()
                            self._broadcast(ctl, workers, "stop")
                if not started and all(w.ready for w in workers.values()):
                    started = True
                    if self.on_ready:
                        self.on_ready({n: w.info for n, w in workers.items()})
                    for c in captures:
                        self._tell(ctl, c, "start")
                if not started and time.monotonic() - t0 > self.ready_timeout_s and not error:
                    late = [n for n, w in workers.items() if not w.ready]
                    error = f"stages not ready after {self.ready_timeout_s:.0f} s: {late}"
                    stopping_since = time.monotonic()
                    self._broadcast(ctl, workers, "stop")
                if self._stop_requested.is_set() and stopping_since is None:
                    stopping_since = time.monotonic()
                    for c in captures:
                        self._tell(ctl, c, "stop")
                if all(w.done for w in workers.values()):
                    break
                if workers[sink].done:
                    # the sink has every frame; the other stages' `done` (with their stats) can
                    # arrive just after it on the control socket: give them a moment
                    sink_done_at = sink_done_at or time.monotonic()
                    if time.monotonic() - sink_done_at > DONE_GRACE_S:
                        break
                # supervision: dead or hung stages
                for name, w in workers.items():
                    if w.done:
                        continue
                    code = w.exitcode()
                    hung = started and w.ready and now - w.last_hb > self.watchdog_s
                    if code is None and not hung:
                        continue
                    if code == 0 and not hung:
                        w.done = True  # finished its streams; its `done` may still be queued
                        continue
                    if hung:
                        events.append(f"{name}: no heartbeat for {self.watchdog_s:.1f} s (hung)")
                        if self.mode == "threads":
                            error = error or f"stage {name!r} hung (threads cannot be killed)"
                            stopping_since = stopping_since or time.monotonic()
                            self._broadcast(ctl, workers, "stop")
                            w.done = True
                            continue
                        w.kill()
                        w.join(1.0)
                        code = w.exitcode()
                    if w.spec.key is None or error or stopping_since is not None:
                        if not w.done and code not in (None, 0):
                            events.append(f"{name}: exited with code {code}")
                            error = error or f"{name} exited with code {code}"
                            stopping_since = stopping_since or time.monotonic()
                            self._broadcast(ctl, workers, "stop")
                        w.done = True
                        continue
                    if w.restarts >= self.max_restarts:
                        error = error or f"stage {name!r} died {w.restarts + 1} times; giving up"
                        events.append(error)
                        stopping_since = time.monotonic()
                        self._broadcast(ctl, workers, "stop")
                        w.done = True
                        continue
                    events.append(f"{name}: exited with code {code}; restarting "
                                  f"({w.restarts + 1}/{self.max_restarts})")
                    log.warning(events[-1])
                    w.restart()
                if stopping_since is not None and time.monotonic() - stopping_since > 1.5:
                    break
        finally:
            self._broadcast(ctl, workers, "stop")
            deadline = time.monotonic() + 1.5
            for w in workers.values():
                w.join(max(0.0, deadline - time.monotonic()))
            _collect_late_stats(ctl, workers)
            for w in workers.values():
                if w.alive():
                    w.kill()
                    events.append(f"{w.spec.name}: killed at shutdown")
            ctl.close(linger=0)
            if auth is not None:
                auth.stop()
            ctx.term() if self.mode != "threads" else _term_soon(ctx)
            self.plan.cleanup()
        return RunResult(
            ok=error is None,
            stages={n: w.stats for n, w in workers.items() if w.spec.key is not None},
            captures={n: {**w.info, **w.stats} for n, w in workers.items() if w.spec.key is None},
            restarts={n: w.restarts for n, w in workers.items() if w.restarts},
            events=events, error=error, elapsed_s=time.monotonic() - t0)

    def _tell(self, ctl: zmq.Socket, name: str, kind: str) -> None:
        try:
            ctl.send_multipart([name.encode(), _ctl_enc.encode({"t": kind})], flags=zmq.NOBLOCK)
        except (zmq.Again, zmq.ZMQError):
            pass  # peer gone or not connected yet: shutdown is bounded by joins anyway

    def _broadcast(self, ctl: zmq.Socket, workers: dict[str, _Worker], kind: str) -> None:
        for name in workers:
            self._tell(ctl, name, kind)


def _collect_late_stats(ctl: zmq.Socket, workers: dict[str, _Worker]) -> None:
    """Read `done` messages still queued on the control socket, so no stage's stats are lost."""
    while ctl.poll(0, zmq.POLLIN):
        ident, raw = ctl.recv_multipart()
        w = workers.get(ident.decode())
        msg = _ctl_dec.decode(raw)
        if w is not None and msg.get("t") == "done" and not w.stats:
            w.stats = msg.get("stats", {})


def _term_soon(ctx: zmq.Context) -> None:
    """Terminate a shared context without blocking on sockets of threads that are gone."""
    threading.Thread(target=ctx.term, daemon=True).start()


def _unique_ids(sources: list[str]) -> list[str]:
    from sonoflow.stream.sources.base import Source

    ids: list[str] = []
    for s in sources:
        src = Source()
        src.spec = s
        base = src.stem or "stream"
        sid, k = base, 1
        while sid in ids:
            k += 1
            sid = f"{base}-{k}"
        ids.append(sid)
    return ids


def run_pipeline(pipeline: Pipeline, sources: list[str], **kwargs) -> RunResult:
    """Convenience: build a :class:`Supervisor` and run it. Raises StageError on failure."""
    res = Supervisor(pipeline, sources, **kwargs).run()
    if not res.ok:
        raise StageError(res.error or "pipeline failed")
    return res
