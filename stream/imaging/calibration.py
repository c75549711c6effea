"""Which pixel spacing a frame gets, and why: DICOM regions / simulator > depth ruler > none.

The source knows spacing only when the file or generator states it: DICOM's Sequence of
Ultrasound Regions (validated by the DICOM source: region inside the image, units cm, positive
deltas), the simulator, or a user override. Otherwise the on-screen depth ruler is read
(:mod:`sonoflow.stream.imaging.ruler`). When neither gives a spacing the frame is
"uncalibrated" (``mm_per_px`` None, source "none") and later stages apply no millimetre rules;
the note says why, so a user can see what was refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sonoflow.stream.imaging.ruler import RulerResult

#: spacing sources a frame header may carry that are taken as they are, best first
TRUSTED_SOURCES = ("dicom-regions", "simulator", "user")
#: plausible B-mode pixel spacing (mm/px): 0.01 (high-frequency, zoomed) .. 2 (tiny screens)
SPACING_RANGE_MM = (0.01, 2.0)


@dataclass(frozen=True)
class CalibrationDecision:
    """The spacing a frame is measured with.

    Attributes:
        mm_per_px: (x, y) in mm per pixel, or None (uncalibrated).
        source: "dicom-regions" | "simulator" | "user" | "depth-ruler" | "none".
        note: why a better source was refused, or how the ruler was read.
    """

    mm_per_px: tuple[float, float] | None
    source: str
    note: str = ""


def header_spacing_problem(spacing: tuple[float, float] | None) -> str:
    """Why a header's spacing cannot be used ('' when it can)."""
    if spacing is None:
        return "no spacing"
    if len(spacing) != 2:
        return f"spacing {spacing!r} is not an (x, y) pair"
    lo, hi = SPACING_RANGE_MM
    for v in spacing:
        if not (isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= hi):
            return f"spacing {tuple(spacing)} mm/px outside the plausible [{lo}, {hi}] mm/px"
    return ""


def decide_calibration(pixel_spacing_mm: tuple[float, float] | None, spacing_source: str,
                       spacing_note: str, ruler: RulerResult | None, ruler_note: str
                       ) -> CalibrationDecision:
    """Pick the spacing for a frame: trusted header spacing, else the ruler, else none.

    Args:
        pixel_spacing_mm: the source's (x, y) mm/px, if it stated one.
        spacing_source: where the source got it ("dicom-regions", "simulator", "user",
            "none").
        spacing_note: the source's reason for refusing its own calibration, if any.
        ruler: the depth ruler found on screen, if any.
        ruler_note: what the ruler search found or why it found nothing.

    Returns:
        The decision; its note joins every refusal on the way down the order.
    """
    refused: list[str] = []
    if spacing_source in TRUSTED_SOURCES:
        problem = header_spacing_problem(pixel_spacing_mm)
        if not problem:
            x, y = pixel_spacing_mm  # type: ignore[misc]
            return CalibrationDecision((float(x), float(y)), spacing_source, spacing_note)
        refused.append(f"{spacing_source}: {problem}")
    elif spacing_note:
        refused.append(spacing_note)
    elif spacing_source != "none":
        refused.append(f"unknown spacing source {spacing_source!r} (trusted: "
                       f"{', '.join(TRUSTED_SOURCES)})")
    if ruler is not None:
        note = "; ".join([*refused, ruler_note]) if refused else ruler_note
        return CalibrationDecision(ruler.mm_per_px, "depth-ruler", note)
    if not refused:
        refused.append("the source states no pixel spacing")
    return CalibrationDecision(None, "none", "; ".join([*refused, ruler_note]))
