"""Per-stream numbers for the HUD: arrival rate (fps) and drops counted from ``seq`` gaps."""

from __future__ import annotations

from collections import deque

from sonoflow.stream.messages import FrameHeader
from sonoflow.stream.render.layers import HudStats

#: frames in the sliding window the fps is measured over (about one second at 30 fps)
FPS_WINDOW_FRAMES = 30


class StreamStats:
    """Tracks one stream as its frames reach the renderer or a view. One instance per stream.

    ``fps`` is the arrival rate over the last :data:`FPS_WINDOW_FRAMES` frames; ``drops`` counts
    the ``seq`` numbers that never arrived (a gap of k is k drops; a repeated or older ``seq``
    is not a drop).
    """

    def __init__(self) -> None:
        self._arrivals_ns: deque[int] = deque(maxlen=FPS_WINDOW_FRAMES)
        self._last_seq: int | None = None
        self.drops = 0
        self.frames = 0

    def update(self, header: FrameHeader, now_ns: int) -> HudStats:
        """Account for ``header`` arriving at ``now_ns`` (monotonic ns); returns the HUD numbers."""
        if self._last_seq is not None and header.seq > self._last_seq + 1:
            self.drops += header.seq - self._last_seq - 1
        if self._last_seq is None or header.seq > self._last_seq:
            self._last_seq = header.seq
        self.frames += 1
        self._arrivals_ns.append(now_ns)
        return HudStats(now_ns=now_ns, fps=self.fps, drops=self.drops)

    @property
    def fps(self) -> float | None:
        """Frames per second over the window, None before two frames have arrived."""
        if len(self._arrivals_ns) < 2:
            return None
        span_ns = self._arrivals_ns[-1] - self._arrivals_ns[0]
        return None if span_ns <= 0 else (len(self._arrivals_ns) - 1) * 1e9 / span_ns
