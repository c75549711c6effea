"""Burned-in scanner UI outside the sector: fake patient text, preset, depth ruler.

The overlay is drawn once per clip and size; its exact pixel mask and the boxes of every text
item and of the ruler ticks go into the ground truth, so the preprocessing stage (sector
detection, text masking, depth-ruler calibration) can be tested against it. Nothing is ever
drawn inside the true imaging sector.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from sonoflow.stream.sim.geometry import ScanConverter

_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class UiOverlay:
    """A drawn UI layer.

    Attributes:
        pixels: ``(H, W)`` uint8 grey values of the UI.
        mask: ``(H, W)`` bool, exactly the UI pixels (text, ruler, marker).
        items: truth entries: ``{"kind", "text", "xyxy_px"}`` per drawn item.
        ruler: ``{"x_px", "ticks": [{"depth_cm", "y_px"}], "mm_per_px"}`` or None.
    """

    pixels: np.ndarray
    mask: np.ndarray
    items: list[dict] = field(default_factory=list)
    ruler: dict | None = None
    _flat: np.ndarray | None = field(default=None, repr=False)
    _values: np.ndarray | None = field(default=None, repr=False)

    def apply(self, image: np.ndarray) -> None:
        """Burn the overlay into ``image`` (in place)."""
        if self._flat is None:
            self._flat = np.flatnonzero(self.mask)
            self._values = self.pixels.reshape(-1)[self._flat]
        image.reshape(-1)[self._flat] = self._values


def _text_layer(shape, text: str, org: tuple[int, int], scale: float, value: int,
                thickness: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    layer = np.zeros(shape, np.uint8)
    cv2.putText(layer, text, org, _FONT, scale, value, thickness, cv2.LINE_AA)
    ys, xs = np.nonzero(layer)
    if len(xs) == 0:
        return layer, (0, 0, 0, 0)
    return layer, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def build_ui(case, scan: ScanConverter) -> UiOverlay:
    """Draw the UI of a case for the converter's output size.

    Items that would touch the sector (dilated by 2 px) are left out rather than drawn over it.

    Returns:
        The overlay; empty (no pixels) when ``case.ui`` is False.
    """
    h, w = scan.sector_mask.shape
    pixels = np.zeros((h, w), np.uint8)
    ui = UiOverlay(pixels=pixels, mask=np.zeros((h, w), bool))
    if not case.ui:
        return ui
    keep_out = cv2.dilate(scan.sector_mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    scale = 0.36 * w / 640.0
    thick = 1
    line_h = int(round(14 * w / 640.0))
    pat = case.patient
    left = [("patient_name", pat.name), ("patient_id", pat.patient_id), ("date", pat.date)]
    right = [("preset", "SonoFlow SIM"), ("preset", f"{case.probe.freq_mhz:.1f} MHz"),
             ("preset", f"DR {case.probe.dynamic_range_db:.0f}  G {round(case.imaging.gain_db):+d}"),
             ("preset", f"D {case.probe.depth_mm / 10:.0f} cm")]
    x_left = int(round(6 * w / 640.0))

    def put(kind: str, text: str, x: int, y: int, align_right: bool = False) -> None:
        """Draw one text item unless it would touch the sector."""
        if align_right:
            (tw, _), _ = cv2.getTextSize(text, _FONT, scale, thick)
            x = x - tw
        layer, box = _text_layer((h, w), text, (x, y), scale, 225, thick)
        on = layer > 0
        if not on.any() or (on & keep_out).any():
            return
        np.maximum(pixels, layer, out=pixels)
        ui.items.append({"kind": kind, "text": text, "xyxy_px": list(box)})

    for i, (kind, text) in enumerate(left):
        put(kind, text, x_left, line_h * (i + 1), False)
    # Preset block bottom left, below the fan's edge (the ruler owns the right margin).
    for i, (kind, text) in enumerate(right):
        put(kind, text, x_left, h - line_h * (len(right) - i) + line_h // 2, False)
    # Depth ruler right of the sector: a tick per cm, labels every 5 cm.
    lay = scan.layout
    cols = np.nonzero(scan.sector_mask.any(axis=0))[0]
    x_r = int(cols.max()) + int(round(8 * w / 640.0))
    ticks = []
    depth_cm = case.probe.depth_mm / 10.0
    tick_len = max(3, int(round(5 * w / 640.0)))
    for k in range(int(depth_cm) + 1):
        y = int(round(lay.origin_y_px + 10.0 * k / lay.mm_per_px))
        if y >= h - 1:
            break
        length = tick_len * 2 if k % 5 == 0 else tick_len
        layer = np.zeros((h, w), np.uint8)
        cv2.line(layer, (x_r, y), (x_r + length, y), 200, 1, cv2.LINE_8)
        if (layer > 0)[keep_out].any():
            continue
        np.maximum(pixels, layer, out=pixels)
        ticks.append({"depth_cm": k, "y_px": y})
        if k % 5 == 0:
            put("ruler_label", str(k), x_r + length + 3, y + int(4 * w / 640.0))
    if ticks:
        y0, y1 = ticks[0]["y_px"], ticks[-1]["y_px"]
        layer = np.zeros((h, w), np.uint8)
        cv2.line(layer, (x_r, y0), (x_r, y1), 200, 1, cv2.LINE_8)
        np.maximum(pixels, layer, out=pixels)
        ui.items.append({"kind": "ruler", "text": "", "xyxy_px": [x_r, y0, x_r + 2 * tick_len + 1,
                                                                 y1 + 1]})
        ui.ruler = {"x_px": x_r, "ticks": ticks, "mm_per_px": lay.mm_per_px}
    # Grey-scale bar in the top-right corner, as scanners show next to the image.
    bw = max(3, int(round(6 * w / 640.0)))
    bx0 = w - bw - int(round(4 * w / 640.0))
    by0, by1 = line_h, line_h + int(round(70 * h / 480.0))
    if bx0 > x_r + 2 * tick_len + 12 * w / 640.0 and by1 < h:
        layer = np.zeros((h, w), np.uint8)
        ramp = np.linspace(255, 8, by1 - by0).astype(np.uint8)[:, None]
        layer[by0:by1, bx0:bx0 + bw] = ramp
        if not (layer > 0)[keep_out].any():
            np.maximum(pixels, layer, out=pixels)
            ui.items.append({"kind": "grey_bar", "text": "", "xyxy_px": [bx0, by0, bx0 + bw, by1]})
    # Focus marker left of the sector at the transmit focus depth.
    xl = int(np.nonzero(scan.sector_mask.any(axis=0))[0].min()) - int(round(10 * w / 640.0))
    yf = int(round(lay.origin_y_px + case.probe.focus_mm / lay.mm_per_px))
    if xl > 4 and 4 < yf < h - 4:
        layer = np.zeros((h, w), np.uint8)
        pts = np.array([[xl, yf - 3], [xl, yf + 3], [xl + 5, yf]], np.int32)
        cv2.fillConvexPoly(layer, pts, 200, cv2.LINE_8)
        if not (layer > 0)[keep_out].any():
            np.maximum(pixels, layer, out=pixels)
            ys, xs = np.nonzero(layer)
            ui.items.append({"kind": "focus_marker", "text": "",
                             "xyxy_px": [int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                                         int(ys.max()) + 1]})
    ui.mask = pixels > 0
    return ui
