"""US LI-RADS v2017 visualization score (A / B / C) of a clip from its frames' quality.

US LI-RADS v2017 grades how well the liver could be seen: **A** no or minimal limitations,
**B** moderate limitations (may obscure small masses), **C** severe limitations (significantly
lowers sensitivity for focal lesions). The standard defines the categories by the reader's
judgement (parenchymal heterogeneity, beam attenuation, liver visualised in part), not by a
number; this module maps frame quality onto them with the rule below, a design choice of this
project that a reader can audit (``docs/preprocess.md``):

* usable frames: not ``black`` / ``frozen`` / ``no_contact``;
* "limited" usable frames: score < ``LIMITED_SCORE`` or flagged ``partial_contact`` /
  ``low_coverage`` / ``motion_blur`` (part of the liver not seen, or smeared);
* **C** when fewer than ``C_MIN_USABLE`` of the frames are usable, or the median usable score
  is below ``C_MAX_MEDIAN``, or more than ``C_LIMITED`` of the usable frames are limited;
* **A** when at least ``A_MIN_USABLE`` are usable, the median score is at least
  ``A_MIN_MEDIAN`` and at most ``A_LIMITED`` of the usable frames are limited;
* **B** otherwise.
"""

from __future__ import annotations

import statistics

from sonoflow.stream.messages import QualityResult

HARD_FAIL = ("black", "frozen", "no_contact")
LIMITING = ("partial_contact", "low_coverage", "motion_blur")
LIMITED_SCORE = 0.5
A_MIN_USABLE, A_MIN_MEDIAN, A_LIMITED = 0.8, 0.7, 0.2
C_MIN_USABLE, C_MAX_MEDIAN, C_LIMITED = 0.5, 0.4, 0.6


def visualization_score(results: list[QualityResult]) -> tuple[str, str]:
    """Visualization score of a clip.

    Args:
        results: the quality results of the clip's frames (any order).

    Returns:
        ``(category, reason)``: "A" | "B" | "C" and a sentence with the figures behind it.
    """
    if not results:
        return "C", "no frame was assessed"
    usable = [r for r in results if not set(r.flags) & set(HARD_FAIL)]
    frac_usable = len(usable) / len(results)
    if not usable:
        return "C", f"none of {len(results)} frames usable (black, frozen or no contact)"
    med = statistics.median(r.score for r in usable)
    limited = sum(1 for r in usable if r.score < LIMITED_SCORE or set(r.flags) & set(LIMITING))
    frac_limited = limited / len(usable)
    figures = (f"{frac_usable:.0%} of {len(results)} frames usable, median score {med:.2f}, "
               f"{frac_limited:.0%} of usable frames limited")
    if frac_usable < C_MIN_USABLE or med < C_MAX_MEDIAN or frac_limited > C_LIMITED:
        return "C", f"severe limitations: {figures}"
    if frac_usable >= A_MIN_USABLE and med >= A_MIN_MEDIAN and frac_limited <= A_LIMITED:
        return "A", f"no or minimal limitations: {figures}"
    return "B", f"moderate limitations: {figures}"
