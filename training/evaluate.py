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
                      n_boot: int = 1000, seed: int = 0,
                      kind: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics of the lesion classifier on labelled crops.

    Args:
        type_probs: (N, 5) type probabilities (softmax), :data:`LESION_TYPES` order.
        malignancy_prob: (N,) malignancy probability.
        feature_probs: (N, 7) feature probabilities, :data:`LESION_FEATURES` order.
        type_idx: (N,) true type indices.
        malignant: (N,) true 0/1.
        features: (N, 7) true 0/1 features; nan where a label is unknown (excluded).
        size_mm: (N,) lesion size in mm (nan for negatives), for accuracy by size.
        n_boot: bootstrap resamples for the AUC intervals.
        seed: bootstrap seed.
        kind: (N,) finer source label (simulator class or negative kind), for accuracy by kind.

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
    by_kind = {}
    if kind is not None:
        k_arr = np.asarray(kind).astype(str)
        for name in sorted(set(k_arr.tolist())):
            sel = k_arr == name
            by_kind[name] = {"accuracy": M.accuracy(t[sel], pred[sel]), "n": int(sel.sum())}
    rep["type"] = {
        "accuracy": M.accuracy(t, pred),
        "accuracy_by_size": by_size,
        "accuracy_by_kind": by_kind,
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
    rep["features"] = {}
    for k, name in enumerate(LESION_FEATURES):
        known = np.isfinite(ft[:, k])  # nan = not derivable from the truth at hand
        y, p = ft[known, k], fp[known, k]
        rep["features"][name] = {
            "auc": M.roc_auc(y, p), "accuracy": M.accuracy(y >= 0.5, p >= 0.5),
            "prevalence": float(y.mean()) if len(y) else float("nan"), "n": int(known.sum())}
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


# --------------------------------------------------------------------- model execution -----


def load_model(model_id: str, precision: str, backend: str = "ort-cpu", threads: int = 1,
               search: list[str | Path] | None = None):
    """Resolve a shipped artifact and load it (through the registry and runtime, no torch).

    ``search`` lists artifact folders (default: the shipped ``models/weights``).

    Raises:
        ModelError: not found (lists what exists) or the backend cannot run it.
    """
    from sonoflow.models import runtime
    from sonoflow.models.registry import resolve

    path, card = resolve(model_id, precision, search=search)
    return runtime.load(path, backend=backend, precision=precision, threads=threads, card=card)


def frame_predict(rt, image: np.ndarray, sector_xyxy_px: Sequence[float] | None = None,
                  sector_mask: np.ndarray | None = None, score_floor: float = 0.05
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run the frame network on one grey frame as the ``infer`` stage does.

    Args:
        rt: a loaded frame-model runtime.
        image: (H, W) uint8 frame.
        sector_xyxy_px: the imaging sector's box (letterbox source); None = whole frame.
        sector_mask: (H, W) sector mask (pixels outside are blanked), or None.
        score_floor: heatmap threshold for decoding (low, so AP sees the whole ranking).

    Returns:
        ``(boxes (N, 4) original pixels, scores (N,), lesion_mask (H, W) bool,
        steatosis_probs (4,))``; the mask is the lesion probability above the card's
        ``lesion_mask`` threshold (default 0.5).
    """
    from sonoflow.models.postprocess import decode_frame
    from sonoflow.models.preprocess import letterbox, normalise

    card = rt.card
    canvas, lb = letterbox(image, sector_xyxy_px, (card.input.height, card.input.width),
                           sector_mask, card.input.pad_value)
    outs = rt.run({card.input.name: normalise(canvas, card.input)})
    fo = decode_frame(outs, card, 0, threshold=score_floor)
    boxes = lb.to_original_xyxy(fo.detections.xyxy_px)
    prob = lb.warp_to_original(fo.lesion_prob.astype(np.float32), image.shape)
    thr = float(card.thresholds.get("lesion_mask", card.thresholds.get("mask", 0.5)))
    return (boxes, fo.detections.confidence.astype(np.float64), prob >= thr,
            np.asarray(fo.steatosis_probs, np.float64))


def _sector(image: np.ndarray) -> tuple[tuple[int, int, int, int] | None, np.ndarray | None]:
    """The imaging sector as the ``preprocess`` stage finds it (None when not found)."""
    from sonoflow.stream.imaging.sector import detect_sector

    geom = detect_sector(image)
    if geom is None:
        return None, None
    return geom.xyxy_px, geom.mask > 0


# --------------------------------------------------------------------------- real data -----


def classifier_on_real(rt_or_predict, items: Sequence[Any]) -> dict[str, np.ndarray]:
    """Classifier probabilities for every annotated lesion of real images (crops at the
    annotated boxes, cut with the card's crop contract).

    Args:
        rt_or_predict: a classifier runtime, or a callable ``crops_u8 -> probs dict``.
        items: :class:`~sonoflow.training.data.real.RealImage` list.

    Returns:
        probs dict plus ``"malignant"`` (N,) 0/1 (nan when unknown), ``"image"`` (N,) names.
    """
    from sonoflow.training.data.sim_crops import CropSpec, crop_box

    if callable(rt_or_predict) and not hasattr(rt_or_predict, "card"):
        predict, spec = rt_or_predict, CropSpec()
    else:
        inp = rt_or_predict.card.input
        crop = rt_or_predict.card.extra.get("crop", {})
        spec = CropSpec(float(inp.crop_margin or 1.5), inp.width,
                        int(crop.get("min_side_px", 12)), int(inp.pad_value))

        def predict(c):
            return predict_crops(rt_or_predict, c)
    crops, mal, names = [], [], []
    for item in items:
        for les in item.lesions:
            crops.append(crop_box(item.image, les.xyxy_px, spec))
            mal.append(np.nan if les.malignant is None else float(les.malignant))
            names.append(item.path.name)
    arr = (np.stack(crops) if crops else np.zeros((0, spec.size_px, spec.size_px), np.uint8))
    probs = predict(arr)
    probs["malignant"] = np.asarray(mal, np.float64)
    probs["image"] = np.asarray(names)
    return probs


def malignancy_auc_report(malignant: np.ndarray, score: np.ndarray, n_boot: int = 2000,
                          seed: int = 0) -> dict[str, Any]:
    """Benign-vs-malignant AUC with a bootstrap 95 % CI, over lesions whose label is known."""
    known = np.isfinite(malignant)
    y, s = malignant[known], np.asarray(score, np.float64)[known]
    return {"auc": M.bootstrap_ci(M.roc_auc, y, s, n_boot=n_boot, seed=seed),
            "n_malignant": int(y.sum()), "n_benign": int((1 - y).sum()),
            "at_0.5": M.binary_prf(y, s, 0.5), "calibration": M.calibration_curve(y, s, 5)}


def frame_model_on_real(rt, items: Sequence[Any], use_sector: bool = True,
                        max_fp_per_frame: float = 0.1) -> dict[str, Any]:
    """Detection recall / AP50 / FP per image and lesion Dice of the frame network on real
    images (the sector found as ``preprocess`` finds it, else the whole image)."""
    frames, dices = [], []
    for item in items:
        box, mask = _sector(item.image) if use_sector else (None, None)
        boxes, scores, pred_mask, _ = frame_predict(rt, item.image, box, mask)
        gt = np.asarray([les.xyxy_px for les in item.lesions], np.float64).reshape(-1, 4)
        frames.append(M.FrameDetections(boxes, scores, gt, None))
        if item.lesion_mask is not None:
            dices.append(M.dice(pred_mask, item.lesion_mask))
    rep = detection_report(frames, dices, max_fp_per_frame)
    rep["note"] = ("real images are uncalibrated here: recall is over all lesions "
                   "(no size bins); FP counted per image")
    return rep


def evaluate_real_folder(data: str | Path, out_dir: str | Path, classifier_id: str | None,
                         frame_id: str | None, precision: str = "fp32",
                         backend: str = "ort-cpu", n_boot: int = 2000,
                         search: list[str | Path] | None = None) -> dict[str, Any]:
    """``sonoflow eval`` on real data: classifier malignancy AUC at the annotated boxes, and
    the frame network's detection and Dice when ``frame_id`` is given. Writes
    ``real_eval.json`` and PNGs into ``out_dir``."""
    from sonoflow.training.data.real import load_real_dataset

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = load_real_dataset(data)
    rep: dict[str, Any] = {"data": str(data), "n_images": len(items), "precision": precision,
                           "backend": backend, "synthetic_only": True}
    if classifier_id:
        with load_model(classifier_id, precision, backend, search=search) as rt:
            probs = classifier_on_real(rt, items)
            rep["classifier"] = {"model": classifier_id, "sha256": rt.card.sha256[:12],
                                 **malignancy_auc_report(probs["malignant"],
                                                         probs["malignancy"], n_boot)}
            mal_types = probs["type_probs"][:, 2] + probs["type_probs"][:, 3]
            rep["classifier"]["auc_from_type_head"] = malignancy_auc_report(
                probs["malignant"], mal_types, n_boot)["auc"]
            known = np.isfinite(probs["malignant"])
            plot_roc({"malignancy head": (probs["malignant"][known], probs["malignancy"][known]),
                      "P(metastasis)+P(hcc)": (probs["malignant"][known], mal_types[known])},
                     out / "real_malignancy_roc.png", "real images: benign vs malignant")
            plot_calibration({"malignancy": rep["classifier"]["calibration"]},
                             out / "real_malignancy_calibration.png",
                             "real images: malignancy calibration")
    if frame_id:
        with load_model(frame_id, precision, backend, search=search) as rt:
            rep["frame"] = {"model": frame_id, "sha256": rt.card.sha256[:12],
                            **frame_model_on_real(rt, items)}
    write_json(out / "real_eval.json", rep)
    return rep


# ------------------------------------------------------------------------ simulator data ---


def truth_features(cls: str, subtype: str, diameter_mm: float) -> np.ndarray:
    """Feature labels derivable from a clip's ground-truth JSON alone (7,), nan = unknown.

    The JSON carries class and subtype but not the appearance levels, so an HCC's halo is
    unknown (nan); its hypoechoic flag follows the simulator's rule (non-mosaic, < 30 mm ->
    -9..-4 dB). Everything else is as :func:`sonoflow.training.data.sim_crops.lesion_features`.
    """
    from sonoflow.training.data.sim_crops import lesion_features

    levels = {"halo": 0.0, "level_db": -6.0 if diameter_mm < 30 else 0.0}
    f = np.array([float(v) for v in lesion_features(cls, subtype, levels).values()])
    if cls == "hcc":
        f[LESION_FEATURES.index("halo_target")] = np.nan
    return f


def _open_clip_frames(clip: Path):
    """Grey frames of a clip through the capture sources (npz, mp4, DICOM)."""
    from sonoflow.stream.sources.registry import open_source

    src = open_source(str(clip))
    src.open()
    try:
        for sf in src.frames():
            if sf.image is None:
                continue
            img = sf.image
            if img.ndim == 3:
                import cv2

                img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
            yield sf.frame_index, img
    finally:
        src.close()


def _clip_for(gt_path: Path) -> Path:
    stem = gt_path.name[: -len(".gt.json")]
    for ext in (".npz", ".mp4", ".dcm"):
        p = gt_path.with_name(stem + ext)
        if p.exists():
            return p
    from sonoflow.stream.errors import SourceError

    raise SourceError(str(gt_path), f"no clip beside it: expected {stem}.npz, .mp4 or .dcm")


def _lesion_id_masks(masks: dict[str, np.ndarray]) -> np.ndarray:
    """The (F, H, W) lesion-id stack from a masks dict (``load_truth``'s second value)."""
    from sonoflow.stream.errors import SourceError

    for key in ("lesion_ids", "lesions", "instances"):
        if key in masks:
            return np.asarray(masks[key])
    raise SourceError("masks", f"no lesion-id mask stack; keys {sorted(masks)}, expected "
                               "'lesion_ids'")


SKIP_QUALITY = ("black", "no_contact")


def evaluate_sim_folder(data: str | Path, out_dir: str | Path, classifier_id: str | None,
                        frame_id: str | None, precision: str = "fp32", backend: str = "ort-cpu",
                        max_fp_per_frame: float = 0.1, n_boot: int = 2000,
                        search: list[str | Path] | None = None) -> dict[str, Any]:
    """``sonoflow eval`` on simulator clips: frame network (AP50, recall by size at the FP
    budget, FP/frame, lesion Dice, steatosis frame accuracy) and classifier (type accuracy,
    confusion, per-class AUC with CI, malignancy AUC and calibration, features) at the
    ground-truth boxes. Frames labelled black / no_contact are excluded (nothing to see). The
    sector is found as ``preprocess`` finds it (the truth's sector mask when detection fails).
    Writes ``eval.json`` + PNGs.
    """
    from sonoflow.training.data.sim_crops import SIM_CLASS_TO_TYPE, CropSpec, crop_box
    from sonoflow.training.data.sim_truth import load_truth

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gts = sorted(Path(data).glob("*.gt.json"))
    frame_rt = load_model(frame_id, precision, backend, search=search) if frame_id else None
    cls_rt = (load_model(classifier_id, precision, backend, search=search) if classifier_id
              else None)
    det_frames, dices, steat_true, steat_pred = [], [], [], []
    crops, t_idx, mal, feats, sizes = [], [], [], [], []
    spec = None
    if cls_rt is not None:
        inp = cls_rt.card.input
        spec = CropSpec(float(inp.crop_margin or 1.5), inp.width,
                        int(cls_rt.card.extra.get("crop", {}).get("min_side_px", 12)),
                        int(inp.pad_value))
    try:
        for gt_path in gts:
            truth, masks = load_truth(gt_path)
            ids = _lesion_id_masks(masks)
            by_frame = {int(f["frame_index"]): f for f in truth["frames"]}
            case_les = {int(c["lesion_id"]): c for c in truth["case"]["lesions"]}
            grade = int(truth["case"]["steatosis_grade"])
            for fi, img in _open_clip_frames(_clip_for(gt_path)):
                ft = by_frame.get(fi)
                if ft is None or ft.get("quality_label", "good") in SKIP_QUALITY:
                    continue
                lesions = ft.get("lesions", [])
                if frame_rt is not None:
                    box, smask = _sector(img)
                    if box is None:
                        smask = masks["sector_mask"].astype(bool)
                        ys, xs = np.nonzero(smask)
                        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
                    boxes, scores, pmask, steat = frame_predict(frame_rt, img, box, smask)
                    gt = np.asarray([les["xyxy_px"] for les in lesions], np.float64).reshape(-1, 4)
                    size = np.asarray([les.get("diameter_mm", np.nan) for les in lesions],
                                      np.float64)
                    det_frames.append(M.FrameDetections(boxes, scores, gt, size))
                    gmask = ids[fi] > 0
                    if gmask.any() or pmask.any():
                        dices.append(M.dice(pmask, gmask))
                    steat_true.append(grade)
                    steat_pred.append(int(np.argmax(steat)))
                if cls_rt is not None:
                    for les in lesions:
                        full = case_les[int(les["lesion_id"])]
                        crops.append(crop_box(img, les["xyxy_px"], spec))
                        t_idx.append(LESION_TYPES.index(SIM_CLASS_TO_TYPE[full["class"]]))
                        mal.append(float(full["malignant"]))
                        feats.append(truth_features(full["class"], str(full.get("subtype", "")),
                                                    float(full["diameter_mm"])))
                        sizes.append(float(les.get("diameter_mm", np.nan)))
        rep: dict[str, Any] = {"data": str(data), "n_clips": len(gts), "precision": precision,
                               "backend": backend, "synthetic_only": True,
                               "excluded_quality": list(SKIP_QUALITY)}
        if frame_rt is not None:
            rep["frame"] = {"model": frame_id, "sha256": frame_rt.card.sha256[:12],
                            **detection_report(det_frames, dices, max_fp_per_frame),
                            "steatosis_frame_accuracy": M.accuracy(steat_true, steat_pred),
                            "steatosis_confusion": M.confusion_matrix(
                                steat_true, steat_pred, 4).tolist() if steat_true else []}
            if steat_true:
                plot_confusion(np.asarray(rep["frame"]["steatosis_confusion"]),
                               ["S0", "S1", "S2", "S3"], out / "steatosis_confusion.png",
                               f"{frame_id} {precision}: steatosis (frame level)")
        if cls_rt is not None and crops:
            arr = np.stack(crops)
            probs = predict_crops(cls_rt, arr)
            crep = classifier_report(probs["type_probs"], probs["malignancy"],
                                     probs["feature_probs"], np.asarray(t_idx), np.asarray(mal),
                                     np.stack(feats), np.asarray(sizes), n_boot)
            rep["classifier"] = {"model": classifier_id, "sha256": cls_rt.card.sha256[:12],
                                 **crep}
            classifier_plots(crep, probs, np.asarray(t_idx), np.asarray(mal), out,
                             "classifier", f"{classifier_id} {precision}")
    finally:
        for rt in (frame_rt, cls_rt):
            if rt is not None:
                rt.close()
    write_json(out / "eval.json", rep)
    return rep


def summary_lines(rep: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of an eval report (printed by ``sonoflow eval``)."""
    out: dict[str, Any] = {}
    c = rep.get("classifier")
    if c:
        if "type" in c:
            out["classifier_type_accuracy"] = c["type"]["accuracy"]
            out["classifier_malignancy_auc"] = c["malignancy"]["auc"]
        else:
            out["classifier_malignancy_auc"] = c["auc"]
    f = rep.get("frame")
    if f:
        out["frame_ap50"] = f["ap50"]
        out["frame_recall_at_fp_budget"] = {k: v["recall"]
                                            for k, v in f["operating_point"]["recall"].items()}
        out["frame_dice_mean"] = f["dice_mean"]
        if "steatosis_frame_accuracy" in f:
            out["steatosis_frame_accuracy"] = f["steatosis_frame_accuracy"]
    if "kfold" in rep:
        out["kfold_finetuned_auc"] = rep["kfold"]["finetuned"]["auc"]
        out["kfold_synthetic_only_auc"] = rep["kfold"]["synthetic_only"]["auc"]
    return out
