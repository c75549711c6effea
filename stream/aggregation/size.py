"""In-plane lesion size: long and short axis from a mask (minimum-area rectangle) or a box.

Anisotropic pixels are handled by scaling the mask's boundary points to millimetres before
fitting the rectangle, so the axes are true lengths whatever the direction of the lesion.
"""

from __future__ import annotations

import cv2
import numpy as np


def axes_from_mask(mask: np.ndarray, mm_per_px: tuple[float, float] | None
                   ) -> tuple[float, float] | None:
    """Long and short axis of the largest blob of a binary mask.

    The sides of the minimum-area rectangle around the outer contour, plus one pixel (contour
    points are pixel centres, the lesion covers the whole edge pixels).

    Args:
        mask: ``(H, W)`` bool or uint8, non-zero inside the lesion.
        mm_per_px: ``(x, y)`` pixel spacing; None gives the axes in pixels.

    Returns:
        ``(long, short)`` in mm (or px when ``mm_per_px`` is None), or None for an empty mask.
    """
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if not m.any():
        return None
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)
    sx, sy = mm_per_px if mm_per_px is not None else (1.0, 1.0)
    pts = (contour * np.array([sx, sy])).astype(np.float32)
    (_, _), (w, h), angle = cv2.minAreaRect(pts)
    # one pixel of extent along each rectangle side, in that side's direction
    t = np.deg2rad(angle)
    pad_w = float(np.hypot(sx * np.cos(t), sy * np.sin(t)))
    pad_h = float(np.hypot(sx * np.sin(t), sy * np.cos(t)))
    w, h = float(w) + pad_w, float(h) + pad_h
    return (max(w, h), min(w, h))


def axes_from_box(xyxy_px: tuple[float, float, float, float],
                  mm_per_px: tuple[float, float] | None) -> tuple[float, float]:
    """Long and short axis of an axis-aligned box (used when no mask exists).

    Args:
        xyxy_px: ``(x0, y0, x1, y1)`` in pixels.
        mm_per_px: ``(x, y)`` pixel spacing; None gives pixels.

    Returns:
        ``(long, short)`` in mm (or px).
    """
    sx, sy = mm_per_px if mm_per_px is not None else (1.0, 1.0)
    w = max(xyxy_px[2] - xyxy_px[0], 0.0) * sx
    h = max(xyxy_px[3] - xyxy_px[1], 0.0) * sy
    return (max(w, h), min(w, h))
