"""`sonoflow inspect ENDPOINT`: print the packets flowing on a pipeline edge.

Connects a SUB socket to a stage's tap endpoint (runs started with taps print them, e.g.
`sonoflow live ... --taps`) and prints one line per packet: kind, stream, seq, status and the
result fields present. Decoding uses the wire format only (no pipeline state).
"""

from __future__ import annotations

import argparse
import json
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("endpoint", help="tap endpoint, e.g. ipc:///tmp/sonoflow-xxxx/tap-quality")
    p.add_argument("--count", type=int, default=0, help="stop after N packets (0 = forever)")
    p.add_argument("--timeout", type=float, default=0.0, help="stop after S seconds idle")
    p.add_argument("--full", action="store_true", help="print the whole header as JSON")


def run(args: argparse.Namespace) -> int:
    import zmq

    from sonoflow.stream import messages as m
    from sonoflow.stream.errors import WireError

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 16)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(args.endpoint)
    n = 0
    last = time.monotonic()
    try:
        while args.count == 0 or n < args.count:
            if not sub.poll(200):
                if args.timeout and time.monotonic() - last > args.timeout:
                    break
                continue
            last = time.monotonic()
            frames = sub.recv_multipart(copy=False)
            try:
                p = m.decode(frames)
            except WireError as e:
                print(f"undecodable packet: {e}")
                continue
            n += 1
            d = m.header_to_builtins(p.header)
            if args.full:
                print(json.dumps(d))
                continue
            fields = [k for k in ("preprocess", "quality", "infer") if d.get(k)]
            arrays = ", ".join(f"{k}{list(v.shape)}" for k, v in p.arrays.items())
            print(f"{p.kind:6s} {d.get('stream_id')} seq={d.get('seq')} "
                  f"status={d.get('status', '-')} results={fields} arrays=[{arrays}]")
    finally:
        sub.close()
        ctx.term()
    return 0
