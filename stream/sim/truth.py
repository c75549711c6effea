"""Ground-truth entries: per-frame lesion boxes and sizes from the rendered masks, and the clip
document (``"schema": "sonoflow.sim/1"``) documented in docs/simulator.md.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from sonoflow.stream.sim import config


def lesion_entries(ids_hw: np.ndarray, case, y_plane_mm: float,
                   mm_per_px: float, candidates: list[int] | None = None) -> list[dict[str, Any]]:
    """Truth of every lesion visible in one frame, measured on the scan-converted mask.

    Args:
        ids_hw: ``(H, W)`` uint8 instance mask after scan conversion.
        case: the case (lesion classes, 3-D sizes).
        y_plane_mm: elevational position of the plane (for the visible fraction).
        mm_per_px: isotropic pixel spacing.
        candidates: ids that may be present (the lesions cut by the plane); None = all.

    Returns:
        One dict per lesion with at least one pixel: ``lesion_id``, ``class``, ``malignant``,
        ``xyxy_px`` (exclusive max, from the mask), ``diameter_mm`` (in-plane long axis of the
        mask's equivalent ellipse), ``short_axis_mm``, ``area_px``, ``area_mm2``,
        ``diameter_3d_mm``, ``visible_fraction`` (cut area / equatorial area), ``subthreshold``,
        ``lirads_category``, ``centroid_px``.
    """
    out = []
    by_id = {les.lesion_id: les for les in case.lesions}
    for lid in sorted(by_id if candidates is None else candidates):
        les = by_id[int(lid)]
        mask = (ids_hw == lid).astype(np.uint8)
        if not mask.any():
            continue
        x, y, w, h = cv2.boundingRect(mask)
        m = cv2.moments(mask, binaryImage=True)
        area = m["m00"]
        lam1 = lam2 = 0.0
        if area > 0:
            a, b, c = m["mu20"] / area, m["mu11"] / area, m["mu02"] / area
            tr, det = a + c, a * c - b * b
            disc = max(tr * tr / 4 - det, 0.0) ** 0.5
            lam1, lam2 = tr / 2 + disc, max(tr / 2 - disc, 0.0)
        # A uniform ellipse with semi-axes (p, q) has second moments (p^2/4, q^2/4).
        eq_px = 2.0 * (area / np.pi) ** 0.5  # floor for masks of a few pixels
        long_px = max(4.0 * lam1 ** 0.5, eq_px)
        short_px = min(4.0 * lam2 ** 0.5, long_px)
        yn = (y_plane_mm - les.center[1]) / les.axes[1]
        out.append({
            "lesion_id": int(lid),
            "class": les.cls,
            "malignant": les.malignant,
            "xyxy_px": [int(x), int(y), int(x + w), int(y + h)],
            "diameter_mm": round(long_px * mm_per_px, 3),
            "short_axis_mm": round(short_px * mm_per_px, 3),
            "area_px": int(area),
            "area_mm2": round(area * mm_per_px * mm_per_px, 3),
            "centroid_px": [round(m["m10"] / area, 2), round(m["m01"] / area, 2)],
            "diameter_3d_mm": round(les.diameter_mm, 3),
            "visible_fraction": round(max(0.0, 1.0 - yn * yn), 4),
            "subthreshold": les.diameter_mm < config.LIRADS_THRESHOLD_MM,
            "lirads_category": les.lirads_category,
        })
    return out


def clip_document(case, height: int, width: int, fps: float, frames: list[dict],
                  ui_items: list[dict], ruler: dict | None) -> dict[str, Any]:
    """The whole ``<clip>.gt.json`` document.

    Args:
        case: the case.
        height, width, fps: clip format.
        frames: per-frame truth dicts in order.
        ui_items, ruler: burned-in UI items and depth ruler (empty / None without UI).
    """
    mm = case.mm_per_px(height, width)
    return {
        "schema": config.SCHEMA,
        "seed": int(case.seed),
        "mm_per_px": [float(mm[0]), float(mm[1])],
        "fps": float(fps),
        "width": int(width),
        "height": int(height),
        "n_frames": len(frames),
        "tissue_codes": dict(config.TISSUE_CODES),
        "quality_labels": ["good", *config.QUALITY_PRECEDENCE],
        "ui": {"items": ui_items, "depth_ruler": ruler},
        "case": case.truth(),
        "frames": frames,
    }
