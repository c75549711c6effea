"""Key-frame thumbnails: a crop of the frame around a lesion with its mask contour drawn."""

from __future__ import annotations

import cv2
import numpy as np

# Okabe-Ito orange: visible on grey B-mode and for colour-blind readers.
CONTOUR_RGB = (230, 159, 0)
BOX_RGB = (86, 180, 233)  # Okabe-Ito sky blue, drawn when there is no mask


def lesion_thumbnail(image: np.ndarray, xyxy_px: tuple[float, float, float, float],
                     mask: np.ndarray | None, size_px: int = 160,
                     margin: float = 0.6) -> np.ndarray:
    """Crop ``image`` around a lesion, draw its outline, and scale to ``size_px``.

    Never modifies ``image`` (it may be a read-only wire buffer).

    Args:
        image: ``(H, W)`` grey or ``(H, W, 3)`` RGB uint8 frame.
        xyxy_px: lesion box in original-frame pixels.
        mask: ``(H, W)`` bool lesion mask, or None (then the box is drawn).
        size_px: side of the square thumbnail.
        margin: context around the box, as a fraction of the box's larger side on each side.

    Returns:
        ``(size_px, size_px, 3)`` uint8 RGB.
    """
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in xyxy_px)
    side = max(x1 - x0, y1 - y0, 8.0) * (1.0 + 2.0 * margin)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    ax0 = int(np.clip(round(cx - side / 2), 0, w - 1))
    ay0 = int(np.clip(round(cy - side / 2), 0, h - 1))
    ax1 = int(np.clip(round(cx + side / 2), ax0 + 1, w))
    ay1 = int(np.clip(round(cy + side / 2), ay0 + 1, h))
    crop = np.array(image[ay0:ay1, ax0:ax1], dtype=np.uint8)  # a writable copy
    if crop.ndim == 2:
        crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB)
    scale = size_px / max(crop.shape[0], crop.shape[1])
    out_w = max(int(round(crop.shape[1] * scale)), 1)
    out_h = max(int(round(crop.shape[0] * scale)), 1)
    crop = cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    thickness = max(1, size_px // 80)
    if mask is not None and np.any(mask[ay0:ay1, ax0:ax1]):
        m = np.ascontiguousarray(mask[ay0:ay1, ax0:ax1], dtype=np.uint8)
        m = cv2.resize(m, (out_w, out_h), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(crop, contours, -1, CONTOUR_RGB, thickness, cv2.LINE_AA)
    else:
        p0 = (int(round((x0 - ax0) * scale)), int(round((y0 - ay0) * scale)))
        p1 = (int(round((x1 - ax0) * scale)), int(round((y1 - ay0) * scale)))
        cv2.rectangle(crop, p0, p1, BOX_RGB, thickness, cv2.LINE_AA)
    canvas = np.zeros((size_px, size_px, 3), dtype=np.uint8)
    oy, ox = (size_px - out_h) // 2, (size_px - out_w) // 2
    canvas[oy:oy + out_h, ox:ox + out_w] = crop
    return canvas
