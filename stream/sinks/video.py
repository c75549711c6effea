"""Overlay video writer (PyAV, H.264 in mp4)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from sonoflow.stream.errors import SonoflowError


class VideoWriter:
    """Writes RGB or grey uint8 frames to an H.264 mp4 at a constant frame rate.

    Frames are padded to even width/height (yuv420p needs it). All frames must share the first
    frame's size; a different size raises (a mid-stream resolution change is reported upstream).
    """

    def __init__(self, path: Path, fps: float, crf: int = 23, preset: str = "veryfast"):
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else Fraction(30)
        self.crf = crf
        self.preset = preset
        self._container = None
        self._stream = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        """Append one frame: ``(H, W)`` grey or ``(H, W, 3)`` RGB uint8."""
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        h, w = image.shape[:2]
        if self._container is None:
            self._open(w, h)
        if (w, h) != self._size:
            raise SonoflowError(f"{self.path}: frame size changed from {self._size[0]}x"
                                f"{self._size[1]} to {w}x{h}; one video holds one size")
        H, W = self._stream.height, self._stream.width
        if (H, W) != (h, w):
            padded = np.zeros((H, W, 3), np.uint8)
            padded[:h, :w] = image
            image = padded
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for pkt in self._stream.encode(frame):
            self._container.mux(pkt)
        self.frames += 1

    def _open(self, w: int, h: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        self._stream = self._container.add_stream("libx264", rate=self.fps)
        self._stream.width = w + (w % 2)
        self._stream.height = h + (h % 2)
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(self.crf), "preset": self.preset}
        self._stream.thread_count = 1
        self._size = (w, h)

    def close(self) -> None:
        if self._container is None:
            return
        for pkt in self._stream.encode(None):
            self._container.mux(pkt)
        self._container.close()
        self._container = None
