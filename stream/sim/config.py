"""Constant tables of the simulator: literature thresholds (with their source) and our own choices.

Everything here is data, not code, so a study can change a cut-off without touching the renderer.
Units are in the names: ``_db`` (decibel), ``_db_cm_mhz`` (attenuation slope), ``_mm``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Ground-truth format version written into every ``<clip>.gt.json``.
SCHEMA = "sonoflow.sim/1"

#: Steatosis cut-offs S1, S2, S3 on the attenuation slope (dB/cm/MHz).
STEATOSIS_CUTOFFS_DB_CM_MHZ: tuple[float, float, float] = (0.67, 0.72, 0.86)
#: Where the cut-offs come from (kept next to the numbers, as the project rules ask).
STEATOSIS_CUTOFFS_SOURCE = (
    "Canon ATI cut-offs S1 >= 0.67, S2 >= 0.72, S3 >= 0.86 dB/cm/MHz as cited by the fatty-liver "
    "paper (ATI vs histological grade: Tada et al., Ultrasound Med Biol 2019, PMID 31277922). The "
    "exact numbers could not be verified in the stored corpus (SIMULATOR.md section 1.1); cut-offs "
    "differ between studies and vendors, so treat them as configuration."
)
#: Lower edge of the normal-liver (S0) attenuation range; normal liver in vivo is
#: 0.47-0.52 dB/cm/MHz (PMID 6539974, PMID 3279691).
S0_MIN_DB_CM_MHZ = 0.48
#: Upper edge of the S3 range (fatty liver ~0.85 dB/cm/MHz in Lu, Zagzebski, Lee 1999).
S3_MAX_DB_CM_MHZ = 1.05
#: Gap kept between a sampled attenuation and a cut-off so the grade is unambiguous.
CUTOFF_MARGIN_DB_CM_MHZ = 0.005

#: Backscatter rise of the liver per steatosis grade ("bright liver"), dB vs normal liver.
#: Lu et al. 1999 measured about +11 dB for fatty vs normal liver; we use 3 dB per grade.
STEATOSIS_BACKSCATTER_DB_PER_GRADE = 3.0

#: Fibrosis stage F0..F4 -> texture standard deviation (dB), texture correlation (mm),
#: capsule nodularity amplitude (mm). Our own design (SIMULATOR.md section 4.3), not a biomarker.
FIBROSIS_TEXTURE_DB = (0.6, 1.0, 1.6, 2.6, 3.4)
FIBROSIS_TEXTURE_CORR_MM = (1.6, 1.6, 1.6, 2.4, 2.4)
FIBROSIS_NODULARITY_MM = (0.0, 0.0, 0.25, 0.6, 1.4)

#: Lesion classes, in the order of their class index.
LESION_CLASSES = ("cyst", "hemangioma", "metastasis", "hcc", "fat_sparing")
MALIGNANT_CLASSES = frozenset({"metastasis", "hcc"})
#: Observations US LI-RADS v2017 treats as definitely benign (category US-1 on their own).
DEFINITELY_BENIGN_CLASSES = frozenset({"cyst", "hemangioma", "fat_sparing"})
#: US LI-RADS v2017: an observation < 10 mm that is not definitely benign is US-2
#: (subthreshold), >= 10 mm is US-3 (Radiographics 2019, PMC6542628).
LIRADS_THRESHOLD_MM = 10.0

#: Sampling weights of lesion classes (fat sparing only when steatosis grade >= 2).
LESION_CLASS_WEIGHTS = {"cyst": 0.25, "hemangioma": 0.22, "metastasis": 0.2, "hcc": 0.2,
                        "fat_sparing": 0.13}
#: Lesion size: log-normal main mode clipped to 10-50 mm, plus a subthreshold share 3-9.9 mm.
LESION_MEDIAN_MM = 20.0
LESION_SIGMA_LN = 0.45
LESION_SUBTHRESHOLD_FRACTION = 0.33
LESION_MIN_MM = 3.0
LESION_MAX_MM = 50.0

#: Tissue label codes of ``SimFrame.tissue`` (documented in docs/simulator.md).
TISSUE_CODES = {
    "outside": 0,
    "liver": 1,
    "wall": 2,
    "portal_vein": 3,
    "hepatic_vein": 4,
    "diaphragm": 5,
    "lung_mirror": 6,
    "gallbladder": 7,
    "rib": 8,
    "regenerative_nodule": 9,
    "lesion": 10,
    "kidney": 11,
}

#: Quality labels; a frame with several faults gets the first in this order.
QUALITY_PRECEDENCE = ("black", "frozen", "no_contact", "partial_contact", "motion_blur",
                      "too_bright", "too_dark")
#: Per-clip probability of each quality event when ``events=True``.
EVENT_PROBABILITIES = {"frozen": 0.35, "contact": 0.30, "gain": 0.30, "black": 0.10,
                       "motion_blur": 0.25}
#: Names accepted in ``events=[...]`` to force events.
EVENT_KINDS = ("frozen", "no_contact", "partial_contact", "too_bright", "too_dark", "black",
               "motion_blur")
#: A gain step beyond this (dB, vs the clip's baseline) labels the frame too_bright / too_dark.
GAIN_FAULT_DB = 6.0
#: Lost-line fraction above which a frame is ``no_contact`` rather than ``partial_contact``.
NO_CONTACT_FRACTION = 0.9


@dataclass(frozen=True)
class BeamGridSize:
    """Beam-space grid (lines x samples) used for a given output size.

    Attributes:
        n_lines: number of scan lines across the sector.
        n_samples: number of range samples along each line.
    """

    n_lines: int
    n_samples: int


def beam_grid_for(height_px: int, width_px: int) -> BeamGridSize:
    """Beam grid matched to the output size: about one line per 3.3 output columns at 640.

    Args:
        height_px: output image height.
        width_px: output image width.

    Returns:
        The grid; 192 x 448 at 480 x 640, never below 64 x 128.
    """
    n_lines = max(64, int(round(192 * width_px / 640 / 8)) * 8)
    n_samples = max(128, int(round(448 * height_px / 480 / 8)) * 8)
    return BeamGridSize(n_lines, n_samples)


def steatosis_bins(cutoffs: tuple[float, float, float] = STEATOSIS_CUTOFFS_DB_CM_MHZ,
                   ) -> tuple[tuple[float, float], ...]:
    """Attenuation range (dB/cm/MHz) sampled for each steatosis grade S0..S3.

    Args:
        cutoffs: S1, S2, S3 thresholds in increasing order.

    Returns:
        Four ``(low, high)`` ranges, each strictly inside its grade's bin.
    """
    c1, c2, c3 = cutoffs
    m = CUTOFF_MARGIN_DB_CM_MHZ
    return ((S0_MIN_DB_CM_MHZ, c1 - m), (c1 + m, c2 - m), (c2 + m, c3 - m), (c3 + m,
                                                                               S3_MAX_DB_CM_MHZ))


def grade_for_attenuation(alpha_db_cm_mhz: float,
                          cutoffs: tuple[float, float, float] = STEATOSIS_CUTOFFS_DB_CM_MHZ,
                          ) -> int:
    """Steatosis grade implied by an attenuation slope and the cut-offs (0..3)."""
    return int(sum(alpha_db_cm_mhz >= c for c in cutoffs))
