"""Is a simulated lesion visible in its frame? (the "difficult" flag of the detection metrics)

The simulator labels every lesion the scan plane cuts, including lesions that lie where the
image carries no echo (beyond the penetration depth at a high frequency, in a rib or gas
shadow, outside the fan after the letterbox) and lesions whose echogenicity, at that gain and
depth, matches the parenchyma. No reader, human or network, can find those in a single frame.
Like PASCAL VOC's "difficult" boxes they are *ignored*: not a target in training (neither a
positive nor a negative), not in the recall denominator, and a detection on one is not a false
positive. The metrics report recall over all lesions beside it, so nothing is hidden.

A lesion is visible when, on the network input (uint8, 256 x 256):

* the parenchyma around it has signal: the ring around the lesion has a mean grey level
  >= ``MIN_RING_GREY`` (10 of 255), and
* it stands out: the largest of three contrasts (interior, core, rim band; each as
  ``|mean - ring mean| / ring std``) is >= ``MIN_CONTRAST`` (0.4). The rim and core terms
  keep halo ("target") lesions whose interior average matches the background.

The thresholds were set by looking at validation crops sorted by contrast (never held-out
ones); they are constants here so that training and evaluation use the same rule.
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_RING_GREY = 10.0
MIN_CONTRAST = 0.4


def _contrast(img: np.ndarray, region: np.ndarray, ring_mean: float, ring_std: float) -> float:
    if not region.any():
        return 0.0
    return abs(float(img[region].mean()) - ring_mean) / max(ring_std, 1.0)


def lesion_visibility(image: np.ndarray, lesion_ids: np.ndarray, boxes_px: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Visibility of each lesion box in one frame.

    Args:
        image: (S, S) uint8 network input.
        lesion_ids: (M, M) uint8 lesion-id map on the mask grid (0 = no lesion).
        boxes_px: (K, 4) lesion boxes in input pixels.

    Returns:
        ``(visible (K,) bool, contrast (K,) float)``; contrast is 0 where there is no signal.
    """
    S = image.shape[0]
    ids = cv2.resize(lesion_ids, (S, S), interpolation=cv2.INTER_NEAREST)
    img = image.astype(np.float32)
    any_lesion = ids > 0
    vis = np.zeros(len(boxes_px), bool)
    con = np.zeros(len(boxes_px), np.float32)
    yy, xx = np.mgrid[0:S, 0:S]
    for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes_px, np.float32).reshape(-1, 4)):
        bx0, by0 = int(np.clip(np.floor(x0), 0, S)), int(np.clip(np.floor(y0), 0, S))
        bx1, by1 = int(np.clip(np.ceil(x1), 0, S)), int(np.clip(np.ceil(y1), 0, S))
        if bx1 <= bx0 or by1 <= by0:
            continue  # outside the input
        sub = ids[by0:by1, bx0:bx1]
        found, counts = np.unique(sub[sub > 0], return_counts=True)
        if len(found):
            inside = ids == found[counts.argmax()]
        else:  # too small for the mask grid: the box's inscribed ellipse
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            rx, ry = max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
            inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
        if not inside.any():
            continue
        r_px = max(3, int(round(0.25 * max(x1 - x0, y1 - y0))))
        u8 = inside.astype(np.uint8)
        near = cv2.dilate(u8, np.ones((3, 3), np.uint8), iterations=1).astype(bool)
        far = cv2.dilate(u8, np.ones((3, 3), np.uint8), iterations=r_px + 1).astype(bool)
        ring = far & ~near & ~any_lesion
        if ring.sum() < 8:
            continue
        ring_mean, ring_std = float(img[ring].mean()), float(img[ring].std())
        if ring_mean < MIN_RING_GREY:
            continue
        er = max(1, int(round(0.3 * max(x1 - x0, y1 - y0) / 2)))
        core = cv2.erode(u8, np.ones((3, 3), np.uint8), iterations=er).astype(bool)
        rim = inside & ~core
        c = max(_contrast(img, inside, ring_mean, ring_std),
                _contrast(img, core, ring_mean, ring_std),
                _contrast(img, rim, ring_mean, ring_std))
        con[k] = c
        vis[k] = c >= MIN_CONTRAST
    return vis, con


def cache_visibility(data: dict[str, np.ndarray]) -> np.ndarray:
    """``visible`` (M,) bool for every row of a frame cache's ``boxes``."""
    b = data["boxes"]
    out = np.zeros(len(b), bool)
    for i in np.unique(b[:, 0]).astype(int):
        rows = np.nonzero(b[:, 0] == i)[0]
        out[rows] = lesion_visibility(data["image"][i], data["lesion"][i], b[rows, 1:5])[0]
    return out


def frame_visibility(frame, input_size: int = 256) -> dict[int, bool]:
    """``{lesion_id: visible}`` for the lesions of one simulated frame, judged on the network's
    view of it (the true sector letterboxed to ``input_size``, as the training cache does), so
    the frame-level metrics and the lesion-level evaluation use one rule.

    Args:
        frame: a :class:`sonoflow.stream.sim.SimFrame` (``image``, ``sector_mask``,
            ``lesion_ids``, ``truth["lesions"]`` with ``lesion_id`` and ``xyxy_px``).
        input_size: the letterbox side.
    """
    from sonoflow.models.preprocess import letterbox
    from sonoflow.training.data.sim_frames import _label_letterbox

    lesions = frame.truth.get("lesions", [])
    if not lesions:
        return {}
    ys, xs = np.nonzero(frame.sector_mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    img, lb = letterbox(frame.image, box, (input_size, input_size), valid_mask=frame.sector_mask)
    ids = _label_letterbox(frame.lesion_ids, box, lb, input_size // 2)
    boxes = np.concatenate([lb.to_input_xyxy(np.asarray(les["xyxy_px"], np.float32))
                            for les in lesions]).reshape(-1, 4)
    vis, _ = lesion_visibility(img if img.ndim == 2 else img[..., 0], ids, boxes)
    return {int(les["lesion_id"]): bool(v) for les, v in zip(lesions, vis, strict=True)}
