"""Sizes that scale with the frame, and the two drawing primitives every layer uses.

At 480x640 the overlay uses OpenCV's Hershey Simplex at scale 0.5 (capital letters about 11 px
high) and 2 px lines; both grow linearly with ``min(H, W) / 480`` so a 1080p frame gets the same
proportions (scale ~2.25). Text always sits on a darkened chip, because white or coloured text
straight on speckle is hard to read at a glance.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sonoflow.stream.render.palette import RGB, WHITE

FONT = cv2.FONT_HERSHEY_SIMPLEX
#: the short side of the frame the base sizes were tuned on
BASE_SHORT_SIDE_PX = 480
#: how much of the background stays visible under a text chip (0 = opaque black chip)
CHIP_KEEP = 0.15


@dataclass(frozen=True)
class Style:
    """Font and line sizes for one frame size.

    Attributes:
        scale: ``min(H, W) / 480``.
        font_scale: OpenCV font scale for labels.
        small_font_scale: OpenCV font scale for secondary lines (features, HUD).
        text_px: text stroke thickness in px.
        line_px: box and contour thickness in px.
        pad_px: padding inside chips in px.
        line_h_px, small_line_h_px: distance between two text lines at each font scale, px.
        base_px, small_base_px: text baseline offset (below the baseline) at each scale, px.
    """

    scale: float
    font_scale: float
    small_font_scale: float
    text_px: int
    line_px: int
    pad_px: int
    line_h_px: int = 0
    small_line_h_px: int = 0
    base_px: int = 0
    small_base_px: int = 0

    @classmethod
    def for_shape(cls, height_px: int, width_px: int) -> Style:
        """The style for a ``height_px`` x ``width_px`` frame."""
        s = min(height_px, width_px) / BASE_SHORT_SIDE_PX
        fs, sfs, text_px, pad = 0.5 * s, 0.42 * s, max(1, round(1.0 * s)), max(2, round(4 * s))
        (_, h), base = cv2.getTextSize("Ag", FONT, fs, text_px)
        (_, sh), sbase = cv2.getTextSize("Ag", FONT, sfs, text_px)
        return cls(scale=s, font_scale=fs, small_font_scale=sfs, text_px=text_px,
                   line_px=max(1, round(1.6 * s)), pad_px=pad, line_h_px=h + base + pad,
                   small_line_h_px=sh + sbase + pad, base_px=base, small_base_px=sbase)

    def metrics(self, small: bool) -> tuple[float, int, int]:
        """``(font scale, line height px, baseline px)`` for normal or small text."""
        if small:
            return self.small_font_scale, self.small_line_h_px, self.small_base_px
        return self.font_scale, self.line_h_px, self.base_px


@dataclass(frozen=True)
class Line:
    """One line of text in a chip: the text, its colour, and whether it is a secondary line."""

    text: str
    colour: RGB = WHITE
    small: bool = False


def text_block_size(lines: list[Line], style: Style) -> tuple[int, int]:
    """Width and height in px of the chip that :func:`draw_text_block` would draw."""
    w = h = 0
    for line in lines:
        fs, lh, _ = style.metrics(line.small)
        (tw, _), _ = cv2.getTextSize(line.text, FONT, fs, style.text_px)
        w = max(w, tw)
        h += lh
    return w + 2 * style.pad_px, h + style.pad_px


def draw_text_block(img: np.ndarray, lines: list[Line], x0_px: int, y0_px: int,
                    style: Style, size: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """Draw ``lines`` on a darkened chip whose top-left corner is ``(x0_px, y0_px)``.

    The chip is clamped inside the image. ``img`` (uint8 HxWx3 RGB) is drawn on in place: call
    this only on the renderer's own copy.

    Returns:
        The chip's ``(x0, y0, x1, y1)`` in px after clamping.
    """
    if not lines:
        return (x0_px, y0_px, x0_px, y0_px)
    h_img, w_img = img.shape[:2]
    w, h = size or text_block_size(lines, style)
    x0 = int(min(max(0, x0_px), max(0, w_img - w)))
    y0 = int(min(max(0, y0_px), max(0, h_img - h)))
    x1, y1 = min(w_img, x0 + w), min(h_img, y0 + h)
    roi = img[y0:y1, x0:x1]
    roi[:] = cv2.convertScaleAbs(roi, alpha=CHIP_KEEP)
    y = y0
    for line in lines:
        fs, lh, base = style.metrics(line.small)
        y += lh
        cv2.putText(img, line.text, (x0 + style.pad_px, y - base), FONT, fs, line.colour,
                    style.text_px, cv2.LINE_AA)
    return (x0, y0, x1, y1)
