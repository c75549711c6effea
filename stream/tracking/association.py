"""Box similarity and optimal assignment for the tracker.

Similarity blends IoU with a centre-distance term. IoU alone fails on ultrasound sweeps: a
lesion re-entering the imaging plane first shows a small cross-section inside where the large
one was, so the boxes overlap little although the centres agree.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def iou_matrix(a_xyxy_px: np.ndarray, b_xyxy_px: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes; returns ``(N, M)`` in [0, 1]."""
    a = np.asarray(a_xyxy_px, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b_xyxy_px, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def centre_proximity(a_xyxy_px: np.ndarray, b_xyxy_px: np.ndarray,
                     gate_scale: float) -> np.ndarray:
    """Pairwise centre proximity in [0, 1]: ``max(0, 1 - d / gate)``.

    ``d`` is the centre distance (px) and ``gate = gate_scale * max(size_a, size_b)``, where
    size is the larger box side, so the gate grows with the lesion.

    Returns:
        ``(N, M)`` array; 1 for coincident centres, 0 beyond the gate.
    """
    a = np.asarray(a_xyxy_px, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b_xyxy_px, dtype=np.float64).reshape(-1, 4)
    ca = (a[:, :2] + a[:, 2:]) / 2.0
    cb = (b[:, :2] + b[:, 2:]) / 2.0
    d = np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=-1)
    size_a = np.max(a[:, 2:] - a[:, :2], axis=1)
    size_b = np.max(b[:, 2:] - b[:, :2], axis=1)
    gate = gate_scale * np.maximum(np.maximum(size_a[:, None], size_b[None, :]), 1.0)
    return np.clip(1.0 - d / gate, 0.0, 1.0)


def similarity(a_xyxy_px: np.ndarray, b_xyxy_px: np.ndarray, iou_weight: float,
               gate_scale: float) -> np.ndarray:
    """``iou_weight * IoU + (1 - iou_weight) * centre proximity``; ``(N, M)`` in [0, 1]."""
    return (iou_weight * iou_matrix(a_xyxy_px, b_xyxy_px)
            + (1.0 - iou_weight) * centre_proximity(a_xyxy_px, b_xyxy_px, gate_scale))


def assign(sim: np.ndarray, min_similarity: float) -> tuple[list[tuple[int, int]], list[int],
                                                               list[int]]:
    """Maximum-similarity one-to-one assignment (Hungarian), keeping pairs above a floor.

    Args:
        sim: ``(N, M)`` similarity of rows (tracks) to columns (detections).
        min_similarity: pairs below this are not matched.

    Returns:
        ``(matches, unmatched_rows, unmatched_cols)``; ``matches`` holds ``(row, col)`` pairs.
    """
    n, m = sim.shape
    if n == 0 or m == 0:
        return [], list(range(n)), list(range(m))
    rows, cols = linear_sum_assignment(-sim)
    matches = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if sim[r, c] >= min_similarity]
    matched_r = {r for r, _ in matches}
    matched_c = {c for _, c in matches}
    return (matches, [r for r in range(n) if r not in matched_r],
            [c for c in range(m) if c not in matched_c])
