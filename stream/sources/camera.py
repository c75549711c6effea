"""Cameras and capture cards through OpenCV (V4L2 on Linux): ``camera:N`` or ``/dev/videoN``.

A live source: no end, no frame count. Frames are BGR from OpenCV and converted to RGB once
(grey capture cards that deliver one channel stay grey). pts are capture times on the
monotonic clock, in nanoseconds since :meth:`CameraSource.open`. A device that stops
delivering frames (unplugged, another process took it) is reported after ``max_read_failures``
consecutive failed reads.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from sonoflow.stream.errors import SourceError
from sonoflow.stream.sources.base import Source, SourceFrame
from sonoflow.stream.sources.pixels import FrameGuard, PtsGuard, to_grey_or_rgb, to_uint8

log = logging.getLogger(__name__)

_DEV_VIDEO = re.compile(r"^/dev/video(\d+)$")
_CAMERA = re.compile(r"^camera:(\d+)$")


def parse_device(spec: str) -> int | None:
    """The device number of ``camera:N`` or ``/dev/videoN``; None for anything else."""
    m = _CAMERA.match(spec) or _DEV_VIDEO.match(spec)
    return int(m.group(1)) if m else None


class CameraSource(Source):
    """An OpenCV ``VideoCapture`` device.

    Attributes:
        device: the device number or the path/URL given to OpenCV.
        pixel_format: ``"rgb24"`` (or ``"gray8"`` for one-channel devices), after the first
            frame; ``"rgb24"`` before.
        width_px, height_px: the size the device reports after :meth:`open`.
        timing_source: ``"arrival"`` (pts = monotonic capture time).
    """

    live = True
    time_base = (1, 1_000_000_000)

    def __init__(self, device: int | str, *, width: int | None = None,
                 height: int | None = None, fps: float | None = None,
                 api_preference: int | None = None, max_read_failures: int = 30,
                 retry_delay_s: float = 0.01, spec: str | None = None):
        """Args:
            device: device number (``/dev/videoN``) or a path/URL OpenCV can open.
            width, height: requested frame size (the device may refuse; the actual size wins).
            fps: requested frame rate (used for pacing only if the device reports none).
            api_preference: OpenCV backend (default: V4L2 for device numbers on Linux,
                any backend otherwise).
            max_read_failures: consecutive failed reads before the device is declared lost.
            retry_delay_s: wait between failed reads.
            spec: the string the user gave.
        """
        self.device = device
        self.spec = spec or (f"camera:{device}" if isinstance(device, int) else str(device))
        self.requested = (width, height, fps)
        if api_preference is None:
            api_preference = (cv2.CAP_V4L2 if isinstance(device, int) and
                              sys.platform.startswith("linux") else cv2.CAP_ANY)
        self.api_preference = api_preference
        self.max_read_failures = max_read_failures
        self.retry_delay_s = retry_delay_s
        self.pixel_format = "rgb24"
        self.width_px = 0
        self.height_px = 0
        self.timing_source = "arrival"
        self.pts_guard = PtsGuard(self.spec)
        self._cap: cv2.VideoCapture | None = None
        self._t0_ns = 0

    def open(self) -> None:
        """Open the device (idempotent).

        Raises:
            SourceError: the device does not exist or cannot be opened.
        """
        if self._cap is not None:
            return
        if isinstance(self.device, int) and sys.platform.startswith("linux"):
            node = Path(f"/dev/video{self.device}")
            if not node.exists():
                raise SourceError(self.spec, f"no capture device {node} (is the camera or "
                                             "capture card plugged in? list devices with "
                                             "`v4l2-ctl --list-devices`)")
        cap = cv2.VideoCapture(self.device, self.api_preference)
        if not cap.isOpened():
            cap.release()
            raise SourceError(self.spec, "the capture device cannot be opened (missing, busy "
                                         "in another program, or no permission: check the "
                                         "video group)")
        width, height, fps = self.requested
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            cap.set(cv2.CAP_PROP_FPS, fps)
        self.width_px = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height_px = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        reported = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(reported) if reported and reported > 0 else (float(fps) if fps else None)
        self.frame_count = None
        self._cap = cap
        self._t0_ns = time.monotonic_ns()

    def frames(self) -> Iterator[SourceFrame]:
        """Yield frames as the device delivers them, until it stops.

        Yields:
            ``SourceFrame`` with pts = ns since open on the monotonic clock.

        Raises:
            SourceError: ``max_read_failures`` consecutive failed reads (device lost; frames
                already delivered are kept), or a change of frame size.
        """
        self.open()
        cap = self._cap
        guard = FrameGuard(self.spec)
        index = 0
        failures = 0
        while True:
            ok, bgr = cap.read()
            t_ns = time.monotonic_ns()
            if not ok or bgr is None:
                failures += 1
                if failures >= self.max_read_failures:
                    raise SourceError(self.spec, f"the device stopped delivering frames after "
                                                 f"{index} frame(s) ({failures} failed reads in "
                                                 "a row): unplugged or taken by another program")
                time.sleep(self.retry_delay_s)
                continue
            failures = 0
            image, fmt = self._convert(bgr, index)
            guard.check(image, fmt, index)
            self.pixel_format = fmt
            pts = t_ns - self._t0_ns
            extra = {}
            note = self.pts_guard.check(pts, index)
            if note:
                extra["pts_warning"] = note
            yield SourceFrame(image=image, frame_index=index, pts=pts, time_base=self.time_base,
                              extra=extra)
            index += 1

    def _convert(self, bgr: np.ndarray, index: int) -> tuple[np.ndarray, str]:
        if bgr.ndim == 3 and bgr.shape[2] == 3:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        elif bgr.ndim == 3 and bgr.shape[2] == 4:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGBA)
        arr = to_uint8(bgr, path=self.spec, frame_index=index)
        return to_grey_or_rgb(arr, path=self.spec, frame_index=index)

    def close(self) -> None:
        """Release the device (idempotent)."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
