"""Capture-source reading speed on the real recordings: can replay keep up?

For every file in ``../shared/data/real/{cine,dicom,plus}`` the source is opened through
``open_source`` and read to the end once to warm up, then ``--repeats`` times, interleaved
with the side-by-side variants below so that load from other work hits them alike; the first frame of each pass (decoder
start-up) is timed apart as ``first_frame_ms``. Reported per file: frames/s over the remaining
frames (median of the passes), per-frame p50/p99 ms, and the margin over the file's own frame
rate (``x_realtime``: >= 1 means a realtime replay is not limited by decoding).

Side by side in the same process, to show what our layer costs and what the options buy:

* video: the bare PyAV decode loop (``decode`` only, no pixel conversion) against
  ``VideoSource`` (decode + one swscale conversion to RGB + checks), and ``VideoSource`` with
  one decoder thread against FFmpeg's automatic threading;
* DICOM cine: ``pydicom.pixels.iter_pixels`` (sequential, the whole file in one iterator)
  against ``DicomSource``'s frame-by-frame ``pixel_array(index=i)`` (per-frame error isolation).

Writes JSON (``--out``) and a markdown section (``--markdown``).

    nice .venv/bin/python benchmarks/bench_sources.py --repeats 3 \
        --out out/bench_sources.json --markdown benchmarks/sections/sources.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

MACHINE = "2-core AMD Zen 3 VM, shared with other work at the time"
DATE = "2026-11-23"
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
COMMAND = ("nice .venv/bin/python benchmarks/bench_sources.py --repeats {repeats} "
           "--out out/bench_sources.json --markdown benchmarks/sections/sources.md")


def time_iter(make_iter) -> tuple[float, list[float], int]:
    """Drain one iterator; ``(first_frame_ms, later per-frame ms, n)``."""
    it = make_iter()
    t = time.perf_counter()
    first = None
    per = []
    n = 0
    for _ in it:
        now = time.perf_counter()
        if first is None:
            first = (now - t) * 1000
        else:
            per.append((now - t) * 1000)
        t = now
        n += 1
    return first or 0.0, per, n


def summarise(passes: list[tuple[float, list[float], int]], nominal_fps: float | None) -> dict:
    """Median frames/s over the passes, pooled per-frame percentiles."""
    fps = [len(p) / (sum(p) / 1000) for _, p, _ in passes if p and sum(p) > 0]
    pooled = [x for _, p, _ in passes for x in p]
    out = {
        "frames": passes[0][2],
        "first_frame_ms": round(statistics.median(f for f, _, _ in passes), 2),
        "fps": round(statistics.median(fps), 1) if fps else None,
        "p50_ms": round(float(np.percentile(pooled, 50)), 3) if pooled else None,
        "p99_ms": round(float(np.percentile(pooled, 99)), 3) if pooled else None,
        "nominal_fps": round(nominal_fps, 2) if nominal_fps else None,
    }
    out["x_realtime"] = (round(out["fps"] / nominal_fps, 1)
                         if out["fps"] and nominal_fps else None)
    return out


def source_pass(path: Path, info: dict, **options):
    """One timed pass through ``open_source``; fills ``info`` with the source's facts."""
    from sonoflow.stream.sources.registry import open_source

    src = open_source(str(path), **options)
    try:
        result = time_iter(src.frames)
        info.update({"pixel_format": getattr(src, "pixel_format", ""), "fps": src.fps,
                     "kind": type(src).__name__})
        if hasattr(src, "decoder"):
            info["decoder"] = src.decoder
    finally:
        src.close()
    return result


def bare_pyav_pass(path: Path):
    """Decode only (no pixel conversion), FFmpeg's automatic threading."""
    import av

    def run():
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            yield from c.decode(s)

    return time_iter(run)


def bare_iter_pixels_pass(path: Path):
    """pydicom's sequential frame iterator."""
    from pydicom.pixels import iter_pixels

    return time_iter(lambda: iter_pixels(path))


def variants(folder: str, path: Path, n_frames: int) -> dict:
    """The side-by-side variants for one file: name -> zero-argument pass function."""
    info: dict = {}
    out = {"ours": lambda: source_pass(path, info)}
    if folder == "cine":
        out["bare_pyav"] = lambda: bare_pyav_pass(path)
        out["ours_1_thread"] = lambda: source_pass(path, {}, threads=1)
    if folder == "dicom" and n_frames > 1:
        out["bare_iter_pixels"] = lambda: bare_iter_pixels_pass(path)
        out["ours_pydicom"] = lambda: source_pass(path, {}, decoder="pydicom")
    out["_info"] = info
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="out/bench_sources.json")
    ap.add_argument("--markdown", default="benchmarks/sections/sources.md")
    ap.add_argument("--real", default=str(REAL))
    args = ap.parse_args(argv)
    real = Path(args.real)
    if not real.is_dir():
        print(f"bench_sources: real data folder {real} is absent; nothing to measure",
              file=sys.stderr)
        return 2

    load_start = os.getloadavg()[0]
    rows = []
    for folder, pattern in (("cine", "*"), ("dicom", "*.dcm"), ("plus", "*.igs.mh[ad]")):
        for path in sorted((real / folder).glob(pattern)):
            if path.suffix in (".json", ".raw"):
                continue
            info: dict = {}
            probe = source_pass(path, info)  # warm-up pass: file cache, decoder libraries
            todo = variants(folder, path, probe[2])
            passes: dict[str, list] = {k: [] for k in todo if k != "_info"}
            for _ in range(args.repeats):  # variants interleaved, so load drift hits all alike
                for name in passes:
                    passes[name].append(todo[name]())
            row = {"folder": folder, "file": path.name, **todo["_info"]}
            for name, runs in passes.items():
                row[name] = summarise(runs, row["fps"])
            rows.append(row)
            print(f"{folder}/{path.name}: {row['ours']['fps']} frames/s "
                  f"({row['ours']['x_realtime']}x realtime)", file=sys.stderr)

    result = {"machine": MACHINE, "date": DATE, "python": platform.python_version(),
              "repeats": args.repeats, "rows": rows,
              "load_avg_1min": [round(load_start, 1), round(os.getloadavg()[0], 1)]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    md = render_markdown(result)
    Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
    Path(args.markdown).write_text(md)
    print(md)
    return 0


def _f(v, suffix=""):
    return "-" if v is None else f"{v}{suffix}"


def render_markdown(result: dict) -> str:
    rows = result["rows"]
    lines = [
        "## Capture sources: reading speed on the real recordings",
        "",
        f"Machine: {result['machine']}; date {result['date']}; Python {result['python']}. "
        f"Command: `{COMMAND.format(repeats=result['repeats'])}`. After one warm-up pass, each "
        f"file is read to the end {result['repeats']} times through `open_source`, the "
        "side-by-side variants interleaved pass by pass; frames/s is the median over the "
        "passes excluding each pass's first frame (start-up, column *first ms*); p50/p99 are "
        "per-frame times pooled over the passes; *x realtime* = frames/s over the file's own "
        "frame rate (rates of single frames and untimed files are the assumed 30 fps). Other "
        "helpers' jobs ran on the same 2 cores (1-minute load average "
        f"{result['load_avg_1min'][0]} at the start, {result['load_avg_1min'][1]} at the end), "
        "so absolute figures are noisy and small ratios (within about 2x either way) are not "
        "significant; the side-by-side ratios below were measured in the same run.",
        "",
        "| file | source | format | frames | frames/s | p50 ms | p99 ms | first ms | x realtime |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        o = r["ours"]
        lines.append(f"| {r['folder']}/{r['file']} | {r['kind']} | {r['pixel_format']} | "
                     f"{o['frames']} | {_f(o['fps'])} | {_f(o['p50_ms'])} | {_f(o['p99_ms'])} | "
                     f"{_f(o['first_frame_ms'])} | {_f(o['x_realtime'])} |")
    vids = [r for r in rows if "bare_pyav" in r]
    if vids:
        lines += [
            "",
            "Video, side by side (frames/s): bare PyAV decode (no pixel conversion) vs "
            "`VideoSource` (decode + RGB conversion + checks), automatic decoder threads vs 1.",
            "",
            "| clip | bare decode | VideoSource (auto threads) | ours / bare | "
            "VideoSource (1 thread) | auto / 1 thread |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in vids:
            b, o, t1 = r["bare_pyav"]["fps"], r["ours"]["fps"], r["ours_1_thread"]["fps"]
            lines.append(f"| {r['file']} | {_f(b)} | {_f(o)} | "
                         f"{_f(round(o / b, 2) if o and b else None)} | {_f(t1)} | "
                         f"{_f(round(o / t1, 2) if o and t1 else None)} |")
    dcm = [r for r in rows if "bare_iter_pixels" in r]
    if dcm:
        lines += [
            "",
            "DICOM cine, side by side (frames/s): pydicom `iter_pixels` (one sequential "
            "iterator, pylibjpeg + numpy YBR->RGB) vs `DicomSource(decoder=\"pydicom\")` "
            "(frame by frame `pixel_array(index=i)`, per-frame error isolation) vs "
            "`DicomSource` default (8-bit JPEG Baseline through OpenCV's libjpeg-turbo, "
            "checked against pydicom on the first frame).",
            "",
            "| file | iter_pixels | DicomSource pydicom | DicomSource default (decoder) | "
            "default / iter_pixels |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in dcm:
            b, p, o = (r["bare_iter_pixels"]["fps"], r["ours_pydicom"]["fps"],
                       r["ours"]["fps"])
            lines.append(f"| {r['file']} | {_f(b)} | {_f(p)} | {_f(o)} ({r['decoder']}) | "
                         f"{_f(round(o / b, 2) if o and b else None)} |")
    slow = [r for r in rows if r["ours"]["x_realtime"] is not None
            and r["ours"]["x_realtime"] < 1.0 and r["ours"]["frames"] > 1]
    lines += ["", ("Every multi-frame file decodes faster than its own frame rate."
                   if not slow else "Slower than realtime: " +
                   ", ".join(f"{r['file']} ({r['ours']['x_realtime']}x)" for r in slow)), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
