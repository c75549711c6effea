"""Evaluation metrics as pure numpy functions (no torch, no I/O, no global state).

Conventions used throughout:

* Boxes are ``xyxy_px`` float arrays of shape (N, 4) in pixels, ``x1 > x0`` and ``y1 > y0``
  (exclusive corner convention: a box ``[0, 0, 10, 10]`` covers 100 px^2).
* A detection set for one frame is a pair ``(boxes (N, 4), scores (N,))``; ground truth for one
  frame is ``boxes (M, 4)`` with, optionally, per-box sizes in mm (M,).
* Labels are integer class indices; probabilities are float arrays in [0, 1].
* Every function is deterministic; bootstrap functions take an explicit ``seed``.

Metrics that are undefined for the given data (an AUC with no positives, a precision with no
predicted positives) return ``None`` or ``nan`` as documented, never a made-up value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# Size bins for detection recall (US LI-RADS: observations < 10 mm are subthreshold).
SIZE_BINS_MM: tuple[tuple[str, float, float], ...] = (
    ("lt10mm", 0.0, 10.0),
    ("ge10mm", 10.0, math.inf),
)


# --------------------------------------------------------------------------------- boxes ----


def box_iou(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """Pairwise intersection-over-union of two box sets.

    Args:
        a_xyxy: (N, 4) boxes in pixels.
        b_xyxy: (M, 4) boxes in pixels.

    Returns:
        (N, M) float64 IoU matrix; 0 where either box has no area.
    """
    a = np.asarray(a_xyxy, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b_xyxy, dtype=np.float64).reshape(-1, 4)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match_detections(pred_xyxy: np.ndarray, pred_scores: np.ndarray, gt_xyxy: np.ndarray,
                     iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching of one frame's detections to its ground truth (VOC style).

    Detections are visited by descending score; each takes the unmatched ground-truth box with
    the highest IoU if that IoU is >= ``iou_threshold``.

    Args:
        pred_xyxy: (N, 4) detected boxes, pixels.
        pred_scores: (N,) detection confidences.
        gt_xyxy: (M, 4) ground-truth boxes, pixels.
        iou_threshold: minimum IoU for a true positive.

    Returns:
        ``(pred_to_gt (N,) int64, gt_to_pred (M,) int64)``: the matched index or -1.
    """
    pred = np.asarray(pred_xyxy, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    gt = np.asarray(gt_xyxy, dtype=np.float64).reshape(-1, 4)
    pred_to_gt = np.full(len(pred), -1, dtype=np.int64)
    gt_to_pred = np.full(len(gt), -1, dtype=np.int64)
    if len(pred) == 0 or len(gt) == 0:
        return pred_to_gt, gt_to_pred
    iou = box_iou(pred, gt)
    for i in np.argsort(-scores, kind="stable"):
        candidates = np.where(gt_to_pred < 0, iou[i], -1.0)
        j = int(np.argmax(candidates))
        if candidates[j] >= iou_threshold:
            pred_to_gt[i] = j
            gt_to_pred[j] = i
    return pred_to_gt, gt_to_pred


@dataclass(frozen=True)
class FrameDetections:
    """One frame's detections and ground truth for the detection metrics.

    Attributes:
        pred_xyxy: (N, 4) detected boxes, pixels.
        pred_scores: (N,) confidences in [0, 1].
        gt_xyxy: (M, 4) ground-truth boxes, pixels.
        gt_size_mm: (M,) lesion size in mm (in-plane diameter), or None when uncalibrated.
    """

    pred_xyxy: np.ndarray
    pred_scores: np.ndarray
    gt_xyxy: np.ndarray
    gt_size_mm: np.ndarray | None = None


def _scored_matches(frames: Sequence[FrameDetections], iou_threshold: float):
    """Flatten per-frame matches: (scores, is_tp, gt_best_score per gt, gt sizes, n_frames)."""
    scores, is_tp, gt_hit_score, gt_sizes = [], [], [], []
    for f in frames:
        p2g, g2p = match_detections(f.pred_xyxy, f.pred_scores, f.gt_xyxy, iou_threshold)
        s = np.asarray(f.pred_scores, dtype=np.float64).reshape(-1)
        scores.append(s)
        is_tp.append(p2g >= 0)
        # Score at which each gt box is found (its matched detection's score), -inf if never.
        gt_hit_score.append(np.where(g2p >= 0, s[np.clip(g2p, 0, None)] if len(s) else -np.inf,
                                     -np.inf))
        n_gt = len(np.asarray(f.gt_xyxy).reshape(-1, 4))
        sizes = (np.full(n_gt, np.nan) if f.gt_size_mm is None
                 else np.asarray(f.gt_size_mm, dtype=np.float64).reshape(-1))
        gt_sizes.append(sizes)
    def cat(xs, dt):
        return np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)

    return (cat(scores, np.float64), cat(is_tp, bool), cat(gt_hit_score, np.float64),
            cat(gt_sizes, np.float64), len(frames))


def average_precision(frames: Sequence[FrameDetections], iou_threshold: float = 0.5) -> float:
    """Detection average precision (all-point interpolated, VOC 2010+) at one IoU threshold.

    Matching is greedy per frame (see :func:`match_detections`), so a detection matched at a
    high threshold is not re-matched at a lower one. AP50 is ``iou_threshold=0.5``.

    Args:
        frames: per-frame detections and ground truth.
        iou_threshold: IoU for a true positive.

    Returns:
        AP in [0, 1]; ``nan`` when there is no ground-truth box at all.
    """
    scores, is_tp, gt_hit, _, _ = _scored_matches(frames, iou_threshold)
    n_gt = len(gt_hit)
    if n_gt == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(is_tp[order])
    fp = np.cumsum(~is_tp[order])
    recall = tp / n_gt
    precision = tp / np.maximum(tp + fp, 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def false_positives_per_frame(frames: Sequence[FrameDetections], score_threshold: float,
                              iou_threshold: float = 0.5) -> float:
    """Unmatched detections with score >= ``score_threshold``, divided by the frame count.

    Args:
        frames: per-frame detections and ground truth (frames without lesions count too).
        score_threshold: detections below it are discarded first.
        iou_threshold: IoU for a true positive.

    Returns:
        False positives per frame; ``nan`` for an empty frame list.
    """
    if not frames:
        return float("nan")
    n_fp = 0
    for f in frames:
        s = np.asarray(f.pred_scores, dtype=np.float64).reshape(-1)
        keep = s >= score_threshold
        p2g, _ = match_detections(np.asarray(f.pred_xyxy).reshape(-1, 4)[keep], s[keep],
                                  f.gt_xyxy, iou_threshold)
        n_fp += int(np.sum(p2g < 0))
    return n_fp / len(frames)


def threshold_for_fp_rate(frames: Sequence[FrameDetections], max_fp_per_frame: float,
                          iou_threshold: float = 0.5) -> float:
    """Lowest score threshold whose false positives per frame stay <= ``max_fp_per_frame``.

    Args:
        frames: per-frame detections and ground truth.
        max_fp_per_frame: allowed false positives per frame (e.g. 0.1).
        iou_threshold: IoU for a true positive.

    Returns:
        The threshold (a detection score); ``inf`` if even the top detection is a false positive
        beyond the budget, ``-inf`` when there are no false positives at all.
    """
    scores, is_tp, _, _, n_frames = _scored_matches(frames, iou_threshold)
    if n_frames == 0:
        return float("inf")
    fp_scores = np.sort(scores[~is_tp])[::-1]
    allowed = int(math.floor(max_fp_per_frame * n_frames + 1e-9))
    if len(fp_scores) <= allowed:
        return float("-inf")
    # Keep strictly above the (allowed+1)-th highest false-positive score.
    return float(np.nextafter(fp_scores[allowed], np.inf))


def recall_by_size(frames: Sequence[FrameDetections], score_threshold: float,
                   iou_threshold: float = 0.5,
                   size_bins_mm: Sequence[tuple[str, float, float]] = SIZE_BINS_MM
                   ) -> dict[str, dict[str, float | int]]:
    """Detection recall per lesion-size bin at one score threshold.

    Args:
        frames: per-frame detections and ground truth with ``gt_size_mm``.
        score_threshold: detections below it are ignored.
        iou_threshold: IoU for a true positive.
        size_bins_mm: ``(name, lo_mm, hi_mm)``; a lesion falls in a bin when lo <= size < hi.

    Returns:
        ``{bin: {"recall": float|nan, "found": int, "total": int}}`` plus an ``"all"`` bin.
        Lesions without a size count only in ``"all"``.
    """
    _, _, gt_hit, sizes, _ = _scored_matches(frames, iou_threshold)
    found = gt_hit >= score_threshold
    out: dict[str, dict[str, float | int]] = {}
    for name, lo, hi in (*size_bins_mm, ("all", -math.inf, math.inf)):
        sel = np.ones(len(sizes), bool) if name == "all" else (sizes >= lo) & (sizes < hi)
        total = int(sel.sum())
        hit = int(found[sel].sum())
        out[name] = {"recall": hit / total if total else float("nan"), "found": hit, "total": total}
    return out


def recall_at_fp_rate(frames: Sequence[FrameDetections], max_fp_per_frame: float = 0.1,
                      iou_threshold: float = 0.5,
                      size_bins_mm: Sequence[tuple[str, float, float]] = SIZE_BINS_MM) -> dict:
    """Recall by lesion size at the operating point with <= ``max_fp_per_frame`` FP/frame.

    Returns:
        ``{"score_threshold", "fp_per_frame", "max_fp_per_frame", "recall": {bin: ...}}``.
    """
    thr = threshold_for_fp_rate(frames, max_fp_per_frame, iou_threshold)
    return {
        "score_threshold": thr,
        "max_fp_per_frame": max_fp_per_frame,
        "fp_per_frame": false_positives_per_frame(frames, thr, iou_threshold),
        "recall": recall_by_size(frames, thr, iou_threshold, size_bins_mm),
    }


# --------------------------------------------------------------------------------- masks ----


def dice(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float:
    """Sørensen–Dice coefficient of two binary masks of the same shape.

    Args:
        pred_mask: (H, W) bool or 0/nonzero array.
        gt_mask: (H, W) bool or 0/nonzero array.

    Returns:
        2|A∩B| / (|A|+|B|); 1.0 when both masks are empty (nothing to find, nothing found).

    Raises:
        ValueError: when the shapes differ.
    """
    p = np.asarray(pred_mask).astype(bool)
    g = np.asarray(gt_mask).astype(bool)
    if p.shape != g.shape:
        raise ValueError(f"dice: mask shapes differ: pred {p.shape} vs gt {g.shape}; "
                         "resize the prediction to the ground-truth frame first")
    denom = int(p.sum()) + int(g.sum())
    if denom == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, g).sum()) / denom


# ---------------------------------------------------------------------- classification -----


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix, rows = true class, columns = predicted class.

    Args:
        y_true: (N,) int class indices in [0, n_classes).
        y_pred: (N,) int class indices in [0, n_classes).
        n_classes: number of classes.

    Returns:
        (n_classes, n_classes) int64 counts.

    Raises:
        ValueError: when a label lies outside [0, n_classes).
    """
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    for name, v in (("y_true", t), ("y_pred", p)):
        if len(v) and (v.min() < 0 or v.max() >= n_classes):
            raise ValueError(f"confusion_matrix: {name} has labels in [{v.min()}, {v.max()}], "
                             f"expected [0, {n_classes - 1}]")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def fbeta(precision: float, recall: float, beta: float) -> float:
    """F-beta from precision and recall; ``nan`` if either is nan, 0 if both are 0."""
    if math.isnan(precision) or math.isnan(recall):
        return float("nan")
    b2 = beta * beta
    denom = b2 * precision + recall
    return (1 + b2) * precision * recall / denom if denom > 0 else 0.0


def precision_recall_f(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall, F1 and F2 from counts (``nan`` where a denominator is 0)."""
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    return {"precision": precision, "recall": recall, "f1": fbeta(precision, recall, 1.0),
            "f2": fbeta(precision, recall, 2.0)}


def per_class_prf(cm: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per-class precision/recall/F1/F2 (one-vs-rest) from a confusion matrix.

    Args:
        cm: (K, K) confusion matrix, rows true, columns predicted.
        class_names: K names.

    Returns:
        ``{name: {"precision", "recall", "f1", "f2", "support"}}``.
    """
    cm = np.asarray(cm)
    out = {}
    for k, name in enumerate(class_names):
        tp = int(cm[k, k])
        fp = int(cm[:, k].sum()) - tp
        fn = int(cm[k, :].sum()) - tp
        out[name] = {**precision_recall_f(tp, fp, fn), "support": int(cm[k, :].sum())}
    return out


def binary_prf(y_true: np.ndarray, y_score: np.ndarray, threshold: float = 0.5) -> dict:
    """Precision/recall/F1/F2 of the rule ``score >= threshold`` against 0/1 labels."""
    t = np.asarray(y_true).astype(bool).reshape(-1)
    p = np.asarray(y_score, dtype=np.float64).reshape(-1) >= threshold
    tp = int(np.sum(t & p))
    fp = int(np.sum(~t & p))
    fn = int(np.sum(t & ~p))
    return {**precision_recall_f(tp, fp, fn), "threshold": threshold}


def roc_curve(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Receiver operating characteristic over every distinct score.

    Args:
        y_true: (N,) 0/1 labels.
        y_score: (N,) scores, higher = more positive.

    Returns:
        ``(fpr, tpr, thresholds)``, each (T+1,), starting at (0, 0) with threshold +inf.

    Raises:
        ValueError: when y_true lacks positives or negatives (the curve is undefined).
    """
    t = np.asarray(y_true).astype(bool).reshape(-1)
    s = np.asarray(y_score, dtype=np.float64).reshape(-1)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_curve: need positives and negatives, got {n_pos} positives and "
                         f"{n_neg} negatives")
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    last_of_run = np.r_[np.where(np.diff(s) != 0)[0], len(s) - 1]
    tps = np.cumsum(t)[last_of_run]
    fps = (last_of_run + 1) - tps
    return (np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos], np.r_[np.inf, s[last_of_run]])


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann–Whitney U with ties counted 1/2).

    Returns:
        AUC in [0, 1], or ``None`` when the labels lack positives or negatives.
    """
    t = np.asarray(y_true).astype(bool).reshape(-1)
    s = np.asarray(y_score, dtype=np.float64).reshape(-1)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    from scipy.stats import rankdata  # scipy is a runtime dependency; import kept local

    ranks = rankdata(s)
    u = ranks[t].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def bootstrap_ci(metric: Callable[[np.ndarray, np.ndarray], float | None], y_true: np.ndarray,
                 y_score: np.ndarray, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0) -> dict[str, float | int | None]:
    """Percentile bootstrap confidence interval of ``metric(y_true, y_score)``.

    Cases are resampled with replacement; resamples on which the metric is undefined (``None``
    or nan, e.g. an AUC draw without positives) are skipped and counted.

    Args:
        metric: function of (labels, scores) returning a float or None.
        y_true: (N,) labels.
        y_score: (N,) or (N, K) scores.
        n_boot: number of resamples.
        alpha: 1 - confidence level (0.05 gives a 95 % interval).
        seed: RNG seed (the interval is reproducible).

    Returns:
        ``{"value", "ci_low", "ci_high", "n_boot_valid", "n"}``; the bounds are ``None`` when
        fewer than 10 resamples were valid.
    """
    t = np.asarray(y_true)
    s = np.asarray(y_score)
    value = metric(t, s)
    rng = np.random.default_rng(seed)
    stats = []
    n = len(t)
    for _ in range(n_boot if n else 0):
        idx = rng.integers(0, n, n)
        v = metric(t[idx], s[idx])
        if v is not None and not math.isnan(v):
            stats.append(v)
    lo = hi = None
    if len(stats) >= 10:
        lo = float(np.quantile(stats, alpha / 2))
        hi = float(np.quantile(stats, 1 - alpha / 2))
    return {"value": None if value is None else float(value), "ci_low": lo, "ci_high": hi,
            "n_boot_valid": len(stats), "n": int(n)}


def per_class_auc(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                  n_boot: int = 2000, seed: int = 0) -> dict[str, dict]:
    """One-vs-rest ROC AUC per class with a bootstrap 95 % CI.

    Args:
        y_true: (N,) int class indices.
        probs: (N, K) class probabilities.
        class_names: K names.
        n_boot: bootstrap resamples per class.
        seed: RNG seed.

    Returns:
        ``{name: {"value", "ci_low", "ci_high", "n_boot_valid", "n", "n_pos"}}``; ``value`` is
        None for a class without positives or negatives in ``y_true``.
    """
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(probs, dtype=np.float64)
    out = {}
    for k, name in enumerate(class_names):
        res = bootstrap_ci(roc_auc, (t == k).astype(np.int64), p[:, k], n_boot=n_boot,
                           seed=seed + k)
        res["n_pos"] = int(np.sum(t == k))
        out[name] = res
    return out


def calibration_curve(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = 10) -> dict:
    """Reliability diagram data and expected calibration error (equal-width bins).

    Args:
        y_true: (N,) 0/1 outcomes.
        y_prob: (N,) predicted probabilities in [0, 1].
        n_bins: number of equal-width bins over [0, 1].

    Returns:
        ``{"bin_edges" (n_bins+1), "mean_predicted" (n_bins, nan if empty),
        "observed_fraction" (n_bins, nan if empty), "count" (n_bins), "ece"}`` as lists.
    """
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.clip(np.asarray(y_prob, dtype=np.float64).reshape(-1), 0.0, 1.0)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    sum_p = np.bincount(which, weights=p, minlength=n_bins)
    sum_t = np.bincount(which, weights=t, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(count > 0, sum_p / count, np.nan)
        frac = np.where(count > 0, sum_t / count, np.nan)
    ece = float(np.nansum(count * np.abs(mean_p - frac)) / len(t)) if len(t) else float("nan")
    return {"bin_edges": edges.tolist(), "mean_predicted": mean_p.tolist(),
            "observed_fraction": frac.tolist(), "count": count.astype(int).tolist(), "ece": ece}


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of equal labels; ``nan`` for empty input."""
    t = np.asarray(y_true).reshape(-1)
    p = np.asarray(y_pred).reshape(-1)
    return float(np.mean(t == p)) if len(t) else float("nan")
