"""`sonoflow replay SOURCE... --out DIR`: lossless replay, one output folder per source."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="video file, DICOM, .mha/.mhd, image folder, npz, sim:..., zmq:...")
    p.add_argument("--out", required=True, type=Path, help="output root; one folder per source")
    p.add_argument("--pipeline", default="analyse",
                   help="shipped pipeline name (analyse, spine, relay) or a .toml file")
    p.add_argument("--backend", choices=["ort-cpu", "ort-cuda", "tensorrt", "torch"])
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"])
    p.add_argument("--tta", choices=["none", "hflip"],
                   help="frame-network test-time augmentation (hflip: two passes per frame)")
    p.add_argument("--realtime", action="store_true", help="pace at the source frame rate")
    p.add_argument("--workers", type=int, default=1, help="sources replayed in parallel")
    p.add_argument("--mode", choices=["threads", "processes", "tcp"], default="threads",
                   help="run stages as threads (inproc), processes (ipc) or over tcp+CURVE")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--max-in-flight", type=int, default=None, metavar="N",
                   help="at most N frames between capture and sink per source (credit-based "
                        "flow control: bounds each frame's latency when replaying as fast as "
                        "possible; default: the pipeline file's, 0 = none)")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from sonoflow.stream.replay import replay_many

    results = replay_many(args.sources, args.out, workers=args.workers, pipeline=args.pipeline,
                          mode=args.mode, pacing="realtime" if args.realtime else "fast",
                          backend=args.backend, precision=args.precision,
                          max_frames=args.max_frames, progress=not args.no_progress,
                          max_in_flight=args.max_in_flight, tta=args.tta)
    bad = 0
    for r in results:
        c = r.counts
        line = (f"{r.source}: {c.get('total', 0)} frames (analysed {c.get('analysed', 0)}, "
                f"rejected {c.get('rejected', 0)}, dropped {c.get('dropped', 0)}, "
                f"failed {c.get('failed', 0)}) -> {r.out_dir}")
        print(line)
        if not r.ok:
            bad += 1
            print(f"sonoflow replay: error: {r.error}", file=sys.stderr)
    return 1 if bad else 0
