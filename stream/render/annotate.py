"""``annotate``: the one entry point that turns a frame and its header into the overlay image."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from sonoflow.stream.errors import ConfigError
from sonoflow.stream.messages import FrameHeader
from sonoflow.stream.render.layers import (
    HudStats,
    case_lines,
    draw_boxes,
    draw_labels,
    draw_liver,
    draw_masks,
    draw_quality,
    hud_lines,
)
from sonoflow.stream.render.style import Style, draw_text_block, text_block_size

#: every layer. Drawing order: outlines, boxes, the corner panels (quality, HUD, case), then the
#: labels, placed so they cover neither a panel nor another lesion
LAYERS: tuple[str, ...] = ("liver", "masks", "boxes", "labels", "quality", "hud", "case")
#: what the overlay shows unless told otherwise (the liver outline is opt-in: it adds clutter)
DEFAULT_LAYERS: frozenset[str] = frozenset(LAYERS) - {"liver"}


def parse_layers(spec: str | Iterable[str] | None) -> frozenset[str]:
    """Layer names from a comma-separated string or an iterable; ``None`` or ``"default"``
    gives :data:`DEFAULT_LAYERS`, ``"all"`` every layer, ``""``/``"none"`` no layer.

    Raises:
        ConfigError: a name is not one of :data:`LAYERS`.
    """
    if spec is None:
        return DEFAULT_LAYERS
    if isinstance(spec, str):
        word = spec.strip().lower()
        if word == "default":
            return DEFAULT_LAYERS
        if word == "all":
            return frozenset(LAYERS)
        if word in ("", "none"):
            return frozenset()
        spec = [s.strip() for s in word.split(",") if s.strip()]
    names = frozenset(spec)
    unknown = names - set(LAYERS)
    if unknown:
        raise ConfigError(f"unknown overlay layer(s) {sorted(unknown)}; known: {list(LAYERS)} "
                          "(or 'default', 'all', 'none')")
    return names


def to_rgb(image: np.ndarray) -> np.ndarray:
    """A new uint8 HxWx3 RGB array from a uint8 HxW grey or HxWx3 RGB image (never a view).

    Raises:
        ConfigError: the image is not uint8 HxW or HxWx3.
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (
            image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ConfigError(f"render: image must be uint8 HxW or HxWx3, got {image.dtype} "
                          f"{image.shape}; convert it in the source or preprocess stage")
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(np.ascontiguousarray(image.reshape(image.shape[:2])),
                            cv2.COLOR_GRAY2RGB)
    return np.array(image, dtype=np.uint8, copy=True, order="C")


def annotate(image: np.ndarray, header: FrameHeader, arrays: dict[str, np.ndarray],
             layers: Iterable[str] = DEFAULT_LAYERS, *, stats: HudStats | None = None,
             style: Style | None = None) -> np.ndarray:
    """Draw the overlay on a copy of ``image``; inputs are never modified.

    Args:
        image: uint8 HxW grey or HxWx3 RGB.
        header: the frame header (``quality``, ``infer.detections``, ``lesions``,
            ``extra["lirads"]``, ``stamps`` are used when present).
        arrays: the packet's arrays; ``lesion_mask`` (uint8 HxW, value = ``mask_id``) and
            ``liver_mask`` (uint8 HxW 0/1) are used when present and the same size as ``image``.
        layers: names from :data:`LAYERS` to draw.
        stats: stream-level HUD numbers (fps, drops, the time "now"); without them the HUD
            shows the frame number and stage times only.
        style: sizes; by default scaled to the image (:meth:`Style.for_shape`).

    Returns:
        A new uint8 HxWx3 RGB array.

    Raises:
        ConfigError: ``image`` is not uint8 HxW/HxWx3, or a layer name is unknown.
    """
    layers = parse_layers(layers)
    out = to_rgb(image)
    h, w = out.shape[:2]
    style = style or Style.for_shape(h, w)
    dets = header.infer.detections if header.infer is not None else []

    def same_size(name: str) -> np.ndarray | None:
        a = arrays.get(name)
        return a if a is not None and a.shape[:2] == (h, w) else None

    lesion_mask = same_size("lesion_mask")
    liver_mask = same_size("liver_mask")
    if "liver" in layers and liver_mask is not None:
        draw_liver(out, liver_mask, style)
    if "masks" in layers and lesion_mask is not None:
        draw_masks(out, dets, lesion_mask, style)
    if "boxes" in layers:
        draw_boxes(out, dets, "masks" in layers and lesion_mask is not None, style)
    panels: list[tuple[int, int, int, int]] = []
    if "quality" in layers:
        area = draw_quality(out, header, style)
        if area is not None:
            panels.append(area)
    right_y = 0
    if "hud" in layers:
        lines = hud_lines(header, stats)
        cw, ch = text_block_size(lines, style)
        panels.append(draw_text_block(out, lines, w - cw, 0, style, size=(cw, ch)))
        right_y = panels[-1][3]
    if "case" in layers:
        lines = case_lines(header)
        if lines:
            cw, ch = text_block_size(lines, style)
            panels.append(draw_text_block(out, lines, w - cw, right_y + style.pad_px, style,
                                          size=(cw, ch)))
    if "labels" in layers:
        draw_labels(out, dets, style, occupied=panels)
    return out
