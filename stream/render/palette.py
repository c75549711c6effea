"""Colours for the overlay: the Okabe-Ito palette (safe for the common colour-vision deficiencies).

Okabe M., Ito K. "Color Universal Design (CUD): how to make figures and presentations that are
friendly to colorblind people", 2008. Every colour here is also paired with a text label on the
image, so no meaning is carried by colour alone.

All colours are RGB tuples of ints in [0, 255] (the overlay is RGB, not OpenCV's BGR).
"""

from __future__ import annotations

from types import MappingProxyType

RGB = tuple[int, int, int]

BLACK: RGB = (0, 0, 0)
WHITE: RGB = (255, 255, 255)
ORANGE: RGB = (230, 159, 0)
SKY_BLUE: RGB = (86, 180, 233)
BLUISH_GREEN: RGB = (0, 158, 115)
YELLOW: RGB = (240, 228, 66)
BLUE: RGB = (0, 114, 178)
VERMILLION: RGB = (213, 94, 0)
REDDISH_PURPLE: RGB = (204, 121, 167)

#: lesion type -> colour. Malignant types (metastasis, hcc) get the two warm, saturated hues.
CLASS_COLOURS = MappingProxyType({
    "cyst": SKY_BLUE,
    "hemangioma": BLUISH_GREEN,
    "metastasis": VERMILLION,
    "hcc": REDDISH_PURPLE,
    "other": YELLOW,
    "fat_sparing": YELLOW,  # the simulator's mimic class, shown like "other"
})
#: colour for a detection whose label is not one of the classes above (e.g. "lesion")
UNKNOWN_COLOUR: RGB = ORANGE
LIVER_COLOUR: RGB = BLUE

#: quality score bands, lowest first: (upper bound exclusive, colour)
QUALITY_BANDS: tuple[tuple[float, RGB], ...] = (
    (0.4, VERMILLION),
    (0.7, ORANGE),
    (float("inf"), BLUISH_GREEN),
)


def class_colour(label: str) -> RGB:
    """The colour of a lesion class (``UNKNOWN_COLOUR`` for an unknown label)."""
    return CLASS_COLOURS.get(label, UNKNOWN_COLOUR)


def quality_colour(score: float) -> RGB:
    """The colour of a quality score in [0, 1] (red-ish low, green-ish high)."""
    for upper, colour in QUALITY_BANDS:
        if score < upper:
            return colour
    return QUALITY_BANDS[-1][1]
