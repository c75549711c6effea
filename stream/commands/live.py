"""`sonoflow live SOURCE [--view none|window|web] [--record DIR]`: latest-frame live run.

Every edge uses the ``latest`` policy: a slow stage never builds a backlog, and every frame it
skips is counted as dropped. With ``--view web`` the first line printed is the viewer's URL with
its token. Ctrl-C ends the stream cleanly (EOS flushes, outputs are finalised).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="camera:N, /dev/videoN, sim:..., zmq:..., or a file")
    p.add_argument("--view", choices=["none", "window", "web"], default="none")
    p.add_argument("--host", default="127.0.0.1", help="web viewer bind address")
    p.add_argument("--port", type=int, default=0, help="web viewer port (0 = any free port)")
    p.add_argument("--record", type=Path, default=None,
                   help="write the overlay video and the replay outputs here")
    p.add_argument("--pipeline", default="analyse")
    p.add_argument("--backend", choices=["ort-cpu", "ort-cuda", "tensorrt", "torch"])
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"])
    p.add_argument("--mode", choices=["threads", "processes", "tcp"], default="threads")
    p.add_argument("--fast", action="store_true",
                   help="do not pace file sources at their frame rate")
    p.add_argument("--taps", action="store_true",
                   help="publish every edge on a tap endpoint for `sonoflow inspect`")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--inline-capture", action="store_true",
                   help="the capture runs the first runner's stages itself (no socket between "
                        "them; frames that come due while those stages are busy are dropped "
                        "and counted)")
    p.add_argument("--max-in-flight", type=int, default=None, metavar="N",
                   help="at most N frames between capture and sink (credit-based flow "
                        "control; default: the pipeline file's, 0 = none)")


def build_live_pipeline(args: argparse.Namespace):
    from sonoflow.stream.graph import StageDecl, load_pipeline
    from sonoflow.stream.replay import prepare

    pipe = load_pipeline(args.pipeline)
    stages = [s for s in pipe.stages if s.key != "sink"]
    if args.view != "none":
        stages.append(StageDecl("view", "view", {"kind": args.view, "host": args.host,
                                                 "port": args.port}))
    if args.record is not None:
        stages.append(StageDecl("sink", "sink", {}))
    if not stages or (args.view == "none" and args.record is None):
        stages.append(StageDecl("end", "passthrough", {}))
    pipe.stages = stages
    return prepare(pipe, args.record or Path("."), None, args.backend, args.precision)


def run(args: argparse.Namespace) -> int:
    from sonoflow.stream.graph import Supervisor

    pipe = build_live_pipeline(args)
    sup = Supervisor(pipe, [args.source], mode=args.mode, policy="latest",
                     pacing="fast" if args.fast else "realtime", taps=args.taps,
                     max_frames=args.max_frames, watchdog_s=30.0,
                     inline_capture=args.inline_capture, max_in_flight=args.max_in_flight)
    if args.taps:
        for name, ep in sup.tap_endpoints().items():
            print(f"tap {name}: {ep}", file=sys.stderr)
    previous = signal.signal(signal.SIGINT, lambda *_: sup.stop())
    signal.signal(signal.SIGTERM, lambda *_: sup.stop())
    try:
        res = sup.run()
    finally:
        signal.signal(signal.SIGINT, previous)
    # drops happen before a stage (superseded in its queue) or at a full send queue, which
    # can be the capture's; a fused runner reports what each of its stages processed
    drops = sum(st.get("drops", 0) for st in (*res.stages.values(), *res.captures.values()))
    processed = {}
    for n, st in res.stages.items():
        processed.update(st.get("per_stage") or {n: st.get("processed", 0)})
    for st in res.captures.values():  # an inline capture's own stages
        processed.update(st.get("per_stage") or {})
    print(f"live: {res.elapsed_s:.1f} s, frames processed per stage {processed}, "
          f"dropped by the latest policy {drops}", file=sys.stderr)
    for e in res.events:
        print(f"live: {e}", file=sys.stderr)
    if not res.ok:
        print(f"sonoflow live: error: {res.error}", file=sys.stderr)
        return 1
    return 0
