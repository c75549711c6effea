#!/usr/bin/env python3
"""A minimal external frame producer for ``sonoflow replay zmq:<endpoint>``.

It uses only pyzmq, msgpack and numpy - no SonoFlow import - to show that the wire format is
the contract: a scanner bridge or frame grabber written in any language can feed SonoFlow the
same way. It binds a PUSH socket, sends ``--frames`` synthetic speckle frames, then an ``eos``
packet, waits for the receiver to hang up, and exits.

Why wait: a process that exits right after its last send can lose what it sent. LINGER is not
enough: when the receiver's queue is full, libzmq stops reading the connection, and when the
sender's process is gone, the bytes still on that connection go with it. (Reproduced: 40 fast
frames into a receiver with a 16-message queue; 19 arrived.) The receiver closes its socket
after the ``eos``, and a socket monitor tells the producer when that happens.

One message = multipart ``[topic, header, image]``:

* ``topic``  = ``b"frame/<stream_id>"`` (``b"eos/<stream_id>"`` for the end).
* ``header`` = a msgpack map: ``kind`` ("frame"), ``schema`` ("sonoflow.frame/1"), ``stream_id``,
  ``seq`` (+1 per packet), ``frame_index``, ``pts`` + ``time_base`` ``[num, den]`` (seconds per
  tick), ``capture_ns`` (monotonic ns), ``pixel_format`` ("gray8" | "rgb24"),
  optional ``pixel_spacing_mm`` ``[x, y]`` + ``spacing_source``, and ``buffers``: one map
  ``{"name": "image", "index": 0, "dtype": "uint8", "shape": [H, W] or [H, W, 3],
  "layout": "HW" | "HWC"}``.
* ``image``  = the raw C-contiguous pixel bytes.

The end: header ``{"kind": "eos", "schema": "sonoflow.eos/1", "stream_id", "last_seq",
"frames_total"}`` with no buffer.

Each frame's top-left pixel holds ``frame_index % 256`` so a receiver can check order.

Usage::

    python tools/zmq_producer_example.py --endpoint tcp://127.0.0.1:5555 --frames 90
    sonoflow replay zmq:tcp://127.0.0.1:5555 --out out/
"""

from __future__ import annotations

import argparse
import sys
import time

import msgpack
import numpy as np
import zmq


def make_frame(rng: np.random.Generator, index: int, height: int, width: int,
               rgb: bool) -> np.ndarray:
    """A synthetic B-mode-like frame: Rayleigh speckle that drifts down, darker with depth.

    Returns:
        ``uint8`` ``(H, W)`` or ``(H, W, 3)``; pixel ``[0, 0]`` = ``index % 256``.
    """
    speckle = rng.rayleigh(40.0, size=(height, width))
    depth = np.linspace(1.0, 0.35, height)[:, None]
    img = np.clip(np.roll(speckle, index, axis=0) * depth, 0, 255).astype(np.uint8)
    img[0, 0] = index % 256
    if rgb:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img)


def frame_message(stream_id: str, seq: int, index: int, fps: float, img: np.ndarray,
                  spacing_mm: tuple[float, float] | None) -> list[bytes]:
    """The multipart message for one frame (see the module docstring)."""
    header = {
        "kind": "frame", "schema": "sonoflow.frame/1", "stream_id": stream_id, "seq": seq,
        "frame_index": index, "pts": index, "time_base": [1, int(round(fps))],
        "capture_ns": time.monotonic_ns(),
        "pixel_format": "rgb24" if img.ndim == 3 else "gray8",
        "buffers": [{"name": "image", "index": 0, "dtype": "uint8", "shape": list(img.shape),
                     "layout": "HWC" if img.ndim == 3 else "HW"}],
    }
    if spacing_mm is not None:
        header["pixel_spacing_mm"] = list(spacing_mm)
        header["spacing_source"] = "user"
    return [f"frame/{stream_id}".encode(), msgpack.packb(header), img.tobytes()]


def eos_message(stream_id: str, last_seq: int, total: int) -> list[bytes]:
    """The end-of-stream message."""
    header = {"kind": "eos", "schema": "sonoflow.eos/1", "stream_id": stream_id,
              "last_seq": last_seq, "frames_total": total}
    return [f"eos/{stream_id}".encode(), msgpack.packb(header)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5555")
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--rgb", action="store_true", help="send HxWx3 RGB instead of grey")
    parser.add_argument("--fast", action="store_true", help="do not pace at --fps")
    parser.add_argument("--spacing-mm", type=float, nargs=2, default=None, metavar=("X", "Y"))
    parser.add_argument("--stream-id", default="producer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=30.0,
                        help="give up when no receiver takes a frame for this long")
    args = parser.parse_args(argv)

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 16)
    sock.setsockopt(zmq.LINGER, int(args.timeout_s * 1000))  # let the eos reach the receiver
    sock.setsockopt(zmq.SNDTIMEO, int(args.timeout_s * 1000))
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    sock.bind(args.endpoint)
    rng = np.random.default_rng(args.seed)
    t0 = time.monotonic()
    try:
        for i in range(args.frames):
            if not args.fast:
                delay = t0 + i / args.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            img = make_frame(rng, i, args.height, args.width, args.rgb)
            sock.send_multipart(frame_message(args.stream_id, i, i, args.fps, img,
                                              args.spacing_mm))
        sock.send_multipart(eos_message(args.stream_id, args.frames - 1, args.frames))
        # keep the connection until the receiver hangs up (it does after the eos)
        if not monitor.poll(int(args.timeout_s * 1000)):
            print(f"zmq_producer_example: the receiver did not hang up within "
                  f"{args.timeout_s:g} s of the eos on {args.endpoint}", file=sys.stderr)
    except zmq.Again:
        print(f"zmq_producer_example: no receiver took a frame for {args.timeout_s:g} s on "
              f"{args.endpoint}", file=sys.stderr)
        return 1
    finally:
        sock.disable_monitor()
        monitor.close()
        sock.close()
        ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
