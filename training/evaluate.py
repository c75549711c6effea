"""Evaluation of the shipped models: metric reports (JSON) and plots (PNG).

* :func:`classifier_report`: lesion-type / malignancy / B-mode-feature metrics from the
  classifier's probabilities on labelled crops.
* :func:`detection_report`: AP50, recall by lesion size at a false-positive budget, FP/frame
  and Dice from per-frame detections and masks.
* :func:`predict_crops`: run a classifier artifact (through ``sonoflow.models.runtime``, no
  torch) on uint8 crops.
* :func:`evaluate_sim_folder` / :func:`evaluate_real_folder`: the two data sources of
  ``sonoflow eval`` (simulator clips with ``.gt.json``; real data in any form
  :mod:`sonoflow.training.data.real` reads).
* :func:`plot_confusion`, :func:`plot_calibration`, :func:`plot_roc`: matplotlib (Agg) PNGs.

Every number is computed from model outputs and ground truth here; nothing is copied from a
card. Outputs of synthetic-trained models are labelled ``"synthetic_only": true``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sonoflow.training import metrics as M

LESION_TYPES = ("cyst", "hemangioma", "metastasis", "hcc", "other")
LESION_FEATURES = ("anechoic", "hyperechoic", "hypoechoic", "halo_target",
                   "posterior_enhancement", "mosaic", "well_defined")


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays to Python, nan/inf to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON (nan/inf become null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(data), indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- classifier -----


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, K) logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Elementwise logistic function."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def classifier_report(type_probs: np.ndarray, malignancy_prob: np.ndarray,
                      feature_probs: np.ndarray, type_idx: np.ndarray, malignant: np.ndarray,
                      features: np.ndarray, size_mm: np.ndarray | None = None,
                      n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Metrics of the lesion classifier on labelled crops.

    Args:
        type_probs: (N, 5) type probabilities (softmax), :data:`LESION_TYPES` order.
        malignancy_prob: (N,) malignancy probability.
        feature_probs: (N, 7) feature probabilities, :data:`LESION_FEATURES` order.
        type_idx: (N,) true type indices.
        malignant: (N,) true 0/1.
        features: (N, 7) true 0/1 features.
        size_mm: (N,) lesion size in mm (nan for negatives), for accuracy by size.
        n_boot: bootstrap resamples for the AUC intervals.
        seed: bootstrap seed.

    Returns:
        JSON-ready dict: ``type`` (accuracy, confusion matrix, per-class PRF and AUC with 95 %
        CI), ``malignancy`` (AUC with CI, PRF at 0.5, calibration), ``features`` (per-feature
        AUC, accuracy at 0.5, prevalence), ``n``.
    """
    type_probs = np.asarray(type_probs, np.float64)
    t = np.asarray(type_idx, np.int64)
    pred = type_probs.argmax(axis=1)
    cm = M.confusion_matrix(t, pred, len(LESION_TYPES))
    rep: dict[str, Any] = {"n": int(len(t))}
    by_size = {}
    if size_mm is not None:
        s = np.asarray(size_mm, np.float64)
        for name, lo, hi in M.SIZE_BINS_MM:
            sel = (s >= lo) & (s < hi)
            by_size[name] = {"accuracy": M.accuracy(t[sel], pred[sel]), "n": int(sel.sum())}
    rep["type"] = {
        "accuracy": M.accuracy(t, pred),
        "accuracy_by_size": by_size,
        "class_names": list(LESION_TYPES),
        "confusion_matrix": cm.tolist(),
        "per_class": M.per_class_prf(cm, LESION_TYPES),
        "auc": M.per_class_auc(t, type_probs, LESION_TYPES, n_boot=n_boot, seed=seed),
    }
    m = np.asarray(malignant, np.float64)
    mp = np.asarray(malignancy_prob, np.float64).reshape(-1)
    rep["malignancy"] = {
        "auc": M.bootstrap_ci(M.roc_auc, m, mp, n_boot=n_boot, seed=seed + 100),
        "at_0.5": M.binary_prf(m, mp, 0.5),
        "calibration": M.calibration_curve(m, mp, 10),
    }
    fp = np.asarray(feature_probs, np.float64)
    ft = np.asarray(features, np.float64)
    rep["features"] = {
        name: {"auc": M.roc_auc(ft[:, k], fp[:, k]),
               "accuracy": M.accuracy(ft[:, k] >= 0.5, fp[:, k] >= 0.5),
               "prevalence": float(ft[:, k].mean()) if len(ft) else float("nan")}
        for k, name in enumerate(LESION_FEATURES)}
    return rep


def predict_crops(runtime, crops_u8: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    """Run a classifier artifact on crops, normalised as its card says.

    Args:
        runtime: a loaded :class:`sonoflow.models.runtime.Runtime` of a lesion-classifier card.
        crops_u8: (N, S, S) uint8 crops cut with the card's crop contract.
        batch: crops per call.

    Returns:
        ``{"type_probs" (N, 5), "malignancy" (N,), "feature_probs" (N, 7)}`` float64.
    """
    spec = runtime.card.input
    norm = spec.normalisation
    outs: dict[str, list[np.ndarray]] = {"type_probs": [], "malignancy": [], "feature_probs": []}
    for i in range(0, len(crops_u8), batch):
        x = crops_u8[i:i + batch].astype(np.float32)[:, None]
        x = (x * np.float32(norm["scale"]) - np.float32(norm["mean"])) / np.float32(norm["std"])
        r = runtime.run({spec.name: x.astype(np.float32)})
        outs["type_probs"].append(softmax(r["type_logits"].astype(np.float64)))
        outs["malignancy"].append(sigmoid(r["malignancy_logit"]).reshape(-1))
        outs["feature_probs"].append(sigmoid(r["feature_logits"]))
    n_feat = len(LESION_FEATURES)
    empty = {"type_probs": np.zeros((0, len(LESION_TYPES))), "malignancy": np.zeros(0),
             "feature_probs": np.zeros((0, n_feat))}
    return {k: np.concatenate(v) if v else empty[k] for k, v in outs.items()}


# ---------------------------------------------------------------------------- detection -----


def detection_report(frames: Sequence[M.FrameDetections], dice_values: Sequence[float],
                     max_fp_per_frame: float = 0.1) -> dict[str, Any]:
    """AP50, recall by size at a false-positive budget, FP/frame and mean Dice.

    Args:
        frames: per-frame detections and ground truth (sizes in mm where calibrated).
        dice_values: per-frame lesion Dice (frames with a lesion in the truth or prediction).
        max_fp_per_frame: the operating point (issue 5: 0.1).

    Returns:
        JSON-ready dict.
    """
    d = np.asarray(list(dice_values), np.float64)
    return {
        "n_frames": len(frames),
        "n_lesions": int(sum(len(np.asarray(f.gt_xyxy).reshape(-1, 4)) for f in frames)),
        "ap50": M.average_precision(frames, 0.5),
        "operating_point": M.recall_at_fp_rate(frames, max_fp_per_frame),
        "recall_at_0.5_score": M.recall_by_size(frames, 0.5),
        "fp_per_frame_at_0.5_score": M.false_positives_per_frame(frames, 0.5),
        "dice_mean": float(d.mean()) if len(d) else float("nan"),
        "dice_median": float(np.median(d)) if len(d) else float("nan"),
        "dice_n": int(len(d)),
    }


# ------------------------------------------------------------------------------- plots ------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: str | Path,
                   title: str) -> Path:
    """Row-normalised confusion matrix with counts, as PNG."""
    plt = _pyplot()
    cm = np.asarray(cm, np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=110)
    im = ax.imshow(frac, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=35, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.6 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_calibration(curves: dict[str, dict], path: str | Path, title: str) -> Path:
    """Reliability diagram(s) from :func:`sonoflow.training.metrics.calibration_curve` data."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4), dpi=110)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect")
    for name, c in curves.items():
        mp = np.asarray(c["mean_predicted"], np.float64)
        of = np.asarray(c["observed_fraction"], np.float64)
        ok = np.isfinite(mp) & np.isfinite(of)
        ax.plot(mp[ok], of[ok], "o-", ms=3, label=f"{name} (ECE {c['ece']:.3f})")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed fraction")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path,
             title: str) -> Path:
    """ROC curves ``{label: (y_true, y_score)}``; labels without both classes are skipped."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4), dpi=110)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    for name, (y, s) in curves.items():
        auc = M.roc_auc(y, s)
        if auc is None:
            continue
        fpr, tpr, _ = M.roc_curve(y, s)
        ax.plot(fpr, tpr, lw=1.2, label=f"{name} (AUC {auc:.3f})")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def classifier_plots(rep: dict[str, Any], probs: dict[str, np.ndarray], type_idx: np.ndarray,
                     malignant: np.ndarray, out_dir: str | Path, prefix: str,
                     title: str) -> list[Path]:
    """Confusion matrix, malignancy calibration and per-type + malignancy ROC PNGs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = np.asarray(type_idx)
    roc = {name: ((t == k).astype(int), probs["type_probs"][:, k])
           for k, name in enumerate(LESION_TYPES)}
    roc["malignant"] = (np.asarray(malignant).astype(int), probs["malignancy"])
    return [
        plot_confusion(np.asarray(rep["type"]["confusion_matrix"]), LESION_TYPES,
                       out / f"{prefix}_confusion.png", f"{title}: lesion type"),
        plot_calibration({"malignancy": rep["malignancy"]["calibration"]},
                         out / f"{prefix}_calibration.png", f"{title}: malignancy calibration"),
        plot_roc(roc, out / f"{prefix}_roc.png", f"{title}: ROC (one vs rest)"),
    ]
