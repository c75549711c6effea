"""Physics checks of the simulator: speckle statistics, attenuation, enhancement, lesion contrast."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from sonoflow.stream.sim import sample_case, simulate_clip
from sonoflow.stream.sim.config import TISSUE_CODES

RAYLEIGH_SNR = math.sqrt(math.pi / (4.0 - math.pi))  # 1.913

PHANTOM = dict(homogeneous=True, tgc=False, noise=False, clutter=False, events=False, ui=False,
               sweep=False, breathing=False, tremor=False, depth_mm=160, freq_mhz=3.5,
               fibrosis_stage=0, persistence=0.0)


def _beams(case, n_frames, height=480, width=640):
    return [f.beam for f in simulate_clip(case, n_frames=n_frames, height=height, width=width,
                                          fps=10.0, keep_beam=True)]


def test_envelope_snr_of_fully_developed_speckle_is_rayleigh():
    case = sample_case(11, steatosis_grade=0, n_lesions=0, **PHANTOM)
    beams = _beams(case, 3)
    b = beams[0]
    att = 2.0 * case.probe.freq_mhz * case.liver.attenuation_db_cm_mhz * b.depth_mm / 10.0
    comp = 10 ** (att / 20.0)  # undo the known attenuation so the region is homogeneous
    sel = (b.depth_mm > 20) & (b.depth_mm < 90)
    lines = slice(10, b.envelope.shape[0] - 10)
    snrs = []
    for beam in beams:
        env = (beam.envelope * comp[None, :])[lines][:, sel]
        for slab in np.array_split(env, 8, axis=1):
            snrs.append(slab.mean() / slab.std())
    snr = float(np.mean(snrs))
    assert abs(snr - RAYLEIGH_SNR) / RAYLEIGH_SNR < 0.05, f"envelope SNR {snr:.3f} vs 1.913"
    # Intensity of fully developed speckle is exponential: mean/std = 1.
    inten = np.concatenate([((bm.envelope * comp[None, :])[lines][:, sel] ** 2).ravel()
                            for bm in beams])
    assert abs(inten.mean() / inten.std() - 1.0) < 0.06


@pytest.mark.parametrize("grade", [0, 1, 2, 3])
def test_attenuation_slope_is_recovered_per_steatosis_grade(grade):
    case = sample_case(20 + grade, steatosis_grade=grade, n_lesions=0, **PHANTOM)
    beams = _beams(case, 4, height=360, width=480)
    inten = np.mean([b.envelope[8:-8] ** 2 for b in beams], axis=(0, 1))
    d_cm = beams[0].depth_mm / 10.0
    alpha = case.liver.attenuation_db_cm_mhz
    # Fit where the echo is well above float precision and away from the PSF edge.
    sel = (d_cm > 1.0) & (d_cm < min(12.0, 70.0 / (2 * 3.5 * alpha)))
    slope_db_cm = np.polyfit(d_cm[sel], 10 * np.log10(inten[sel]), 1)[0]
    est = -slope_db_cm / (2.0 * case.probe.freq_mhz)
    assert abs(est - alpha) / alpha < 0.10, f"S{grade}: recovered {est:.3f} vs {alpha:.3f}"
    lo, hi = case.liver.cutoffs_db_cm_mhz[grade - 1] if grade else 0.0, (
        case.liver.cutoffs_db_cm_mhz[grade] if grade < 3 else 10.0)
    assert lo <= alpha < hi


def _one_lesion_case(cls, diameter_mm, seed, **extra):
    kw = dict(n_lesions=1, lesion_classes=[cls], lesion_diameters_mm=[diameter_mm], sweep=False,
              breathing=False, tremor=False, events=False, ui=False, vessels=False,
              gallbladder=False, ribs=False, diaphragm=False, persistence=0.0)
    kw.update(extra)
    return sample_case(seed, **kw)


def test_cyst_shows_posterior_enhancement():
    case = _one_lesion_case("cyst", 18.0, 5, steatosis_grade=1, fibrosis_stage=0)
    beams = _beams(case, 3)
    b = beams[0]
    rows, cols = np.nonzero(b.ids == 1)
    assert len(rows) > 50, "the cyst must be in the plane"
    l_c = int(np.median(rows))
    half = (rows.max() - rows.min()) // 4
    s_bot = cols.max()
    below = slice(s_bot + 8, s_bot + 60)
    lat = rows.max() - rows.min()
    inten = np.mean([bm.envelope ** 2 for bm in beams], axis=0)
    behind = inten[l_c - half:l_c + half, below].mean()
    side_rows = np.r_[max(0, rows.min() - 2 * lat):rows.min() - lat // 2,
                      rows.max() + lat // 2:min(b.ids.shape[0], rows.max() + 2 * lat)]
    beside = inten[side_rows][:, below].mean()
    gain_db = 10 * np.log10(behind / beside)
    assert gain_db > 2.0, f"posterior enhancement {gain_db:.1f} dB"


def _ring(mask, px):
    k = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool) & ~cv2.dilate(
        mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)


@pytest.mark.parametrize("cls,diameter,sign,extra", [
    ("cyst", 16.0, -1, {}),
    ("hemangioma", 16.0, +1, {}),
    ("hcc", 15.0, -1, {}),
    ("metastasis", 18.0, -1, {}),
    ("fat_sparing", 24.0, -1, {"steatosis_grade": 3}),
])
def test_mask_and_box_agree_with_rendered_lesion(cls, diameter, sign, extra):
    case = _one_lesion_case(cls, diameter, 41, fibrosis_stage=0, **extra)
    frames = list(simulate_clip(case, n_frames=2, height=480, width=640, fps=10.0))
    f = frames[-1]
    mask = f.lesion_ids == 1
    assert mask.sum() > 30
    (entry,) = f.truth["lesions"]
    x0, y0, x1, y1 = entry["xyxy_px"]
    ys, xs = np.nonzero(mask)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
    assert entry["class"] == cls
    img = f.image.astype(np.float64)
    liver = f.tissue == TISSUE_CODES["liver"]
    ring = _ring(mask, 10) & liver
    inner = cv2.erode(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    if cls == "metastasis" and case.lesions[0].subtype == "target":
        # The hypoechoic halo: the outer part of the mask is darker than the liver around it.
        inside = img[mask & ~inner].mean()
    elif cls == "metastasis" and case.lesions[0].subtype == "hyperechoic":
        sign = +1  # echogenic core inside a thin halo
        inside = img[cv2.erode(mask.astype(np.uint8), np.ones((11, 11), np.uint8)).astype(bool)].mean()
    else:
        inside = img[cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)].mean()
    outside = img[ring].mean()
    assert sign * (inside - outside) > 8, f"{cls}: inside {inside:.1f} vs around {outside:.1f}"
    # Pixel diameter measured on the mask matches the 3-D size (cut near the equator).
    assert 0.5 * diameter < entry["diameter_mm"] < 1.5 * diameter


def test_fatty_liver_brightens_against_the_kidney():
    """Hepatorenal contrast: liver minus kidney cortex level grows with the steatosis grade."""
    contrast = []
    for grade in (0, 3):
        case = sample_case(300, kidney=True, steatosis_grade=grade, fibrosis_stage=0, n_lesions=0,
                           events=False, ui=False, sweep=False, breathing=False, tremor=False,
                           vessels=False, gallbladder=False, ribs=False, depth_mm=160,
                           view="subcostal")
        b = _beams(case, 1)[0]
        kid = b.tissue == TISSUE_CODES["kidney"]
        assert kid.sum() > 200, "the kidney must be in the plane"
        rows, cols = np.nonzero(kid)
        band = slice(cols.min(), cols.min() + 25)  # the kidney's near edge and liver beside it
        liver = b.tissue[:, band] == TISSUE_CODES["liver"]
        k = kid[:, band]
        level = b.log_db[:, band]
        contrast.append(float(level[liver].mean() - level[k].mean()))
    assert contrast[1] - contrast[0] > 5.0, f"liver-kidney contrast S0 {contrast[0]:.1f} dB, S3 {contrast[1]:.1f} dB"
