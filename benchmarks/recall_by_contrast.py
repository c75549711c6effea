"""Frame-network recall by lesion contrast, on the held-out frame cache.

The detection metrics count a lesion as visible when its contrast, the largest of its
interior, core and rim-band contrasts in ring standard deviations
(:func:`sonoflow.training.data.visibility.lesion_visibility`), is >= 0.4. This script splits
recall at the card's operating threshold by that contrast, to show where the misses are.

Usage::

    .venv/bin/python benchmarks/recall_by_contrast.py \\
        --config training/configs/frame_heldout_large.toml \\
        --out benchmarks/results/models_s7/recall_by_contrast.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

CONTRAST_BINS = ((0.0, 0.4), (0.4, 0.8), (0.8, 1.2), (1.2, 2.0), (2.0, float("inf")))
SIZE_BINS_MM = (("5to10mm", 5.0, 10.0), ("ge10mm", 10.0, float("inf")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--model", default="frame-v1")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--weights", type=Path, default=None, help="weights folder (default: shipped)")
    ap.add_argument("--iou", type=float, default=0.5)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    from sonoflow.models import registry, runtime
    from sonoflow.models.postprocess import decode_detections
    from sonoflow.training import metrics as M
    from sonoflow.training.data.visibility import lesion_visibility
    from sonoflow.training.tasks import frame as task

    cfg = task.load_config(args.config)
    norm = dict(cfg["model"]["normalisation"])
    held = task.load_split(cfg, "heldout", int(cfg["data"].get("workers", 2)))
    good = task.good_frames(held)
    path, card = registry.resolve(args.model, args.precision,
                                  [args.weights] if args.weights else None)
    thr = float(card.thresholds["heatmap"])
    with runtime.load(path, "ort-cpu", threads=1, card=card) as rt:
        outs = task.predict(task.ort_outputs(rt), held, good, norm, 32)
    stride = held["image"].shape[-1] / outs["heatmap"].shape[-1]
    b = held["boxes"]
    size, contrast, hit = [], [], []
    for j, i in enumerate(good):
        rows = np.nonzero(b[:, 0] == i)[0]
        if not len(rows):
            continue
        _, con = lesion_visibility(held["image"][i], held["lesion"][i], b[rows, 1:5])
        det = decode_detections(outs["heatmap"][j, 0], outs["size"][j], outs["offset"][j],
                                stride, thr, 20)
        iou = (M.box_iou(b[rows, 1:5], det.xyxy_px) if len(det.xyxy_px)
               else np.zeros((len(rows), 0)))
        for k, r in enumerate(rows):
            size.append(float(b[r, 5]))
            contrast.append(float(con[k]))
            hit.append(bool(iou.shape[1] and iou[k].max() >= args.iou))
    size_a, con_a, hit_a = np.array(size), np.array(contrast), np.array(hit)
    table = {}
    for name, lo, hi in SIZE_BINS_MM:
        in_size = (size_a >= lo) & (size_a < hi)
        rows_out = []
        for c0, c1 in CONTRAST_BINS:
            sel = in_size & (con_a >= c0) & (con_a < c1)
            rows_out.append({"contrast": [c0, c1], "lesion_frames": int(sel.sum()),
                             "recall": float(hit_a[sel].mean()) if sel.any() else None})
        vis = in_size & (con_a >= 0.4)
        table[name] = {"bins": rows_out, "visible_lesion_frames": int(vis.sum()),
                       "visible_recall": float(hit_a[vis].mean()) if vis.any() else None}
    doc = {"model": card.artifact_name, "threshold": thr, "iou": args.iou,
           "good_frames": int(len(good)), "config": str(args.config),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "by_size": table}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    lines = ["| size | contrast (ring s.d.) | lesion-frames | recall |", "|---|---|---:|---:|"]
    for name, t in table.items():
        for r in t["bins"]:
            c0, c1 = r["contrast"]
            rec = "n/a" if r["recall"] is None else f"{r['recall']:.3f}"
            lines.append(f"| {name} | {c0:g}-{c1:g} | {r['lesion_frames']} | {rec} |")
        lines.append(f"| {name} | visible (>= 0.4) | {t['visible_lesion_frames']} | "
                     f"{t['visible_recall']:.3f} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
