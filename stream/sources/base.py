"""The capture-source protocol. Every source (file, device, DICOM, simulator, ZeroMQ) has it.

A source yields :class:`SourceFrame` objects in source order. Errors are raised as
:class:`~sonoflow.stream.errors.SourceError` naming the file and the problem; frames yielded
before the fault have already been delivered and are kept downstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np


@dataclass
class Calibration:
    """Pixel spacing known to the source itself (DICOM regions, simulator, user)."""

    mm_per_px: tuple[float, float] | None  # (x, y); None = uncalibrated
    source: str = "none"  # "dicom-regions" | "depth-ruler" | "simulator" | "user" | "none"
    note: str = ""  # why a calibration was refused, if it was


@dataclass
class SourceFrame:
    """One decoded frame.

    Attributes:
        image: ``uint8`` array, ``(H, W)`` grey or ``(H, W, 3)`` RGB, C-contiguous.
        frame_index: index in the source, from 0.
        pts: presentation time in ``time_base`` units.
        time_base: ``(num, den)`` seconds per pts tick.
        extra: per-frame side data worth forwarding (e.g. simulator ground-truth id); small.
    """

    image: np.ndarray | None
    frame_index: int
    pts: int
    time_base: tuple[int, int]
    extra: dict[str, Any] = field(default_factory=dict)
    #: set (and ``image`` may be None) when this one frame could not be decoded but the
    #: stream goes on; the frame is then accounted as "failed"
    error: str | None = None


class Source:
    """Base class. ``open()`` validates (raises SourceError), ``frames()`` iterates."""

    #: the string the user gave (path, ``sim:...``, ``camera:0``, ``zmq:...``)
    spec: str = ""
    #: nominal frame rate, used by ``realtime`` pacing; None when unknown
    fps: float | None = None
    #: frame count when the container says; None when unknown (live sources)
    frame_count: int | None = None
    calibration: Calibration = Calibration(None)
    #: True for devices and producers (no end; no meaningful frame count)
    live: bool = False

    def open(self) -> None:
        raise NotImplementedError

    def frames(self) -> Iterator[SourceFrame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    @property
    def stem(self) -> str:
        """Name for the per-source output folder."""
        from pathlib import Path

        s = self.spec
        if ":" in s and not Path(s).exists():
            return s.replace(":", "_").replace("/", "_").replace(",", "_").replace("=", "-")
        return Path(s).name.split(".")[0] or "source"
