"""Benchmark ``preprocess`` + ``quality``: cost per frame, accuracy on the simulator, real data.

1. Cost: both stages on 480x640 grey simulator frames with burned-in UI, one core
   (``cv2.setNumThreads(1)``), ``--frames`` x ``--runs`` frames, the first and last 10 of each
   run skipped (DESIGN.md performance protocol); per stage and together: avg / p50 / p95 /
   p99 / p99.9 / max. A full sector detection (what a layout change costs) is timed apart.
2. Simulator accuracy on seeds never used for tuning (``--seeds``, forced events so every kind
   occurs): sector coverage, surviving UI pixels, ruler mm/px error, per-event AUC of
   (1 - score) against good frames, per-event flag recall, freeze/black exactness.
3. Real data (skipped without ``../shared/data/real``): per cine clip the sector kind,
   calibration, quality score distribution, flag counts and visualization score; per DICOM
   file the calibration decision.

Writes JSON (``--out``) and a markdown section (``--markdown``)::

    .venv/bin/python benchmarks/bench_preprocess_quality.py \\
        --out out/bench_preprocess_quality.json \\
        --markdown benchmarks/sections/preprocess_quality.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from scipy.stats import rankdata

from sonoflow.stream.imaging.sector import detect_sector
from sonoflow.stream.imaging.visualization import visualization_score
from sonoflow.stream.messages import FrameHeader, Packet
from sonoflow.stream.stage import create

MACHINE = "2-core AMD Zen 3 VM, shared with other work at the time"
DATE = "2026-11-23"
TRIM = 10
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
EVENT_SETS = (["frozen", "partial_contact", "too_bright"], ["black", "no_contact", "motion_blur"],
              ["too_dark", "frozen", "motion_blur"], ["black", "partial_contact", "frozen"])


def summary_ms(values_ms: list[float]) -> dict[str, float]:
    a = np.asarray(values_ms, dtype=np.float64)
    return {"count": int(a.size), "avg": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95)), "p99": float(np.percentile(a, 99)),
            "p999": float(np.percentile(a, 99.9)), "max": float(a.max())}


def packet(image: np.ndarray, i: int, spacing=None, source="none", note="") -> Packet:
    image = np.ascontiguousarray(image)
    image.flags.writeable = False
    h = FrameHeader(stream_id="bench", seq=i, frame_index=i, pts=i, time_base=(1, 30),
                    capture_ns=0, pixel_format="gray8" if image.ndim == 2 else "rgb24",
                    pixel_spacing_mm=spacing, spacing_source=source, spacing_note=note)
    return Packet(header=h, arrays={"image": image})


def sim_frames(seed: int, n: int, events) -> list:
    from sonoflow.stream.sim import sample_case, simulate_clip

    case = sample_case(seed, ui=True, events=events)
    return case, list(simulate_clip(case, n_frames=n, height=480, width=640, fps=30.0))


def bench_cost(frames: int, runs: int, seed: int) -> dict:
    cv2.setNumThreads(1)
    _, clip = sim_frames(seed, 60, True)
    images = [f.image.copy() for f in clip]
    pre_ms, q_ms, tot_ms, cpu_ms = [], [], [], []
    for _ in range(runs):
        pre, q = create("preprocess"), create("quality")
        p_run, q_run, c_run = [], [], []
        for i in range(frames):
            pk = packet(images[i % len(images)], i)
            c0 = time.thread_time_ns()
            t0 = time.perf_counter()
            pk = pre.process(pk)
            t1 = time.perf_counter()
            q.process(pk)
            t2 = time.perf_counter()
            c_run.append((time.thread_time_ns() - c0) / 1e6)
            p_run.append((t1 - t0) * 1e3)
            q_run.append((t2 - t1) * 1e3)
        p_run, q_run, c_run = p_run[TRIM:-TRIM], q_run[TRIM:-TRIM], c_run[TRIM:-TRIM]
        pre_ms += p_run
        q_ms += q_run
        cpu_ms += c_run
        tot_ms += [a + b for a, b in zip(p_run, q_run, strict=True)]
    det_ms = []
    for img in images[:30]:
        t0 = time.perf_counter()
        detect_sector(img)
        det_ms.append((time.perf_counter() - t0) * 1e3)
    return {"frames": frames, "runs": runs, "size": [480, 640], "threads": 1,
            "preprocess_ms": summary_ms(pre_ms), "quality_ms": summary_ms(q_ms),
            "total_ms": summary_ms(tot_ms), "total_cpu_ms": summary_ms(cpu_ms),
            "detect_sector_ms": summary_ms(det_ms)}


def auc(bad: list[float], good: list[float]) -> float:
    r = rankdata(np.r_[bad, good])
    nb, ng = len(bad), len(good)
    return float((r[:nb].sum() - nb * (nb + 1) / 2) / (nb * ng))


def bench_sim(seeds: list[int], n_frames: int, role: str) -> dict:
    good: list[float] = []
    bad: dict[str, list[float]] = {}
    recall: dict[str, list[bool]] = {}
    cover_min, ui_left, ruler_err = 1.0, 0, []
    exact = {"frozen": [0, 0, 0], "black": [0, 0, 0]}  # hit, miss, false alarm
    false_flags: Counter = Counter()
    per_seed: dict[int, dict] = {}
    for k, seed in enumerate(seeds):
        case, clip = sim_frames(seed, n_frames, EVENT_SETS[k % len(EVENT_SETS)])
        pre, q = create("preprocess"), create("quality", {"policy": "all"})
        seed_cover, seed_ui, seed_excess = 1.0, 0, 0.0
        for f in clip:
            pk = q.process(pre.process(packet(f.image.copy(), f.frame_index)))
            label, qr = f.truth["quality_label"], pk.header.quality
            if label != "black":
                m = pk.arrays["sector_mask"] > 0
                seed_cover = min(seed_cover,
                                 float((m & f.sector_mask).sum() / f.sector_mask.sum()))
                # the price of covering: screen outside the true sector left unblanked
                seed_excess = max(seed_excess,
                                  float((m & ~f.sector_mask).sum() / f.sector_mask.sum()))
            seed_ui += int(np.count_nonzero(pk.arrays["image"][f.ui_text_mask]))
            if label == "good":
                good.append(1.0 - qr.score)
                false_flags.update(qr.flags)
            else:
                bad.setdefault(label, []).append(1.0 - qr.score)
                recall.setdefault(label, []).append(label in qr.flags)
            for name in exact:
                truth = bool(f.truth.get(name))
                hit = name in qr.flags
                if truth and hit:
                    exact[name][0] += 1
                elif truth:
                    exact[name][1] += 1
                elif hit and label == "good":
                    exact[name][2] += 1
        cover_min = min(cover_min, seed_cover)
        ui_left += seed_ui
        per_seed[seed] = {"coverage_min": seed_cover, "ui_pixels_left": seed_ui,
                          "excess_max": seed_excess,
                          "view": case.view, "events": list(EVENT_SETS[k % len(EVENT_SETS)])}
        pr = pk.header.preprocess
        true_mm = case.mm_per_px(480, 640)[1]
        ruler_err.append(None if pr.mm_per_px is None else pr.mm_per_px[1] / true_mm - 1.0)
    return {"seeds": seeds, "role": role, "frames_per_clip": n_frames, "good_frames": len(good),
            "coverage_min": cover_min, "ui_pixels_left": ui_left, "per_seed": per_seed,
            "ruler_rel_error": ruler_err,
            "auc": {k: {"frames": len(v), "auc": auc(v, good)} for k, v in sorted(bad.items())},
            "flag_recall": {k: float(np.mean(v)) for k, v in sorted(recall.items())},
            "exact": exact, "flags_on_good_frames": dict(false_flags)}


def bench_real() -> dict:
    if not REAL.is_dir():
        return {"skipped": f"{REAL} absent"}
    from sonoflow.stream.sources.registry import open_source

    clips = {}
    for path in sorted((REAL / "cine").iterdir()):
        if path.suffix not in (".mp4", ".mov", ".avi"):
            continue
        src = open_source(str(path))
        pre, q = create("preprocess"), create("quality", {"policy": "all"})
        results, kinds, ms = [], Counter(), []
        try:
            for sf in src.frames():
                if sf.image is None:
                    continue
                t0 = time.perf_counter()
                pk = q.process(pre.process(packet(sf.image, sf.frame_index)))
                ms.append((time.perf_counter() - t0) * 1e3)
                results.append(pk.header.quality)
                kinds[pk.header.preprocess.sector_kind] += 1
        finally:
            src.close()
        pr = pk.header.preprocess
        scores = np.array([r.score for r in results])
        flags = Counter(f for r in results for f in r.flags)
        vis, why = visualization_score(results)
        clips[path.name] = {
            "frames": len(results), "size": list(sf.image.shape[:2]), "sector_kinds": dict(kinds),
            "calibration": pr.calibration_source,
            "mm_per_px": None if pr.mm_per_px is None else round(pr.mm_per_px[1], 4),
            "score_p10": float(np.percentile(scores, 10)), "score_p50": float(np.median(scores)),
            "flags": dict(flags.most_common(4)), "visualization": vis, "why": why,
            "ms_p50": float(np.median(ms))}
    dicoms = {}
    for path in sorted((REAL / "dicom").glob("*.dcm")):
        src = open_source(str(path))
        try:
            sf = next(iter(src.frames()))
            cal = src.calibration
        finally:
            src.close()
        pr = create("preprocess").process(
            packet(sf.image, 0, cal.mm_per_px, cal.source, cal.note)).header.preprocess
        dicoms[path.name] = {"source": pr.calibration_source,
                             "mm_per_px": None if pr.mm_per_px is None
                             else round(pr.mm_per_px[0], 4),
                             "note": pr.calibration_note[:110]}
    return {"cine": clips, "dicom": dicoms}


def markdown(res: dict, cmd: str) -> str:
    lines = ["## Preprocess and quality (sector, blanking, calibration, frame quality)", "",
             f"Machine: {MACHINE}. Date: {DATE}. Command: `{cmd}`", ""]
    if res["cost"] is not None:
        lines += _cost_md(res["cost"])
    if res["sim"] is not None:
        lines += _sim_md(res["sim"])
    if res["real"]:
        lines += _real_md(res["real"])
    return "\n".join(lines) + "\n"


def _cost_md(c: dict) -> list[str]:
    lines = [
        f"### Cost per 480x640 grey frame, one core ({c['runs']} runs x {c['frames']} frames, "
        f"{TRIM} trimmed at each end)", "",
        "| stage | avg ms | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms |",
        "|---|---|---|---|---|---|---|"]
    for name in ("preprocess_ms", "quality_ms", "total_ms", "total_cpu_ms",
                 "detect_sector_ms"):
        s = c[name]
        lines.append(f"| {name[:-3]} | {s['avg']:.3f} | {s['p50']:.3f} | {s['p95']:.3f} | "
                     f"{s['p99']:.3f} | {s['p999']:.3f} | {s['max']:.3f} |")
    return lines + ["", "Wall-clock rows (`perf_counter`) include time the scheduler gave to other "
              "work on the shared VM; `total_cpu` is the thread's own CPU time "
              "(`thread_time_ns`) for both stages, the figure that does not depend on the "
              "load. `detect_sector` is the full detection a layout change (or the first "
              "frame) costs; steady frames pay only the coarse ring/rim check.", ""]


def _sim_md(s: dict) -> list[str]:
    errs = [e for e in s["ruler_rel_error"] if e is not None]
    cov = np.array([v["coverage_min"] for v in s["per_seed"].values()])
    worst = min(s["per_seed"].items(), key=lambda kv: kv[1]["coverage_min"])
    lines = [f"### Simulator, seeds {s['seeds'][0]}-{s['seeds'][-1]} ({s['role']}; "
              f"{s['frames_per_clip']} frames each, burned-in UI, forced events)", "",
              f"- sector mask coverage of the true sector, worst frame: {s['coverage_min']:.4f}"
              f" (seed {worst[0]}, {worst[1]['view']}); per clip (worst frame of each of "
              f"{cov.size}): 5th percentile {np.percentile(cov, 5):.4f}, median "
              f"{np.median(cov):.4f}; clips below 0.99: {int((cov < 0.99).sum())}",
              f"- mask pixels outside the true sector (the 2-px margin and fit error), as a "
              f"fraction of the true sector, worst frame: "
              f"{max(v['excess_max'] for v in s['per_seed'].values()):.4f}, median clip "
              f"{np.median([v['excess_max'] for v in s['per_seed'].values()]):.4f}",
              f"- burned-in UI pixels left after blanking: {s['ui_pixels_left']}",
              f"- depth-ruler mm/px error: max |{max(abs(e) for e in errs):.2%}| over "
              f"{len(errs)} clips (found on {len(errs)}/{len(s['ruler_rel_error'])})",
              f"- freeze (hit, miss, false alarm on good frames): {s['exact']['frozen']}; "
              f"black: {s['exact']['black']}",
              f"- flags raised on {s['good_frames']} good frames: "
              f"{s['flags_on_good_frames'] or 'none'}", "",
              "| event | frames | AUC of 1 - score vs good | flag recall |", "|---|---|---|---|"]
    for k, v in s["auc"].items():
        lines.append(f"| {k} | {v['frames']} | {v['auc']:.3f} | {s['flag_recall'][k]:.2f} |")
    return lines + [""]


def _real_md(r: dict) -> list[str]:
    lines: list[str] = []
    if "cine" in r:
        lines += ["", "### Real cine clips (`../shared/data/real/cine`, every frame)", "",
                  "| clip | frames | sector | calibration | mm/px | score p10 / p50 | "
                  "top flags | visualization | ms p50 |", "|---|---|---|---|---|---|---|---|---|"]
        for name, v in r["cine"].items():
            lines.append(f"| {name} | {v['frames']} | {v['sector_kinds']} | {v['calibration']} |"
                         f" {v['mm_per_px']} | {v['score_p10']:.2f} / {v['score_p50']:.2f} | "
                         f"{v['flags']} | {v['visualization']} | {v['ms_p50']:.2f} |")
        lines += ["", "ms p50 here is at each clip's own size and colour (RGB), both stages.",
                  "", "### Real DICOM calibration (`../shared/data/real/dicom`, first frame)",
                  "", "| file | source | mm/px | note |", "|---|---|---|---|"]
        for name, v in r["dicom"].items():
            lines.append(f"| {name} | {v['source']} | {v['mm_per_px']} | {v['note']} |")
    else:
        lines += ["", f"Real data: {r.get('skipped', 'not run')}"]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=9201, help="clip timed for cost")
    # Tuning seeds (a fix was checked on them): 100-119, 9101-9108 (fan-corner overshoot),
    # 9401-9450 (rib shadows, motion blur, gain step in the reference window, off-axis
    # apex), 9451-9490 (ruler cut by the fan corner), 9501-9560 (cv2.ellipse angle
    # rounding), 9561-9620 (apex pulled by shadowed arc ends). 9621-9680 were fresh when
    # reported.
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(9621, 9681)))
    ap.add_argument("--seed-role", default="verification: never used for tuning",
                    help="what the --seeds are, for the report (tuning or verification)")
    ap.add_argument("--sim-frames", type=int, default=40)
    ap.add_argument("--out", type=Path, default=Path("out/bench_preprocess_quality.json"))
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--parts", nargs="+", choices=("cost", "sim", "real"),
                    default=["cost", "sim", "real"])
    args = ap.parse_args()
    res = {"machine": MACHINE, "date": DATE,
           "cost": bench_cost(args.frames, args.runs, args.seed) if "cost" in args.parts
           else None,
           "sim": bench_sim(args.seeds, args.sim_frames, args.seed_role)
           if "sim" in args.parts else None,
           "real": bench_real() if "real" in args.parts else {}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    cmd = ".venv/bin/python benchmarks/bench_preprocess_quality.py " + " ".join(
        f"--{k.replace('_', '-')} "
        f"{shlex.quote(str(v)) if not isinstance(v, list) else ' '.join(map(str, v))}"
        for k, v in vars(args).items() if v is not None)
    md = markdown(res, cmd)
    if args.markdown:
        args.markdown.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
