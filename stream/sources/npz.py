"""``*.npz`` - recorded frame arrays, as written by ``sonoflow simulate --format npz``.

The file holds ``frames`` ``(N, H, W)`` or ``(N, H, W, 3)`` uint8, and optionally ``fps`` and
``mm_per_px`` ``[x, y]``. A simulator clip (``schema`` starting with ``sonoflow.sim``) reports
calibration source ``"simulator"``; when ``<stem>.gt.json`` lies beside it, each frame's truth
is forwarded in ``SourceFrame.extra["sim"]``.
"""

from __future__ import annotations

import json
import zipfile
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from sonoflow.stream.errors import SourceError
from sonoflow.stream.sources.base import Calibration, Source, SourceFrame

DEFAULT_FPS = 30.0


class NpzSource(Source):
    """Frames from an ``.npz`` file.

    Args:
        path: the ``.npz`` file.
        fps: frame rate when the file states none (default 30).

    Raises:
        SourceError: missing or corrupt file, no ``frames`` array, wrong dtype or shape.
    """

    def __init__(self, path: str | Path, *, fps: float | None = None):
        self.path = Path(path)
        self.spec = str(path)
        self._fps_opt = fps
        self._frames: np.ndarray | None = None
        self._truth: list[dict] | None = None

    def open(self) -> None:
        """Read the arrays and the truth beside them (idempotent).

        Raises:
            SourceError: missing, corrupt or malformed file.
        """
        if self._frames is not None:
            return
        if not self.path.is_file():
            raise SourceError(self.path, "no such file; expected an .npz written by "
                                         "`sonoflow simulate --format npz`")
        try:
            with np.load(self.path, allow_pickle=False) as z:
                if "frames" not in z.files:
                    raise SourceError(self.path, f"no 'frames' array (has {sorted(z.files)}); "
                                                 "expected frames (N, H, W) uint8")
                frames = z["frames"]
                fps = float(z["fps"]) if "fps" in z.files else None
                mm = tuple(float(v) for v in z["mm_per_px"]) if "mm_per_px" in z.files else None
                schema = str(z["schema"]) if "schema" in z.files else ""
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise SourceError(self.path, f"cannot read the npz file ({e}); it is corrupt or "
                                         "truncated") from e
        if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or (
                frames.ndim == 4 and frames.shape[3] != 3):
            raise SourceError(self.path, f"frames has dtype {frames.dtype} shape {frames.shape}; "
                                         "expected uint8 (N, H, W) or (N, H, W, 3)")
        self._frames = frames
        self.fps = float(self._fps_opt or fps or DEFAULT_FPS)
        self.frame_count = int(frames.shape[0])
        self.pixel_format = "gray8" if frames.ndim == 3 else "rgb24"
        if mm is not None and len(mm) == 2 and min(mm) > 0:
            self.calibration = Calibration(mm, "simulator" if schema.startswith("sonoflow.sim")
                                           else "user")
        else:
            self.calibration = Calibration(None, "none", note="no mm_per_px in the npz file")
        gt = self.path.with_name(self.path.name[: -len(".npz")] + ".gt.json")
        if gt.is_file():
            try:
                self._truth = json.loads(gt.read_text()).get("frames")
            except (OSError, json.JSONDecodeError) as e:
                raise SourceError(gt, f"ground truth beside the clip is unreadable: {e}") from e

    def frames(self) -> Iterator[SourceFrame]:
        """Frames in order, with simulator truth in ``extra['sim']`` when present."""
        self.open()
        step = Fraction(1, 1) / Fraction(self.fps).limit_denominator(1001)
        tb = (step.numerator, step.denominator)
        for i in range(self.frame_count):
            extra = {}
            if self._truth is not None and i < len(self._truth):
                extra["sim"] = self._truth[i]
            yield SourceFrame(image=np.ascontiguousarray(self._frames[i]), frame_index=i, pts=i,
                              time_base=tb, extra=extra)
