"""Pixel conversion and per-frame consistency checks shared by every capture source.

Every source hands its decoded arrays through :func:`to_uint8` (value mapping) and
:func:`to_grey_or_rgb` (channel layout) exactly once, then through a :class:`FrameGuard` that
refuses a mid-stream change of size or layout and a :class:`PtsGuard` that reports
non-monotonic timestamps. The conversions are documented here once:

* dtype ``uint8``: kept as is.
* other integer dtypes: mapped linearly from ``value_range`` (default: the dtype's full range,
  e.g. ``[0, 65535]`` for ``uint16``) onto ``[0, 255]``.
* float dtypes: NaN or +-inf anywhere in a frame is an error naming the frame; values are
  mapped linearly from ``value_range`` (default ``[0.0, 1.0]``) onto ``[0, 255]``.
* values outside ``value_range`` are an error naming the frame, the value and the range
  (``out_of_range="error"``, the default) or are clipped (``out_of_range="clip"``).
* channels: ``(H, W)`` and ``(H, W, 1)`` are grey; ``(H, W, 3)`` is RGB; ``(H, W, 4)`` has its
  alpha channel dropped (RGBA -> RGB); 2 channels (grey + alpha is ambiguous with two-plane
  data) and anything else are errors.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from sonoflow.stream.errors import SourceError

log = logging.getLogger(__name__)

#: pixel formats a source can deliver (the ``pixel_format`` of the frame header)
PIXEL_FORMATS = ("gray8", "rgb24")
OUT_OF_RANGE_POLICIES = ("error", "clip")


def default_value_range(dtype: np.dtype) -> tuple[float, float]:
    """The range mapped onto ``[0, 255]`` when the source declares none.

    Args:
        dtype: the decoded array's dtype.

    Returns:
        ``(low, high)``: the full range for integer dtypes, ``(0.0, 1.0)`` for floats.

    Raises:
        SourceError: for dtypes that are neither integer nor float (bool, complex, object).
    """
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    if np.issubdtype(dtype, np.floating):
        return 0.0, 1.0
    raise SourceError("<array>", f"pixel dtype {dtype} is not supported (expected an integer "
                                 "or float type)")


def to_uint8(arr: np.ndarray, *, path: str, frame_index: int,
             value_range: tuple[float, float] | None = None,
             out_of_range: str = "error") -> np.ndarray:
    """Map one decoded frame onto ``uint8`` (see the module docstring for the rules).

    Args:
        arr: ``(H, W)`` or ``(H, W, C)`` array of any integer or float dtype.
        path: the file or spec the frame came from (for error messages).
        frame_index: the frame's index in its source (for error messages).
        value_range: ``(low, high)`` mapped onto ``[0, 255]``; None = the dtype's default.
        out_of_range: ``"error"`` or ``"clip"`` for values outside ``value_range``.

    Returns:
        ``uint8`` array of the same shape (the input itself when it already is ``uint8``).

    Raises:
        SourceError: NaN/inf values, values outside ``value_range`` (policy ``"error"``),
            an unsupported dtype or an empty range.
    """
    if arr.dtype == np.uint8:
        return arr
    if out_of_range not in OUT_OF_RANGE_POLICIES:
        raise SourceError(path, f"out_of_range={out_of_range!r}; expected one of "
                                f"{OUT_OF_RANGE_POLICIES}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise SourceError(path, f"frame {frame_index}: pixel dtype {arr.dtype} is not supported "
                                "(expected an integer or float type)")
    lo, hi = value_range if value_range is not None else default_value_range(arr.dtype)
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise SourceError(path, f"value_range {(lo, hi)} is empty or not finite; expected "
                                "finite low < high")
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            n_nan = int(np.isnan(arr).sum())
            n_inf = int(arr.size - finite.sum()) - n_nan
            raise SourceError(path, f"frame {frame_index}: float pixel data holds {n_nan} NaN "
                                    f"and {n_inf} inf value(s); expected finite values in "
                                    f"[{lo}, {hi}]. Fix the export, or drop this frame")
    vmin = float(arr.min()) if arr.size else lo
    vmax = float(arr.max()) if arr.size else hi
    if vmin < lo or vmax > hi:
        if out_of_range == "error":
            raise SourceError(path, f"frame {frame_index}: pixel values span [{vmin:g}, "
                                    f"{vmax:g}], outside the expected range [{lo:g}, {hi:g}]; "
                                    "pass value_range=(low, high) for this source, or "
                                    "out_of_range='clip' to clip")
        log.debug("%s frame %d: clipping values [%g, %g] to [%g, %g]", path, frame_index,
                  vmin, vmax, lo, hi)
    scaled = (arr.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return np.rint(scaled).astype(np.uint8)


def to_grey_or_rgb(arr: np.ndarray, *, path: str, frame_index: int) -> tuple[np.ndarray, str]:
    """Bring a frame to ``(H, W)`` grey or ``(H, W, 3)`` RGB, C-contiguous.

    The channel order of ``arr`` must already be RGB(A); BGR sources convert before this.

    Args:
        arr: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` array.
        path: the file or spec the frame came from (for error messages).
        frame_index: the frame's index in its source (for error messages).

    Returns:
        ``(image, pixel_format)`` with ``pixel_format`` ``"gray8"`` or ``"rgb24"``.

    Raises:
        SourceError: 2 channels, more than 4, or not a 2-D image.
    """
    if arr.ndim == 2:
        out, fmt = arr, "gray8"
    elif arr.ndim == 3 and arr.shape[2] == 1:
        out, fmt = arr[:, :, 0], "gray8"
    elif arr.ndim == 3 and arr.shape[2] == 3:
        out, fmt = arr, "rgb24"
    elif arr.ndim == 3 and arr.shape[2] == 4:
        out, fmt = arr[:, :, :3], "rgb24"  # RGBA: the alpha channel is dropped
    elif arr.ndim == 3 and arr.shape[2] == 2:
        raise SourceError(path, f"frame {frame_index}: 2 channels per pixel (shape "
                                f"{arr.shape}); expected 1 (grey), 3 (RGB) or 4 (RGBA). "
                                "Grey+alpha or two-plane data must be converted before replay")
    else:
        raise SourceError(path, f"frame {frame_index}: array of shape {arr.shape} is not an "
                                "image; expected (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA")
    if out.shape[0] == 0 or out.shape[1] == 0:
        raise SourceError(path, f"frame {frame_index}: empty image of shape {arr.shape}")
    return np.ascontiguousarray(out), fmt


class FrameGuard:
    """Refuses a change of frame size or pixel format in the middle of a stream.

    Downstream stages (sector detection, tracking, the overlay writer) assume one geometry per
    source; a new geometry is a new source. The first frame fixes the geometry.
    """

    def __init__(self, path: str):
        """Args:
            path: the file or spec (for error messages).
        """
        self.path = path
        self.shape: tuple[int, ...] | None = None
        self.pixel_format: str | None = None
        self._first_index = 0

    def check(self, image: np.ndarray, pixel_format: str, frame_index: int) -> None:
        """Check one frame against the first.

        Args:
            image: the converted ``uint8`` frame.
            pixel_format: its pixel format.
            frame_index: its index in the source.

        Raises:
            SourceError: the size or the pixel format differs from the first frame's.
        """
        if self.shape is None:
            self.shape, self.pixel_format, self._first_index = image.shape, pixel_format, frame_index
            return
        if image.shape != self.shape or pixel_format != self.pixel_format:
            raise SourceError(self.path, f"frame {frame_index}: resolution/format changed "
                                         f"mid-stream from {_describe(self.shape, self.pixel_format)}"
                                         f" (frame {self._first_index}) to "
                                         f"{_describe(image.shape, pixel_format)}; split the "
                                         "recording into one source per geometry")


def _describe(shape: tuple[int, ...] | None, pixel_format: str | None) -> str:
    if shape is None:
        return "nothing"
    return f"{shape[1]}x{shape[0]} {pixel_format}"


class PtsGuard:
    """Reports presentation timestamps that do not increase strictly.

    ``strict=False`` (default): the frame is delivered, a warning is logged and the returned
    note is stored by the source in ``SourceFrame.extra["pts_warning"]``; ``count`` keeps the
    number of such frames. ``strict=True``: a :class:`SourceError` instead.
    """

    def __init__(self, path: str, strict: bool = False):
        """Args:
            path: the file or spec (for error messages).
            strict: raise instead of warning.
        """
        self.path = path
        self.strict = strict
        self.count = 0
        self._last: int | None = None
        self._last_index = -1

    def check(self, pts: int, frame_index: int) -> str | None:
        """Check one timestamp.

        Args:
            pts: the frame's pts in its source's time base.
            frame_index: its index in the source.

        Returns:
            None when the pts increases, else a note naming both frames and timestamps.

        Raises:
            SourceError: non-monotonic pts while ``strict``.
        """
        last, last_index = self._last, self._last_index
        self._last, self._last_index = pts, frame_index
        if last is None or pts > last:
            return None
        note = (f"frame {frame_index}: pts {pts} is not after frame {last_index}'s pts {last} "
                "(non-monotonic timestamps in the source)")
        self.count += 1
        if self.strict:
            raise SourceError(self.path, note)
        log.warning("%s: %s", self.path, note)
        return note
