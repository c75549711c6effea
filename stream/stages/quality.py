"""``quality``: per-frame quality score and flags, and the key-frame decision for ``infer``.

Reads ``gray`` and ``sector_mask`` from ``preprocess`` (falls back to ``image`` and the whole
frame when ``preprocess`` did not run). Fills ``header.quality``
(:class:`~sonoflow.stream.messages.QualityResult`); a frame the policy does not pass gets
``header.status`` "rejected" (quality) or "dropped" (every-N), with ``reason`` for the
renderer.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, ClassVar

import numpy as np

from sonoflow.stream.errors import ConfigError
from sonoflow.stream.imaging.keyframe import DEFAULT_REJECT_FLAGS, KeyframePolicy
from sonoflow.stream.imaging.quality_metrics import FLAGS, QualityAssessor, QualityParams
from sonoflow.stream.imaging.sector import SectorGeometry, to_gray
from sonoflow.stream.messages import FrameHeader, Packet, QualityResult
from sonoflow.stream.stage import Stage

_PARAM_KEYS = {f.name: f.default for f in fields(QualityParams)}


class QualityStage(Stage):
    """Quality measures, score, flags and key-frame policy.

    Config keys: ``policy`` ("all" | "every_n" | "threshold"), ``n``, ``threshold``,
    ``reject_flags`` (see :mod:`sonoflow.stream.imaging.keyframe`), and every threshold of
    :class:`~sonoflow.stream.imaging.quality_metrics.QualityParams` by its field name.
    """

    per_stream = True  # frame history (sector, freeze, motion) is per stream

    key: ClassVar[str] = "quality"
    defaults: ClassVar[dict[str, Any]] = {
        "policy": "threshold",
        "n": 1,
        "threshold": 0.5,
        "reject_flags": list(DEFAULT_REJECT_FLAGS),
        **_PARAM_KEYS,
    }

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        c = self.config
        unknown = set(c["reject_flags"]) - set(FLAGS)
        if unknown:
            raise ConfigError(f"quality: reject_flags {sorted(unknown)} unknown; flags are "
                              f"{FLAGS}")
        self.policy = KeyframePolicy(c["policy"], c["n"], c["threshold"], c["reject_flags"])
        self.params = QualityParams(**{k: c[k] for k in _PARAM_KEYS})
        self.assessor = QualityAssessor(self.params)
        self._frames = 0
        self._geom_key: tuple | None = None
        self._geom: SectorGeometry | None = None

    def flush(self, eos: Packet) -> list[Packet]:
        self.assessor.reset()
        self._frames = 0
        return []

    def process(self, packet: Packet) -> Packet:
        """Score one frame packet and apply the key-frame policy (other kinds pass through)."""
        header = packet.header
        if not isinstance(header, FrameHeader) or "image" not in packet.arrays:
            return packet
        gray = packet.arrays.get("gray")
        if gray is None:
            gray = to_gray(packet.arrays["image"])
        geom = self._sector(packet, header, gray.shape)
        score, flags, metrics = self.assessor.assess(gray, geom)
        decision = self.policy.decide(self._frames, score, flags)
        self._frames += 1
        header.quality = QualityResult(score=round(score, 4), flags=flags,
                                       metrics={k: round(v, 5) for k, v in metrics.items()},
                                       keyframe=decision.keyframe, reason=decision.reason)
        if not decision.keyframe:
            header.status = decision.status
        return packet

    def _sector(self, packet: Packet, header: FrameHeader, shape: tuple[int, int]
                ) -> SectorGeometry | None:
        """The sector as a geometry object, rebuilt only when the mask array changes."""
        mask = packet.arrays.get("sector_mask")
        if mask is None:
            return None
        pre = header.preprocess
        box = pre.sector_xyxy_px if pre is not None else None
        key = (shape, box, pre.sector_kind if pre is not None else "", mask.ctypes.data)
        if key == self._geom_key and self._geom is not None:
            return self._geom
        if self._geom is not None and self._geom.shape == shape and box == self._geom.xyxy_px \
                and np.array_equal(self._geom.mask, mask):
            self._geom_key = key
            return self._geom
        kind = pre.sector_kind if pre is not None else "full"
        m = np.ascontiguousarray(mask)
        if box is None:
            ys, xs = np.nonzero(m)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) \
                if ys.size else (0, 0, 0, 0)
        fan = header.extra.get("preprocess", {})
        apex, radii, angles = (fan.get("apex_xy_px"), fan.get("radii_px"),
                               fan.get("half_angles_rad"))
        self._geom = SectorGeometry(
            kind=kind, shape=shape, mask=m, xyxy_px=tuple(box),
            apex_xy_px=tuple(apex) if apex else None, radii_px=tuple(radii) if radii else None,
            half_angles_rad=tuple(angles) if angles else None)
        self._geom_key = key
        return self._geom
