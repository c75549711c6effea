"""Model input preparation: letterbox of the sector box, normalisation, classifier crops.

Pure numpy + OpenCV, shared by the ``infer`` stage, training and evaluation, so the pipeline
feeds the networks exactly what they were trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from sonoflow.models.card import InputSpec
from sonoflow.models.errors import InputContractError


@dataclass(frozen=True)
class Letterbox:
    """The affine map between original-frame pixels and model-input pixels.

    ``input = (orig - (x0, y0)) * scale + (pad_x, pad_y)``.

    Attributes:
        x0, y0: top-left of the source box in original pixels.
        scale: input pixels per original pixel (same on both axes: aspect kept).
        pad_x, pad_y: offset of the resized box inside the input, input pixels.
        width, height: input size in pixels.
    """

    x0: float
    y0: float
    scale: float
    pad_x: float
    pad_y: float
    width: int
    height: int

    def to_input_xyxy(self, xyxy_px: np.ndarray) -> np.ndarray:
        """(N, 4) original-frame boxes -> input pixels."""
        b = np.asarray(xyxy_px, np.float32).reshape(-1, 4).copy()
        b[:, 0::2] = (b[:, 0::2] - self.x0) * self.scale + self.pad_x
        b[:, 1::2] = (b[:, 1::2] - self.y0) * self.scale + self.pad_y
        return b

    def to_original_xyxy(self, xyxy_px: np.ndarray) -> np.ndarray:
        """(N, 4) input-pixel boxes -> original-frame pixels."""
        b = np.asarray(xyxy_px, np.float32).reshape(-1, 4).copy()
        b[:, 0::2] = (b[:, 0::2] - self.pad_x) / self.scale + self.x0
        b[:, 1::2] = (b[:, 1::2] - self.pad_y) / self.scale + self.y0
        return b

    def warp_to_original(self, plane: np.ndarray, frame_hw: tuple[int, int],
                         interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """Map an input-space plane (any resolution that is an integer fraction of the input,
        e.g. (128, 128) for a (256, 256) input) back onto the original frame.

        Args:
            plane: (h, w) float32 or uint8 in input space, h/height == w/width.
            frame_hw: (H, W) of the original frame.
            interpolation: OpenCV flag (linear for probabilities, nearest for labels).

        Returns:
            (H, W) array, same dtype; 0 outside the letterboxed region.
        """
        f = plane.shape[1] / self.width  # plane pixels per input pixel
        s = self.scale * f
        # plane = orig * s + t  ->  orig -> plane matrix, inverted by WARP_INVERSE_MAP
        tx = (self.pad_x - self.x0 * self.scale) * f
        ty = (self.pad_y - self.y0 * self.scale) * f
        # pixel centres: orig pixel c maps to plane coordinate (c + 0.5) * s - 0.5 + t
        m = np.array([[s, 0.0, tx + 0.5 * s - 0.5], [0.0, s, ty + 0.5 * s - 0.5]], np.float64)
        h, w = frame_hw
        return cv2.warpAffine(plane, m, (int(w), int(h)),
                              flags=interpolation | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def letterbox(image: np.ndarray, box_xyxy_px: Sequence[float] | None, size_hw: tuple[int, int],
              valid_mask: np.ndarray | None = None, pad_value: int = 0
              ) -> tuple[np.ndarray, Letterbox]:
    """Letterbox ``image[box]`` into a ``size_hw`` canvas, blanking pixels outside ``valid_mask``.

    Args:
        image: (H, W) uint8 grey frame (original pixels).
        box_xyxy_px: (x0, y0, x1, y1) source box; None = the whole frame.
        size_hw: (h, w) output size.
        valid_mask: (H, W) bool/uint8; pixels where it is 0 are set to ``pad_value`` (the
            sector mask: what lies outside the imaging sector is never shown to the model).
        pad_value: grey level of the padding.

    Returns:
        ``(canvas (h, w) uint8, Letterbox)``.

    Raises:
        InputContractError: ``image`` is not (H, W) uint8, or the box is empty.
    """
    if image.ndim != 2 or image.dtype != np.uint8:
        raise InputContractError(f"letterbox: expected (H, W) uint8, got {image.shape} {image.dtype}")
    H, W = image.shape
    h, w = size_hw
    if box_xyxy_px is None:
        box_xyxy_px = (0, 0, W, H)
    bx0, by0, bx1, by1 = (float(v) for v in box_xyxy_px)
    if not all(math.isfinite(v) for v in (bx0, by0, bx1, by1)):
        raise InputContractError(f"letterbox: box {tuple(box_xyxy_px)} is not finite")
    x0, y0 = max(int(math.floor(bx0)), 0), max(int(math.floor(by0)), 0)
    x1, y1 = min(int(math.ceil(bx1)), W), min(int(math.ceil(by1)), H)
    if x1 <= x0 or y1 <= y0:
        raise InputContractError(f"letterbox: box {tuple(box_xyxy_px)} is empty inside a {W}x{H} "
                         f"frame; expected x0 < x1 <= {W} and y0 < y1 <= {H}")
    crop = image[y0:y1, x0:x1]
    if valid_mask is not None:
        crop = np.where(valid_mask[y0:y1, x0:x1].astype(bool), crop, np.uint8(pad_value))
    scale = min(w / (x1 - x0), h / (y1 - y0))
    cw = min(w, max(1, int(round((x1 - x0) * scale))))
    ch = min(h, max(1, int(round((y1 - y0) * scale))))
    pad_x, pad_y = (w - cw) // 2, (h - ch) // 2
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    canvas = np.full((h, w), pad_value, np.uint8)
    canvas[pad_y:pad_y + ch, pad_x:pad_x + cw] = cv2.resize(crop, (cw, ch), interpolation=interp)
    return canvas, Letterbox(float(x0), float(y0), scale, float(pad_x), float(pad_y), w, h)


def normalise(pixels_u8: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 planes -> float32 NCHW as the card's ``normalisation`` says.

    Args:
        pixels_u8: (H, W) or (N, H, W) uint8.
        spec: the card's input contract.

    Returns:
        (N, 1, H, W) float32, ``(p * scale - mean) / std``.
    """
    n = spec.normalisation
    x = pixels_u8.astype(np.float32) * np.float32(n["scale"])
    x = (x - np.float32(n["mean"])) / np.float32(n["std"])
    if x.ndim == 2:
        x = x[None]
    return np.ascontiguousarray(x[:, None])


def crop_square(image: np.ndarray, xyxy_px: Sequence[float], margin: float, size_px: int,
                min_side_px: int = 12, pad_value: int = 0) -> np.ndarray:
    """The classifier's crop window for one box (the contract in its card's ``extra.crop``).

    A square window centred on the box centre, side = ``max(min_side_px, margin * longer
    side)``, ``x0 = round(cx - side/2)``, ``x1 = x0 + round(side)`` (same for y); pixels
    outside the image are ``pad_value``; resized to ``size_px`` with INTER_AREA when shrinking,
    INTER_LINEAR when enlarging. Identical to the classifier's training crops.

    Args:
        image: (H, W) uint8.
        xyxy_px: (x0, y0, x1, y1) in ``image`` pixels.
        margin: side / longer box side.
        size_px: output side.
        min_side_px: smallest window side in ``image`` pixels.
        pad_value: fill outside the image.

    Returns:
        (size_px, size_px) uint8.

    Raises:
        InputContractError: not a 2-D image, or a non-finite box.
    """
    if image.ndim != 2:
        raise InputContractError(f"crop_square: expected a (H, W) grey image, got shape {image.shape}")
    x0, y0, x1, y1 = (float(v) for v in xyxy_px)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise InputContractError(f"crop_square: box {tuple(xyxy_px)} is not finite")
    side = max(float(min_side_px), margin * max(x1 - x0, y1 - y0))
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    n = max(1, int(round(side)))
    wx0, wy0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    h, w = image.shape
    window = np.full((n, n), pad_value, np.uint8)
    sx0, sy0 = max(wx0, 0), max(wy0, 0)
    sx1, sy1 = min(wx0 + n, w), min(wy0 + n, h)
    if sx1 > sx0 and sy1 > sy0:
        window[sy0 - wy0:sy1 - wy0, sx0 - wx0:sx1 - wx0] = image[sy0:sy1, sx0:sx1]
    interp = cv2.INTER_AREA if n > size_px else cv2.INTER_LINEAR
    return cv2.resize(window, (size_px, size_px), interpolation=interp)
