"""Decoding of the frame network's outputs (numpy + OpenCV; no torch).

CenterNet decode: local maxima of the centre heatmap by 3 x 3 max-pool NMS (a grey dilation),
thresholded, top-k; each peak's box from the size and offset maps; a light IoU NMS removes
the occasional double peak on a large lesion. Masks stay on the network's grid until they are
warped back onto the original frame (:meth:`Letterbox.warp_to_original`).
"""

from __future__ import annotations

import cv2
import numpy as np

from sonoflow.models.card import ModelCard
from sonoflow.models.errors import InputContractError
from sonoflow.models.outputs import Detections, FrameOutputs

FRAME_OUTPUTS = ("heatmap", "size", "offset", "lesion_mask", "liver_mask", "steatosis",
                 "fibrosis")

#: Test-time augmentation modes of the frame network: ``"none"`` (one pass) or ``"hflip"`` (the
#: frame and its lateral mirror, merged by :func:`merge_hflip`). Each mode has its own heatmap
#: threshold in the card (:func:`heatmap_threshold_key`): averaging two passes changes the
#: score distribution, so a threshold chosen for one mode does not hold for the other.
TTA_MODES = ("none", "hflip")


def heatmap_threshold_key(tta: str) -> str:
    """The card ``thresholds`` key of a TTA mode's heatmap threshold."""
    if tta not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {tta!r}; expected one of {TTA_MODES}")
    return "heatmap" if tta == "none" else f"heatmap_{tta}"


def merge_hflip(plain: dict[str, np.ndarray], mirrored: dict[str, np.ndarray]
                ) -> dict[str, np.ndarray]:
    """Merge the frame network's outputs on a batch and on its lateral mirror (``x[..., ::-1]``).

    Maps (heatmap, size, masks) are mirrored back and averaged; the class vectors (steatosis,
    fibrosis) are averaged. The sub-cell ``offset`` comes from the plain pass only: mirroring
    moves a centre to the other side of its cell, so the two offset maps do not average.
    Lateral mirroring is the one flip that keeps ultrasound physics: the beam still runs down,
    so posterior enhancement and shadows stay below their cause.
    """
    out = dict(plain)
    for k in ("heatmap", "size", "lesion_mask", "liver_mask"):
        out[k] = 0.5 * (plain[k] + mirrored[k][..., ::-1])
    for k in ("steatosis", "fibrosis"):
        out[k] = 0.5 * (plain[k] + mirrored[k])
    return out


def heatmap_peaks(heatmap: np.ndarray, threshold: float, max_peaks: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local maxima of a (h, w) heatmap via 3 x 3 max-pool NMS.

    Returns:
        ``(ys, xs, scores)``, sorted by score descending, at most ``max_peaks``.
    """
    hm = np.ascontiguousarray(heatmap, np.float32)
    pooled = cv2.dilate(hm, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero((hm >= pooled) & (hm >= threshold))
    scores = hm[ys, xs]
    order = np.argsort(-scores, kind="stable")[:max_peaks]
    return ys[order], xs[order], scores[order]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between (N, 4) and (M, 4) xyxy boxes -> (N, M)."""
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS. Returns kept indices in descending score order."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while len(order):
        i = order[0]
        keep.append(int(i))
        if len(order) == 1:
            break
        ious = box_iou(boxes[i:i + 1], boxes[order[1:]])[0]
        order = order[1:][ious < iou_threshold]
    return np.asarray(keep, np.int64)


def decode_detections(heatmap: np.ndarray, size: np.ndarray, offset: np.ndarray,
                      stride: float, threshold: float, max_detections: int = 20,
                      iou_threshold: float = 0.5) -> Detections:
    """CenterNet boxes in model-input pixels.

    Args:
        heatmap: (h, w) centre probabilities.
        size: (2, h, w) box width, height in input pixels.
        offset: (2, h, w) sub-cell centre offset (x, y) in cells, [0, 1).
        stride: input pixels per heatmap cell.
        threshold: minimum peak value.
        max_detections: top-k.
        iou_threshold: NMS IoU.

    Returns:
        :class:`Detections` in input pixels.
    """
    ys, xs, scores = heatmap_peaks(heatmap, threshold, max_detections)
    if len(ys) == 0:
        return Detections.empty()
    cx = (xs + offset[0, ys, xs]) * stride
    cy = (ys + offset[1, ys, xs]) * stride
    w, h = size[0, ys, xs], size[1, ys, xs]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    keep = nms(boxes, scores, iou_threshold)
    return Detections(boxes[keep], scores[keep], np.stack([cx, cy], axis=1)[keep])


def decode_frame(outputs: dict[str, np.ndarray], card: ModelCard, index: int = 0,
                 threshold: float | None = None) -> FrameOutputs:
    """Decode one item of a frame-network batch.

    Args:
        outputs: the runtime's outputs (names :data:`FRAME_OUTPUTS`).
        card: the frame model's card (input size, ``thresholds["heatmap"]``,
            ``thresholds["max_detections"]``, ``thresholds["nms_iou"]``).
        index: batch item.
        threshold: heatmap threshold (default: the card's).

    Returns:
        :class:`FrameOutputs` in model-input pixels.

    Raises:
        InputContractError: an output is missing.
    """
    missing = [k for k in FRAME_OUTPUTS if k not in outputs]
    if missing:
        raise InputContractError(f"{card.id}: frame outputs {missing} missing; got "
                                 f"{sorted(outputs)}")
    hm = outputs["heatmap"][index, 0]
    stride = card.input.width / hm.shape[1]
    thr = card.thresholds.get("heatmap", 0.3) if threshold is None else threshold
    dets = decode_detections(hm, outputs["size"][index], outputs["offset"][index], stride,
                             float(thr), int(card.thresholds.get("max_detections", 20)),
                             float(card.thresholds.get("nms_iou", 0.5)))
    return FrameOutputs(dets, outputs["lesion_mask"][index, 0], outputs["liver_mask"][index, 0],
                        outputs["steatosis"][index].astype(np.float32),
                        outputs["fibrosis"][index].astype(np.float32))


def instance_mask(lesion: np.ndarray, boxes_xyxy_px: np.ndarray) -> np.ndarray:
    """Split a binary lesion mask into detection instances.

    Each lesion pixel inside a detection's box gets that detection's id (1-based, in the
    given order, so pass boxes by descending confidence: the first box wins overlaps); lesion
    pixels outside every box stay 0 (they are not a detection).

    Args:
        lesion: (H, W) bool.
        boxes_xyxy_px: (N, 4) boxes in the same pixels, N <= 255.

    Returns:
        (H, W) uint8 with values 0..N.
    """
    out = np.zeros(lesion.shape, np.uint8)
    H, W = lesion.shape
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes_xyxy_px)[:255]):
        c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        c1, r1 = min(int(np.ceil(x1)), W), min(int(np.ceil(y1)), H)
        if c1 <= c0 or r1 <= r0:
            continue
        sub = out[r0:r1, c0:c1]
        sub[(sub == 0) & lesion[r0:r1, c0:c1]] = i + 1
    return out


def mask_instances(lesion: np.ndarray, boxes_xyxy_px: np.ndarray, max_scale: float = 2.5
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instances from the lesion mask's connected components, boxes refined to them.

    Per detection, in the given order (descending confidence): the 8-connected component of
    ``lesion`` holding most of the lesion pixels inside the detection's box becomes that
    detection's instance, whole (not clipped to the box), and the box becomes the component's
    bounding box. A detection keeps its own box, and gets the lesion pixels inside it that no
    earlier detection took (as :func:`instance_mask`), when: no lesion pixel lies in its box,
    the component is already taken by an earlier detection (a duplicate peak on one lesion),
    or the component's box differs from the detection's by more than ``max_scale`` in width or
    height (the mask has run into something else, or is a fragment of the lesion).

    Why: the size head's boxes are the network's least accurate output on large lesions
    (boxes half the lesion's extent were seen on simulator clips), while the mask's Dice is
    0.8; a box cut from the mask also gives the classifier its crop and the tracker its IoU.

    Args:
        lesion: (H, W) bool.
        boxes_xyxy_px: (N, 4) boxes in the same pixels; only the first 255 get instances
            (and can be refined).
        max_scale: largest accepted ratio between the two boxes' widths (and heights).

    Returns:
        ``(ids, boxes, refined)``: (H, W) uint8 instance ids 1..N (0 = none), the (N, 4)
        float boxes, and an (N,) bool, True where the box was replaced by its component's.
    """
    boxes = np.array(boxes_xyxy_px, dtype=np.float64).reshape(-1, 4)
    out = np.zeros(lesion.shape, np.uint8)
    refined = np.zeros(len(boxes), bool)
    if not len(boxes) or not lesion.any():
        return out, boxes, refined
    n, labels, stats, _ = cv2.connectedComponentsWithStats(lesion.astype(np.uint8),
                                                           connectivity=8)
    H, W = lesion.shape
    taken = np.zeros(n, bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes[:255]):  # ids are uint8
        c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        c1, r1 = min(int(np.ceil(x1)), W), min(int(np.ceil(y1)), H)
        if c1 <= c0 or r1 <= r0:
            continue
        counts = np.bincount(labels[r0:r1, c0:c1].ravel(), minlength=n)
        counts[0] = 0
        k = int(counts.argmax())
        if counts[k] and not taken[k]:
            cx, cy, cw, ch = (int(v) for v in stats[k, :4])
            bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
            if (1 / max_scale <= cw / bw <= max_scale) and (1 / max_scale <= ch / bh <= max_scale):
                taken[k] = True
                sub = out[cy:cy + ch, cx:cx + cw]
                sub[(sub == 0) & (labels[cy:cy + ch, cx:cx + cw] == k)] = i + 1
                boxes[i] = (cx, cy, cx + cw, cy + ch)
                refined[i] = True
                continue
        sub = out[r0:r1, c0:c1]
        sub[(sub == 0) & lesion[r0:r1, c0:c1]] = i + 1
    return out, boxes, refined
