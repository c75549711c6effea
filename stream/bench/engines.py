"""One measured run of one case: the engines a scenario can compare.

* ``sonoflow`` - the pipeline under the :class:`~sonoflow.stream.graph.Supervisor` (threads over
  ``inproc://``, processes over ``ipc://``, or tcp over loopback with CURVE), the sink writing
  ``frames.jsonl`` / ``latency.json`` per stream;
* ``plain`` - the same stage objects (same registry keys, same config) called one after the
  other in a plain loop in this process: no sockets, no encode/decode. The floor the pipeline's
  overhead is measured against;
* ``holoscan-greedy`` / ``holoscan-event`` - the same stage functions as NVIDIA Holoscan Python
  operators, run by the peer script in its own virtual environment
  (``benchmarks/peers/holoscan``); never a SonoFlow dependency.

Every engine returns a :class:`RunOutput` with one record per captured frame and stream, in
capture order, each ``{"status", "latency_ms": {"e2e", "<stage>"...}}`` (the
``frames.jsonl`` shape), so one statistics path (:mod:`sonoflow.stream.bench.stats`) serves all.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sonoflow.stream.bench.procstat import ProcSampler
from sonoflow.stream.bench.scenario import Case, Scenario
from sonoflow.stream.errors import ConfigError, SonoflowError, StageError
from sonoflow.stream.graph import (
    Pipeline,
    StageDecl,
    Supervisor,
    fused,
    grouped,
    load_pipeline,
    runner_units,
)

log = logging.getLogger(__name__)

PEER_DIR_ENV = "SONOFLOW_HOLOSCAN_PEER_DIR"


@dataclass
class RunOutput:
    """What one run of one case produced.

    Attributes:
        streams: stream id -> frame records in capture order (``status``, ``latency_ms``).
        throughput_fps: frames reaching the end of the chain per second, all streams summed.
        edges_ms: stream id -> ``latency.json`` ``edges_ms`` (sonoflow engine only).
        processes: name -> CPU / memory summary (:class:`ProcSampler`).
        hops: transport hops in the chain (capture -> stage 1 -> ... -> sink).
        ok: False when the run failed (``error`` says why) or was skipped (``skipped``).
    """

    streams: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    throughput_fps: float | None = None
    edges_ms: dict[str, dict[str, Any]] = field(default_factory=dict)
    processes: dict[str, dict[str, float]] = field(default_factory=dict)
    hops: int = 0
    elapsed_s: float = 0.0
    ok: bool = True
    error: str | None = None
    skipped: str | None = None
    events: list[str] = field(default_factory=list)


def build_pipeline(scn: Scenario, case: Case) -> Pipeline:
    """The scenario's pipeline with the case's overrides; a sink is appended when missing.

    Raises:
        ConfigError: the pipeline cannot be loaded or an override names no stage.
    """
    if scn.pipeline:
        ref = scn.pipeline
        beside = Path(scn.path).parent / ref
        pipe = load_pipeline(str(beside) if ref.endswith(".toml") and beside.is_file() else ref)
    else:
        decls = [StageDecl(s.get("name", s["key"]), s["key"], dict(s.get("config", {})))
                 for s in scn.stages]
        pipe = Pipeline(scn.name, decls, "block", 8, scn.path)
    stages = pipe.stages if pipe.stages[-1].key == "sink" else [*pipe.stages,
                                                                 StageDecl("sink", "sink")]
    pipe = Pipeline(pipe.name, stages, pipe.policy, case.hwm or pipe.hwm, pipe.path,
                    case.max_in_flight or pipe.max_in_flight)
    pipe = pipe.with_overrides(case.overrides)
    if case.fuse:
        return fused(pipe)
    return grouped(pipe, dict(case.groups)) if case.groups else pipe


def run_case(scn: Scenario, case: Case, sources: list[str], work_dir: Path) -> RunOutput:
    """Run ``case`` once (sources already resolved: frames count, prerendered clips).

    Args:
        scn: the scenario (protocol, pipeline).
        case: the case to run.
        sources: one source spec per stream (``case.streams`` of them; the single-stream
            engines read the first).
        work_dir: an empty folder for this run's outputs.

    Raises:
        ConfigError: the case cannot be built (bad pipeline, override, engine settings).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    if len(sources) != case.streams:
        raise ConfigError(f"case {case.label!r}: {case.streams} stream(s) but {len(sources)} "
                          "source(s)")
    if case.engine == "sonoflow":
        return _run_sonoflow(scn, case, sources, work_dir)
    if case.engine == "plain":
        return _run_plain(scn, case, sources[0])
    return _run_holoscan(scn, case, sources[0], work_dir)


# ---- sonoflow -------------------------------------------------------------------------------


def _run_sonoflow(scn: Scenario, case: Case, sources: list[str], work_dir: Path) -> RunOutput:
    pipe = build_pipeline(scn, case)
    sink = pipe.stages[-1].name
    pipe = pipe.with_overrides({sink: {"out_dir": str(work_dir), "per_stream_dirs": True,
                                       "video": scn.video, "latency_skip_head": scn.skip}})
    sids = [f"s{i}" for i in range(case.streams)]
    sampler = ProcSampler()
    holder: dict[str, Supervisor] = {}

    def on_ready(_info: dict) -> None:
        sup = holder["sup"]
        procs = {"supervisor" if case.mode != "threads" else "pipeline (threads)": os.getpid()}
        for name, w in getattr(sup, "workers", {}).items():
            if w.pid is not None:
                procs[name] = w.pid
        sampler.watch(procs)

    sup = Supervisor(pipe, list(sources), mode=case.mode, pacing=case.pacing,
                     policy=case.policy or None, stream_ids=sids, max_frames=scn.frames,
                     on_ready=on_ready, inline_capture=case.inline)
    holder["sup"] = sup
    # a run that never ends (a lost end-of-stream, a stuck stage the watchdog cannot see) is
    # stopped and reported instead of hanging the benchmark
    limit_s = run_limit_s(scn, case)
    timer = threading.Timer(limit_s, sup.stop)
    timer.daemon = True
    timer.start()
    try:
        res = sup.run()
    finally:
        timer.cancel()
    sampler.stop()
    # socket hops after capture; an inline capture saves the first
    hops = len(runner_units(pipe.stages)) - (1 if case.inline else 0)
    out = RunOutput(hops=hops, elapsed_s=res.elapsed_s, ok=res.ok, error=res.error,
                    events=list(res.events), processes=sampler.summary())
    if res.elapsed_s >= limit_s:
        out.ok = False
        out.error = (f"run stopped after {limit_s:.0f} s (limit: 60 s + 0.1 s per frame and "
                     f"stream): the pipeline did not finish; events: {res.events[-3:]}")
    fps = []
    for sid in sids:
        d = work_dir / sid
        recs = []
        fj = d / "frames.jsonl"
        if fj.is_file():
            with fj.open() as f:
                recs = [json.loads(line) for line in f if line.strip()]
        out.streams[sid] = [{"status": r["status"], "latency_ms": r.get("latency_ms", {})}
                            for r in recs]
        lj = d / "latency.json"
        if lj.is_file():
            doc = json.loads(lj.read_text())
            out.edges_ms[sid] = doc.get("edges_ms", {})
            if doc.get("throughput_fps"):
                fps.append(float(doc["throughput_fps"]))
        elif out.ok:
            out.ok, out.error = False, f"{lj}: the sink wrote no latency.json"
    out.throughput_fps = sum(fps) if fps else None
    return out


def run_limit_s(scn: Scenario, case: Case) -> float:
    """Wall-clock limit of one pipeline run (s): 60 s + 0.1 s per frame and stream, and at
    least twice the paced duration."""
    paced = 2.0 * scn.frames / 30.0 if case.pacing == "realtime" else 0.0
    return max(60.0 + 0.1 * scn.frames * case.streams, paced + 60.0)


# ---- plain loop -----------------------------------------------------------------------------


def _run_plain(scn: Scenario, case: Case, source: str) -> RunOutput:
    """The same stages, same config, called in a loop: the floor for the pipeline's overhead."""
    from sonoflow.stream import messages as m
    from sonoflow.stream import stage as registry
    from sonoflow.stream.sinks.outputs import frame_record
    from sonoflow.stream.sources.registry import open_source
    from sonoflow.stream.timing import frame_latency_ms

    pipe = build_pipeline(scn, case)
    decls = [s for s in pipe.stages if s.key != "sink"]
    stages = [(d.name, registry.create(d.key, d.config)) for d in decls]
    sampler = ProcSampler()
    t0 = time.monotonic()
    records: list[dict[str, Any]] = []
    ends: list[int] = []
    opened = []
    src = None
    try:
        for _, st in stages:
            st.open()
            opened.append(st)
        src = open_source(source)
        cal = src.calibration
        sampler.watch({"plain loop": os.getpid()})
        t0_wall = pts0 = None
        it = iter(src.frames())
        seq = -1
        while seq + 1 < scn.frames:
            t_in = m.now_ns()
            try:
                sf = next(it)
            except StopIteration:
                break
            seq += 1
            if case.pacing == "realtime" and src.fps:
                pts_s = sf.pts * sf.time_base[0] / sf.time_base[1]
                if t0_wall is None:
                    t0_wall, pts0 = time.monotonic(), pts_s
                delay = t0_wall + (pts_s - pts0) - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                t_in = m.now_ns()
            packet = capture_packet(sf, seq, source, cal, t_in)
            frame = _chain(stages, packet, m)
            t_end = m.now_ns()
            lat = frame_latency_ms(frame.header, t_end) if "image" in frame.arrays else None
            rec = frame_record(frame.header, lat)
            records.append({"status": rec["status"], "latency_ms": rec["latency_ms"]})
            ends.append(t_end)
        eos = m.Packet(m.EosHeader(stream_id="s0", last_seq=seq, frames_total=seq + 1))
        for _, st in stages:
            st.flush(eos)
    finally:
        sampler.stop()
        for st in opened:
            st.close()
        if src is not None:
            src.close()
    span_s = (ends[-1] - ends[0]) / 1e9 if len(ends) > 1 else 0.0
    return RunOutput(streams={"s0": records}, hops=len(pipe.stages),
                     throughput_fps=(len(ends) - 1) / span_s if span_s > 0 else None,
                     processes=sampler.summary(), elapsed_s=time.monotonic() - t0)


def capture_packet(sf, seq: int, source: str, cal, t_in_ns: int, stream_id: str = "s0"):
    """The packet a capture runner would send for source frame ``sf`` (same header fields,
    ``capture`` stamp from ``t_in_ns`` to now). Used by the plain loop and the Holoscan peer.

    Args:
        sf: a :class:`~sonoflow.stream.sources.base.SourceFrame` with an image.
        seq: the frame's sequence number.
        source: the source spec.
        cal: the source's :class:`~sonoflow.stream.sources.base.Calibration`.
        t_in_ns: when reading the frame started (monotonic ns).
        stream_id: the stream's id.

    Returns:
        :class:`~sonoflow.stream.messages.Packet` with the ``image`` array.
    """
    from sonoflow.stream import messages as m

    img = sf.image
    h = m.FrameHeader(stream_id=stream_id, seq=seq, frame_index=sf.frame_index, pts=sf.pts,
                      time_base=tuple(sf.time_base), capture_ns=0,
                      pixel_format="rgb24" if img.ndim == 3 else "gray8",
                      pixel_spacing_mm=cal.mm_per_px, spacing_source=cal.source,
                      spacing_note=cal.note, source=source,
                      extra={"capture": sf.extra} if sf.extra else {})
    h.capture_ns = m.now_ns()
    h.stamps.append(m.Stamp("capture", t_in_ns, h.capture_ns))
    return m.Packet(h, {"image": img})


def chain(stages, packet):
    """Public form of :func:`_chain` (``stages``: ``[(name, Stage)]``)."""
    from sonoflow.stream import messages as m

    return _chain(stages, packet, m)


def _chain(stages, packet, m):
    """Pass one frame through the stages as the runner does (stamps, forwarding rules).

    Returns:
        The frame packet after the last stage (other packets a stage emits - lesion updates -
        go on down the chain like in the pipeline and are then dropped).

    Raises:
        StageError: a stage swallowed the frame (returned no packet for it).
    """
    packets = [packet]
    seq, sid = packet.header.seq, packet.header.stream_id
    for name, st in stages:
        nxt = []
        accepts = getattr(st, "accepts", ("frame",))
        for p in packets:
            h = p.header
            if isinstance(h, m.FrameHeader):
                if h.status == "failed" or "image" not in p.arrays:
                    nxt.append(p)
                    continue
                t_in = m.now_ns()
                out = st.process(p)
                t_out = m.now_ns()
                outs = [] if out is None else [out] if isinstance(out, m.Packet) else list(out)
                for q in outs:
                    if isinstance(q.header, m.FrameHeader) and q.header.seq == seq \
                            and q.header.stream_id == sid:
                        q.header.stamps.append(m.Stamp(name, t_in, t_out))
                nxt.extend(outs)
            elif h.__struct_config__.tag in accepts:
                out = st.process(p)
                nxt.extend([] if out is None else [out] if isinstance(out, m.Packet) else out)
            else:
                nxt.append(p)
        packets = nxt
    for p in packets:
        if isinstance(p.header, m.FrameHeader) and p.header.seq == seq:
            return p
    raise StageError(f"plain loop: frame {seq} did not come out of the chain "
                     f"{[n for n, _ in stages]}; a stage swallowed it")


# ---- Holoscan peer --------------------------------------------------------------------------


def peer_dir() -> Path:
    """The Holoscan peer's folder (``benchmarks/peers/holoscan`` of this checkout, or the
    ``SONOFLOW_HOLOSCAN_PEER_DIR`` environment variable)."""
    env = os.environ.get(PEER_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "benchmarks" / "peers" / "holoscan"


def _run_holoscan(scn: Scenario, case: Case, source: str, work_dir: Path) -> RunOutput:
    d = peer_dir()
    py = d / ".venv" / "bin" / "python"
    script = d / "peer.py"
    if not script.is_file() or not py.is_file():
        return RunOutput(ok=False, skipped=f"the Holoscan peer is not installed ({py} missing); "
                                           f"run `bash {d / 'setup.sh'}` once")
    pipe = build_pipeline(scn, case)
    chain = [{"name": s.name, "key": s.key, "config": s.config} for s in pipe.stages
             if s.key != "sink"]
    job = {"source": source, "frames": scn.frames, "pacing": case.pacing,
           "scheduler": case.engine.split("-", 1)[1], "stages": chain,
           "out": str(work_dir / "frames.jsonl")}
    (work_dir / "job.json").write_text(json.dumps(job))
    env = dict(os.environ)
    sampler = ProcSampler()
    t0 = time.monotonic()
    # run.sh sets LD_LIBRARY_PATH to the CUDA runtime wheel's lib folder, then runs peer.py
    proc = subprocess.Popen(["bash", str(d / "run.sh"), str(work_dir / "job.json")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler.watch({f"holoscan ({case.engine.split('-', 1)[1]})": proc.pid})  # run.sh execs
    text, _ = proc.communicate()
    sampler.stop()
    out = RunOutput(hops=len(pipe.stages), processes=sampler.summary(),
                    elapsed_s=time.monotonic() - t0)
    if proc.returncode != 0:
        out.ok = False
        out.error = f"Holoscan peer exited with {proc.returncode}: {text.strip()[-800:]}"
        return out
    summary_path = work_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
        with (work_dir / "frames.jsonl").open() as f:
            out.streams["s0"] = [json.loads(line) for line in f if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        raise SonoflowError(f"{work_dir}: the Holoscan peer's outputs are unreadable ({e}); "
                            f"its log: {text.strip()[-800:]}") from e
    out.throughput_fps = summary.get("throughput_fps")
    out.events = [f"holoscan {summary.get('holoscan_version', '?')}, scheduler "
                  f"{summary.get('scheduler')}"]
    return out
