"""Lesion classifier: held-out accuracy and latency of the shipped fp32 and INT8 artifacts,
measured side by side in one process (ONNX Runtime CPU, 1 thread), plus eager torch.

    .venv/bin/python benchmarks/bench_classifier.py [--config training/configs/lesion_classifier.toml]
        [--checkpoint runs/lesion-cls-v1/best.pt] [--out benchmarks/results/classifier.json]
        [--weights DIR [--weights DIR2 ...]]

Each ``--weights`` folder (default: the shipped ``models/weights``) is measured on the same
crops, so older artifacts can be compared with the shipped ones in one run; a precision a
folder lacks is skipped and said so.

The held-out crops come from the config's test seeds (cached under ``data.cache_dir``; rebuilt
from the simulator when absent). Writes JSON and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np


def dismissal_rates(probs: dict, test) -> dict[str, float]:
    """The crop-level errors that change a US LI-RADS category, by the aggregate stage's own
    rule (:class:`~sonoflow.stream.aggregation.lirads.LiradsConfig`): a crop is "definitely
    benign" when the benign classes reach ``benign_min_prob`` and the malignancy head stays
    below ``benign_max_malignancy``.

    Returns:
        ``malignant_dismissed``: fraction of malignant crops (metastasis, HCC) called definitely
        benign (the error that turns a US-3 into a US-1); ``benign_lesion_flagged``: fraction
        of cyst and hemangioma crops not called definitely benign (a needless follow-up).
    """
    from sonoflow.stream.aggregation.lesion import LESION_TYPES
    from sonoflow.stream.aggregation.lirads import LiradsConfig

    cfg = LiradsConfig()
    tp = np.asarray(probs["type_probs"])
    mal = np.asarray(probs["malignancy"]).reshape(-1)
    benign_cols = [LESION_TYPES.index(c) for c in cfg.definitely_benign_classes]
    dismissed = (tp[:, benign_cols].sum(1) >= cfg.benign_min_prob) & (
        mal < cfg.benign_max_malignancy)
    malignant = np.asarray(test.malignant) > 0.5
    benign_lesion = np.isin(np.asarray(test.type_idx),
                            [LESION_TYPES.index("cyst"), LESION_TYPES.index("hemangioma")])
    return {"malignant_dismissed": float(dismissed[malignant].mean()),
            "benign_lesion_flagged": float((~dismissed[benign_lesion]).mean()),
            "n_malignant": int(malignant.sum()), "n_benign_lesion": int(benign_lesion.sum())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="training/configs/lesion_classifier.toml")
    ap.add_argument("--checkpoint", default="runs/lesion-cls-v1/best.pt")
    ap.add_argument("--model", default="lesion-cls-v1")
    ap.add_argument("--out", default="benchmarks/results/classifier.json")
    ap.add_argument("--weights", action="append", default=None,
                    help="artifact folder to measure (repeatable; default: models/weights)")
    args = ap.parse_args()

    from sonoflow.models import runtime
    from sonoflow.models.errors import ModelError
    from sonoflow.models.registry import resolve
    from sonoflow.stream.bench.machine import machine
    from sonoflow.training.evaluate import classifier_report, predict_crops
    from sonoflow.training.tasks import lesion_classifier as task

    cfg = task.load_config(args.config)
    test = task.build_cropset(cfg, "test", progress=False)
    rows = {}
    folders = args.weights or [None]
    for folder, prec in [(f, p) for f in folders for p in ("fp32", "int8")]:
        try:
            path, card = resolve(args.model, prec, [folder] if folder else None)
        except ModelError as e:
            print(f"skip {folder or 'models/weights'} {prec}: {e}")
            continue
        name = f"ort-cpu {prec}" + (f" ({folder})" if folder else "")
        with runtime.load(path, "ort-cpu", prec, threads=1, card=card) as rt:
            probs = predict_crops(rt, test.crops)
            rep = classifier_report(probs["type_probs"], probs["malignancy"],
                                    probs["feature_probs"], test.type_idx, test.malignant,
                                    test.features, test.size_mm, n_boot=1000, kind=test.kind)
            rows[name] = {
                "type_accuracy": rep["type"]["accuracy"],
                "type_accuracy_by_kind": rep["type"]["accuracy_by_kind"],
                "type_accuracy_by_size": rep["type"]["accuracy_by_size"],
                "confusion_matrix": rep["type"]["confusion_matrix"],
                "malignancy_auc": rep["malignancy"]["auc"],
                **dismissal_rates(probs, test),
                "latency_b1": task.latency_ms(rt, test.crops, 1, repeats=500),
                "latency_b8": task.latency_ms(rt, test.crops, 8, repeats=200),
                "sha256": card.sha256[:12],
                "config_hash": card.training.get("config_hash")}
    if Path(args.checkpoint).exists():
        import torch

        torch.set_num_threads(1)
        ck = task.load_checkpoint(args.checkpoint)
        model = task.build_model(cfg)
        model.load_state_dict(ck["model"])
        model.eval()
        probs = task.torch_predict(model, test.crops, ck["normalisation"])
        x = torch.from_numpy(((test.crops[:1].astype(np.float32)[:, None] / 255.0
                               - ck["normalisation"]["mean"]) / ck["normalisation"]["std"]))
        times = []
        with torch.no_grad():
            for i in range(520):
                t0 = time.perf_counter_ns()
                model(x)
                if i >= 20:
                    times.append((time.perf_counter_ns() - t0) / 1e6)
        rows["torch eager fp32"] = {
            "type_accuracy": float(np.mean(probs["type_probs"].argmax(1) == test.type_idx)),
            "latency_b1": {"p50": float(np.percentile(times, 50)),
                           "p99": float(np.percentile(times, 99))}}
    result = {"benchmark": "classifier", "machine": machine(),
              "cpu": platform.processor() or platform.machine(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "heldout_crops": len(test), "heldout_seeds": cfg["data"]["test_seeds"],
              "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| variant | type acc. | malignancy AUC | malignant called definitely benign | "
          "cyst/hemangioma not called benign | p50 ms (b1) | p99 ms (b1) | p50 ms (b8) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        auc = (r.get("malignancy_auc") or {}).get("value")
        b8 = r.get("latency_b8", {}).get("p50")
        md, bf = r.get("malignant_dismissed"), r.get("benign_lesion_flagged")
        print(f"| {name} | {r['type_accuracy']:.4f} | {'' if auc is None else f'{auc:.4f}'} | "
              f"{'' if md is None else f'{md:.3f}'} | {'' if bf is None else f'{bf:.3f}'} | "
              f"{r['latency_b1']['p50']:.3f} | {r['latency_b1']['p99']:.3f} | "
              f"{'' if b8 is None else f'{b8:.3f}'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
