"""``pattern:`` - a synthetic test-pattern source (like GStreamer's videotestsrc).

For transport benchmarks and runtime tests, where decode cost must not hide transport cost.
Spec: ``pattern:frames=100,width=640,height=480,fps=30,channels=1,seed=0``. Each frame is a
moving gradient plus seeded noise, with the frame index written into the first 8 pixels
(little-endian uint64) so tests can check order and identity.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from sonoflow.stream.errors import SourceError
from sonoflow.stream.sources.base import Calibration, Source, SourceFrame

_KEYS = {"frames": int, "width": int, "height": int, "fps": float, "channels": int, "seed": int}


def parse_options(spec: str, prefix: str, keys: dict[str, type]) -> dict[str, object]:
    """Parse ``prefix:key=value,key=value`` into typed options.

    Raises:
        SourceError: unknown key or a value of the wrong type.
    """
    body = spec[len(prefix):]
    out: dict[str, object] = {}
    for item in filter(None, body.split(",")):
        k, sep, v = item.partition("=")
        k = k.strip()
        if not sep or k not in keys:
            raise SourceError(spec, f"option {item!r} not understood; accepted keys: "
                                    f"{sorted(keys)} as key=value")
        try:
            out[k] = keys[k](v)
        except ValueError as e:
            raise SourceError(spec, f"option {k}={v!r}: expected {keys[k].__name__}") from e
    return out


class PatternSource(Source):
    def __init__(self, spec: str, **options):
        self.spec = spec
        o = {"frames": 300, "width": 640, "height": 480, "fps": 30.0, "channels": 1, "seed": 0}
        o.update(parse_options(spec, "pattern:", _KEYS))
        o.update(options)
        if o["channels"] not in (1, 3):
            raise SourceError(spec, f"channels={o['channels']}; expected 1 or 3")
        if o["width"] < 8 or o["height"] < 8:
            raise SourceError(spec, "width and height must be >= 8")
        self.o = o
        self.fps = float(o["fps"])
        self.frame_count = int(o["frames"])
        self.calibration = Calibration(None, "none")
        self.pixel_format = "gray8" if o["channels"] == 1 else "rgb24"

    def open(self) -> None:
        rng = np.random.default_rng(self.o["seed"])
        h, w = self.o["height"], self.o["width"]
        self._noise = rng.integers(0, 32, size=(h, w), dtype=np.uint8)
        self._ramp = (np.arange(w, dtype=np.uint16)[None, :] * 200 // w).astype(np.uint8)

    def frames(self) -> Iterator[SourceFrame]:
        h, w = self.o["height"], self.o["width"]
        den = max(1, round(self.fps * 1000))
        for i in range(self.frame_count):
            img = np.roll(self._ramp, i, axis=1) + self._noise
            img = np.broadcast_to(img, (h, w)).copy()
            img.reshape(-1)[:8] = np.frombuffer(np.uint64(i).tobytes(), np.uint8)
            if self.o["channels"] == 3:
                img = np.repeat(img[:, :, None], 3, axis=2)
            yield SourceFrame(image=img, frame_index=i, pts=i * 1000, time_base=(1, den))


def frame_id(image: np.ndarray) -> int:
    """The frame index written into a pattern frame (see module doc)."""
    flat = image.reshape(-1) if image.ndim == 2 else image[:, :, 0].reshape(-1)
    return int(np.frombuffer(flat[:8].tobytes(), np.uint64)[0])
