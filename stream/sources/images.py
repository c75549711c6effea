"""A folder of still images (png, jpg/jpeg, bmp, tif/tiff) replayed as a clip.

Files are taken in natural order (``frame2.png`` before ``frame10.png``), read with OpenCV
(``IMREAD_UNCHANGED``, so 16-bit and alpha survive to the documented conversions), converted
from OpenCV's BGR(A) to RGB once, then through ``pixels.to_uint8`` / ``to_grey_or_rgb``.
A colour image whose three channels are identical stays RGB (``rgb24``); the folder's first
image fixes the geometry and a later image of another size or layout is an error naming it.
Image folders carry no timing: ``fps`` (default 30, ``timing_source == "assumed"``) sets pts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from sonoflow.stream.errors import SourceError
from sonoflow.stream.sources.base import Source, SourceFrame
from sonoflow.stream.sources.pixels import FrameGuard, to_grey_or_rgb, to_uint8

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: frame rate assumed for a folder of stills (``fps=`` overrides)
DEFAULT_FPS = 30.0
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: ``a2`` < ``a10``."""
    return [int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(name)]


def list_images(folder: Path) -> list[Path]:
    """The image files of ``folder`` (not recursive), in natural order."""
    files = [p for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


class ImageFolderSource(Source):
    """Each image file in a folder is one frame.

    Attributes:
        files: the image paths in frame order (after :meth:`open`).
        pixel_format: ``"gray8"`` or ``"rgb24"``, from the first image.
        timing_source: ``"assumed"``.
    """

    def __init__(self, path: str | Path, *, fps: float | None = None,
                 value_range: tuple[float, float] | None = None, out_of_range: str = "error",
                 spec: str | None = None):
        """Args:
            path: the folder.
            fps: frame rate to assume (default 30).
            value_range: range mapped onto 0..255 for 16-bit or float images.
            out_of_range: ``"error"`` or ``"clip"``.
            spec: the string the user gave (defaults to ``path``).
        """
        self.path = Path(path)
        self.spec = spec or str(path)
        self.fps = float(fps or DEFAULT_FPS)
        self.value_range = value_range
        self.out_of_range = out_of_range
        self.timing_source = "assumed"
        self.pixel_format = "gray8"
        self.files: list[Path] = []
        self.time_base = (1, 1_000_000)
        self._opened = False

    def open(self) -> None:
        """List the images and read the first to fix the pixel format (idempotent).

        Raises:
            SourceError: missing folder, no image in it, or an unreadable first image.
        """
        if self._opened:
            return
        if not self.path.is_dir():
            raise SourceError(str(self.path), "folder not found")
        self.files = list_images(self.path)
        if not self.files:
            raise SourceError(str(self.path), f"no image files in the folder; expected "
                                              f"{', '.join(IMAGE_EXTENSIONS)}")
        self.frame_count = len(self.files)
        _, self.pixel_format = self._read(0)
        self._opened = True

    def _read(self, i: int) -> tuple[np.ndarray, str]:
        path = self.files[i]
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise SourceError(str(path), f"frame {i}: image cannot be read (corrupt, empty or "
                                         "an unsupported variant of its format)")
        if arr.ndim == 3 and arr.shape[2] == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
        elif arr.ndim == 3 and arr.shape[2] == 4:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
        arr = to_uint8(arr, path=str(path), frame_index=i, value_range=self.value_range,
                       out_of_range=self.out_of_range)
        return to_grey_or_rgb(arr, path=str(path), frame_index=i)

    def frames(self) -> Iterator[SourceFrame]:
        """Yield one frame per image, in natural file order.

        Yields:
            ``SourceFrame`` with ``extra["file"]`` the image's file name.

        Raises:
            SourceError: an unreadable image, or one whose size or layout differs from the
                first (naming the file and the frame index).
        """
        self.open()
        guard = FrameGuard(str(self.path))
        step_us = 1_000_000 / self.fps
        for i, path in enumerate(self.files):
            image, fmt = self._read(i)
            try:
                guard.check(image, fmt, i)
            except SourceError as e:
                raise SourceError(str(path), e.problem) from e
            yield SourceFrame(image=image, frame_index=i, pts=int(round(i * step_us)),
                              time_base=self.time_base, extra={"file": path.name})
