"""Probe pose per frame: elevational sweep, breathing, hand tremor and jerks.

The liver moves under a probe-locked abdominal wall (the "sliding" sign): breathing shifts the
liver frame relative to the probe, the sweep and tremor move the probe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sonoflow.stream.sim.seeding import stream_rng


@dataclass(frozen=True)
class Pose:
    """Liver-frame pose of the imaging plane for one frame.

    Attributes:
        xp_mm, yp_mm, zp_mm: liver-frame position of the probe-face centre (breathing included).
        phi_rad: in-plane rotation.
        breath_mm: breathing offset (lateral, elevational, depth) of the liver.
        probe_y_mm: elevational probe position without breathing (for the truth).
    """

    xp_mm: float
    yp_mm: float
    zp_mm: float
    phi_rad: float
    breath_mm: tuple[float, float, float]
    probe_y_mm: float

    def truth(self) -> dict:
        """The pose entry of the frame truth."""
        return {"x_mm": round(self.xp_mm, 4), "y_mm": round(self.yp_mm, 4),
                "z_mm": round(self.zp_mm, 4), "phi_rad": round(self.phi_rad, 5),
                "breath_mm": [round(b, 4) for b in self.breath_mm]}


def sweep_offset_mm(t_s: float, speed_mm_s: float, range_mm: float) -> float:
    """Triangle-wave elevational offset inside ``+-range/2``.

    The sweep starts at the end opposite to its direction (``-sign(v) range/2``), so the
    first pass crosses the whole range, as a sonographer's sweep does.
    """
    if speed_mm_s == 0.0 or range_mm <= 0.0:
        return 0.0
    half = range_mm / 2.0
    ph = (abs(speed_mm_s) * t_s) % (2.0 * range_mm)
    pos = ph if ph <= range_mm else 2.0 * range_mm - ph
    return math.copysign(1.0, speed_mm_s) * (pos - half)


def pose_at(case, frame_index: int, fps: float, jerk_mm: float = 0.0) -> Pose:
    """The pose of frame ``frame_index``.

    Args:
        case: the case (its ``motion``).
        frame_index: frame number from 0.
        fps: frame rate (sets time).
        jerk_mm: extra lateral displacement of a motion-blur jerk.

    Returns:
        The pose; depends only on ``(case, frame_index, fps, jerk_mm)``.
    """
    m = case.motion
    t = frame_index / fps
    rng = stream_rng(case.seed, "tremor", frame_index)
    tx, ty = rng.normal(0.0, m.tremor_mm, size=2) if m.tremor_mm > 0 else (0.0, 0.0)
    b = ((1.0 - math.cos(2.0 * math.pi * t / m.breath_period_s + m.breath_phase_rad)) / 2.0) ** 1.5
    ox, oy, oz = (m.breath_amp_mm * b * e for e in m.breath_dir)
    y_probe = m.y0_mm + sweep_offset_mm(t, m.sweep_speed_mm_s, m.sweep_range_mm) + float(ty)
    x_probe = m.x0_mm + float(tx) + jerk_mm
    return Pose(xp_mm=x_probe - ox, yp_mm=y_probe - oy, zp_mm=-oz,
                phi_rad=m.phi0_rad + 0.02 * jerk_mm / 5.0, breath_mm=(ox, oy, oz),
                probe_y_mm=y_probe)
