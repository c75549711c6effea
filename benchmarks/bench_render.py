"""Benchmark the bedside view: render time per frame, and frame age at the browser.

1. Render: ``RenderStage.process`` (copy to RGB + every default layer) on simulator frames with
   ground-truth detections, one core (``cv2.setNumThreads(1)``), at 480x640 and 1080x1920;
   the bare grey-to-RGB copy is timed in the same loop so the cost the layers add is a
   side-by-side difference.
2. Browser: a 30 fps live stream through ``render`` -> ``view`` (web) watched by headless
   Chromium; frame age = capture to displayed (the page's ack), p50/p99, plus frames the
   viewer skipped under its latest-frame policy. Skipped when Chromium is absent.
3. ``--screenshots DIR``: overlay PNGs of a simulator clip (docs/overlay_*.png).

Writes JSON (``--out``) and a markdown section (``--markdown``).

    .venv/bin/python benchmarks/bench_render.py --out out/bench_render.json \
        --markdown benchmarks/sections/render_view.md --screenshots docs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from sonoflow.stream.messages import Packet
from sonoflow.stream.render.annotate import DEFAULT_LAYERS, LAYERS, annotate, to_rgb
from sonoflow.stream.render.layers import HudStats
from sonoflow.stream.render.truth_frames import truth_packets
from sonoflow.stream.stages.render import RenderStage

MACHINE = "2-core AMD Zen 3 VM, shared with other work at the time"
DATE = "2026-11-23"
TRIM = 10  # frames skipped at each end (DESIGN.md, performance protocol)


def summary_ms(values_ms: list[float]) -> dict[str, float]:
    a = np.asarray(values_ms, dtype=np.float64)
    return {"count": int(a.size), "avg": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95)), "p99": float(np.percentile(a, 99)),
            "p999": float(np.percentile(a, 99.9)), "max": float(a.max())}


def sim_packets(n: int, height: int, width: int, seed: int) -> list[Packet]:
    return list(truth_packets(seed, n, height=height, width=width, n_lesions=3, events=True,
                              ui=True))


def bench_render(frames: int, runs: int, height: int, width: int, seed: int) -> dict:
    """Per-frame render and bare-copy times in ms over ``runs`` x ``frames`` frames."""
    cv2.setNumThreads(1)
    packets = sim_packets(min(frames, 60), height, width, seed)
    render_ms, copy_ms = [], []
    for _ in range(runs):
        stage = RenderStage()
        r_run, c_run = [], []
        for i in range(frames):
            pk = packets[i % len(packets)]
            pk.header.seq = i
            t0 = time.perf_counter_ns()
            to_rgb(pk.arrays["image"])
            t1 = time.perf_counter_ns()
            stage.process(Packet(pk.header, pk.arrays))
            t2 = time.perf_counter_ns()
            c_run.append((t1 - t0) / 1e6)
            r_run.append((t2 - t1) / 1e6)
        render_ms += r_run[TRIM:-TRIM]
        copy_ms += c_run[TRIM:-TRIM]
    dets = sum(len(p.header.infer.detections) for p in packets if p.header.infer)
    return {"size": [height, width], "frames_per_run": frames, "runs": runs,
            "detections_per_frame": dets / len(packets),
            "render_ms": summary_ms(render_ms), "copy_ms": summary_ms(copy_ms),
            "added_ms_p50": float(np.percentile(render_ms, 50) - np.percentile(copy_ms, 50))}


def bench_layers(reps: int, seed: int) -> dict:
    """p50 ms of each default layer drawn alone (plus none and all) on the simulator frame with
    the most lesions, ``reps`` repetitions each, one core."""
    cv2.setNumThreads(1)
    packets = [p for p in sim_packets(60, 480, 640, seed) if p.header.status == "analysed"]
    pk = max(packets, key=lambda p: len(p.header.infer.detections))
    stats = HudStats(now_ns=pk.header.capture_ns, fps=30.0)
    out = {"detections": len(pk.header.infer.detections), "p50_ms": {}}
    for name, layers in [("none", set()), *((n, {n}) for n in sorted(DEFAULT_LAYERS)),
                         ("default", DEFAULT_LAYERS)]:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            annotate(pk.arrays["image"], pk.header, pk.arrays, layers, stats=stats)
            times.append((time.perf_counter_ns() - t0) / 1e6)
        out["p50_ms"][name] = float(np.percentile(times, 50))
    return out


def bench_browser(frames: int, seed: int, fps: float = 30.0) -> dict | None:
    """Frame age at headless Chromium for a ``fps`` stream of ``frames`` frames; None if no
    browser is installed."""
    from sonoflow.stream.stages.view import ViewStage
    from sonoflow.stream.web.headless import HeadlessChromium, find_browser

    if find_browser() is None:
        return None
    packets = sim_packets(60, 480, 640, seed)
    render, view = RenderStage(), ViewStage({"kind": "web"})
    view.open()
    period_ns = int(1e9 / fps)
    try:
        with HeadlessChromium() as browser:
            browser.open(view.url)
            sent = 0

            def produce():
                nonlocal sent
                t_next = time.monotonic_ns()
                for seq in range(frames):
                    pk = packets[seq % len(packets)]
                    pk.header.seq, pk.header.capture_ns = seq, time.monotonic_ns()
                    view.process(render.process(Packet(pk.header, pk.arrays)))
                    sent += 1
                    t_next += period_ns
                    time.sleep(max(0.0, (t_next - time.monotonic_ns()) / 1e9))

            t0 = time.monotonic()
            thread = threading.Thread(target=produce)
            thread.start()
            thread.join()
            wall_s = time.monotonic() - t0
            time.sleep(0.5)
            shown = browser.run_js("return window.sonoflow.shown")
        ages = view.viewer.frame_ages_ms()
        stats = view.viewer.stats()
    finally:
        view.close()
    trimmed = ages[TRIM:-TRIM] if len(ages) > 3 * TRIM else ages
    return {"fps": fps, "frames_published": sent, "wall_s": wall_s, "frames_shown": shown,
            "frames_skipped_by_viewer": stats["skipped"], "frame_age_ms": summary_ms(trimmed)}


def screenshots(out_dir: Path, seed: int) -> list[Path]:
    """Overlay PNGs of one simulator clip at 480x640 and 1080x1920 (analysed and rejected)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for (h, w), tag in (((480, 640), "480x640"), ((1080, 1920), "1080p")):
        packets = sim_packets(60, h, w, seed)
        good = max((p for p in packets if p.header.status == "analysed"),
                   key=lambda p: len(p.header.infer.detections))
        stats = HudStats(now_ns=good.header.capture_ns + 21_400_000, fps=30.0, drops=0)
        img = annotate(good.arrays["image"], good.header, good.arrays, LAYERS, stats=stats)
        path = out_dir / f"overlay_{tag}.png"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        written.append(path)
        bad = [p for p in packets if p.header.status == "rejected"]
        if tag == "480x640" and bad:
            stats = HudStats(now_ns=bad[0].header.capture_ns + 19_800_000, fps=30.0, drops=0)
            img = annotate(bad[0].arrays["image"], bad[0].header, bad[0].arrays, LAYERS,
                           stats=stats)
            path = out_dir / "overlay_rejected.png"
            cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
            written.append(path)
    return written


def markdown(result: dict, command: str) -> str:
    lines = ["## Render and bedside view", "",
             f"Machine: {MACHINE} (1-min load average {result['loadavg_1min_before_after'][0]:.1f}"
             f" before, {result['loadavg_1min_before_after'][1]:.1f} after, on 2 cores); "
             f"date {DATE}. Command: `{command}`", "",
             "Render (`RenderStage.process`: RGB copy + all default layers, simulator frames "
             "with ground-truth lesions, `cv2.setNumThreads(1)`), ms per frame, "
             f"first and last {TRIM} frames of each run skipped:", "",
             "| frame | runs x frames | lesions/frame | render p50 | p99 | max | bare copy p50 "
             "| added by layers p50 |", "|---|---|---|---|---|---|---|---|"]
    for r in result["render"]:
        rm, cm = r["render_ms"], r["copy_ms"]
        lines.append(f"| {r['size'][0]}x{r['size'][1]} | {r['runs']} x {r['frames_per_run']} | "
                     f"{r['detections_per_frame']:.1f} | {rm['p50']:.2f} | {rm['p99']:.2f} | "
                     f"{rm['max']:.2f} | {cm['p50']:.3f} | {r['added_ms_p50']:.2f} |")
    lay = result["layers"]
    names = list(lay["p50_ms"])
    lines += ["", f"Each layer alone, 480x640 frame with {lay['detections']} lesions, 300 "
              "repetitions, p50 ms (`none` = the RGB copy only):", "",
              "| " + " | ".join(names) + " |", "|" + "---|" * len(names),
              "| " + " | ".join(f"{lay['p50_ms'][n]:.2f}" for n in names) + " |"]
    b = result.get("browser")
    lines.append("")
    if b is None:
        lines.append("Browser frame age: not measured (no headless Chromium on this machine).")
    else:
        a = b["frame_age_ms"]
        lines += [f"Frame age at the browser (capture to displayed, headless Chromium, one page, "
                  f"{b['fps']:.0f} fps live stream of {b['frames_published']} frames through "
                  "render -> view(web) in one process, 480x640 JPEG q80), ms:", "",
                  "| count | avg | p50 | p95 | p99 | max | frames shown | skipped by viewer |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| {a['count']} | {a['avg']:.1f} | {a['p50']:.1f} | {a['p95']:.1f} | "
                  f"{a['p99']:.1f} | {a['max']:.1f} | {b['frames_shown']} | "
                  f"{b['frames_skipped_by_viewer']} |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--browser-frames", type=int, default=900)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--out", type=Path, default=Path("out/bench_render.json"))
    p.add_argument("--markdown", type=Path, default=None)
    p.add_argument("--screenshots", type=Path, default=None)
    p.add_argument("--no-browser", action="store_true")
    args = p.parse_args(argv)
    command = "python " + " ".join(["benchmarks/bench_render.py", *(argv or sys.argv[1:])])
    load_before = os.getloadavg()
    result = {"machine": MACHINE, "python": platform.python_version(), "opencv": cv2.__version__,
              "render": [bench_render(args.frames, args.runs, 480, 640, args.seed),
                         bench_render(max(3 * TRIM + 1, args.frames // 5), args.runs, 1080,
                                      1920, args.seed)],
              "layers": bench_layers(300, args.seed)}
    result["browser"] = None if args.no_browser else bench_browser(args.browser_frames,
                                                                  args.seed)
    result["loadavg_1min_before_after"] = [load_before[0], os.getloadavg()[0]]
    if args.screenshots:
        result["screenshots"] = [str(p) for p in screenshots(args.screenshots, args.seed)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    md = markdown(result, command)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
