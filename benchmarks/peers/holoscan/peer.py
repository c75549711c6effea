"""The Holoscan peer: SonoFlow's stage chain as NVIDIA Holoscan Python operators.

Run by ``sonoflow bench`` (engines ``holoscan-greedy`` and ``holoscan-event``) through
``run.sh`` in this folder's own virtual environment (``setup.sh``), never imported by SonoFlow::

    bash benchmarks/peers/holoscan/run.sh JOB.json

JOB.json (written by the bench tool): ``source`` (spec), ``frames``, ``pacing`` (``fast`` |
``realtime``), ``scheduler`` (``greedy`` | ``event``), ``stages`` (``[{name, key, config}]``, the
sink left out) and ``out`` (the ``frames.jsonl`` to write; ``summary.json`` goes beside it).

The graph is ``capture -> <stage> -> ... -> sink``, one operator per stage, each calling the
very same :class:`~sonoflow.stream.stage.Stage` object's ``process`` that SonoFlow's runner
calls, with the same stamps. Packets travel between operators as Python objects (Holoscan's
in-process zero-copy path; its default double-buffer queues of depth 1 with backpressure). The
capture operator builds the same packet as SonoFlow's capture runner; realtime pacing uses a
``PeriodicCondition`` at the source's frame period. The sink records ``frame_latency_ms``
(capture to arrival at the sink) exactly as SonoFlow's sink does.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path

from holoscan.conditions import CountCondition, PeriodicCondition
from holoscan.core import Application, Operator, OperatorSpec
from holoscan.schedulers import EventBasedScheduler, GreedyScheduler

from sonoflow.stream import messages as m
from sonoflow.stream import stage as registry
from sonoflow.stream.bench.engines import capture_packet, chain
from sonoflow.stream.sinks.outputs import frame_record
from sonoflow.stream.sources.registry import open_source
from sonoflow.stream.timing import frame_latency_ms


class CaptureOp(Operator):
    """Reads the next source frame and emits SonoFlow's capture packet."""

    def __init__(self, fragment, *args, source=None, spec="", **kwargs):
        self.source = source
        self.spec_str = spec
        self.frames = iter(source.frames())
        self.seq = -1
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.output("out")

    def compute(self, op_input, op_output, context):
        t_in = m.now_ns()
        sf = next(self.frames)
        self.seq += 1
        op_output.emit(capture_packet(sf, self.seq, self.spec_str, self.source.calibration,
                                      t_in), "out")


class StageOp(Operator):
    """Calls one SonoFlow stage's ``process`` (through the same chain helper as the plain loop,
    so stamps and forwarding rules match the runner's)."""

    def __init__(self, fragment, *args, stage_name="", stage=None, **kwargs):
        self.chain = [(stage_name, stage)]
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("in")
        spec.output("out")

    def compute(self, op_input, op_output, context):
        packet = op_input.receive("in")
        op_output.emit(chain(self.chain, packet), "out")


class SinkOp(Operator):
    """Times each frame's arrival (capture -> here) like SonoFlow's sink."""

    def __init__(self, fragment, *args, records=None, ends=None, **kwargs):
        self.records = records
        self.ends = ends
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("in")

    def compute(self, op_input, op_output, context):
        packet = op_input.receive("in")
        t_end = m.now_ns()
        h = packet.header
        lat = frame_latency_ms(h, t_end) if "image" in packet.arrays else None
        rec = frame_record(h, lat)
        self.records.append({"status": rec["status"], "latency_ms": rec["latency_ms"]})
        self.ends.append(t_end)


class ChainApp(Application):
    def __init__(self, job, source, stages, records, ends):
        super().__init__()
        self.job, self.src, self.stages = job, source, stages
        self.records, self.ends = records, ends

    def compose(self):
        conds = [CountCondition(self, self.job["frames"], name="frames")]
        if self.job["pacing"] == "realtime":
            conds.append(PeriodicCondition(self, recess_period=dt.timedelta(
                seconds=1.0 / self.src.fps), name="pacing"))
        prev = CaptureOp(self, *conds, source=self.src, spec=self.job["source"], name="capture")
        for name, st in self.stages:
            op = StageOp(self, stage_name=name, stage=st, name=name)
            self.add_flow(prev, op)
            prev = op
        self.add_flow(prev, SinkOp(self, records=self.records, ends=self.ends, name="sink"))


def main(job_path: str) -> int:
    import holoscan

    job = json.loads(Path(job_path).read_text())
    stages = [(s["name"], registry.create(s["key"], s["config"])) for s in job["stages"]]
    for _, st in stages:
        st.open()
    source = open_source(job["source"])
    records, ends = [], []
    app = ChainApp(job, source, stages, records, ends)
    if job["scheduler"] == "greedy":
        app.scheduler(GreedyScheduler(app, name="greedy"))
    elif job["scheduler"] == "event":
        app.scheduler(EventBasedScheduler(app, name="event", worker_thread_number=2))
    else:
        print(f"peer.py: scheduler {job['scheduler']!r}; expected greedy or event",
              file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        app.run()
    finally:
        for _, st in stages:
            st.close()
        source.close()
    out = Path(job["out"])
    with out.open("w") as f:
        for r in records:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    span_s = (ends[-1] - ends[0]) / 1e9 if len(ends) > 1 else 0.0
    (out.parent / "summary.json").write_text(json.dumps({
        "throughput_fps": (len(ends) - 1) / span_s if span_s > 0 else None,
        "frames": len(records), "scheduler": job["scheduler"],
        "holoscan_version": holoscan.__version__, "elapsed_s": time.monotonic() - t0}))
    if len(records) != job["frames"]:
        print(f"peer.py: {len(records)} of {job['frames']} frames reached the sink",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: run.sh JOB.json", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
