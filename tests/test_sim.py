"""Simulator API: shapes, truth, determinism, UI, events, sweeps, sampling tables."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sonoflow.stream.errors import ConfigError
from sonoflow.stream.sim import SimFrame, config, sample_case, simulate_clip
from sonoflow.stream.sim.config import TISSUE_CODES, grade_for_attenuation, steatosis_bins

H, W = 240, 320


def _clip(case, n=6, h=H, w=W, fps=30.0):
    return list(simulate_clip(case, n_frames=n, height=h, width=w, fps=fps))


def test_frame_shapes_types_and_truth_keys():
    case = sample_case(3, n_lesions=2, ui=True, events=False, sweep=False)
    frames = _clip(case, 3)
    assert len(frames) == 3
    for i, f in enumerate(frames):
        assert isinstance(f, SimFrame) and f.frame_index == i
        assert f.image.shape == (H, W) and f.image.dtype == np.uint8
        assert f.lesion_ids.shape == (H, W) and f.lesion_ids.dtype == np.uint8
        assert f.tissue.shape == (H, W) and f.tissue.dtype == np.uint8
        assert f.sector_mask.dtype == bool and f.ui_text_mask.dtype == bool
        assert set(np.unique(f.tissue)) <= set(TISSUE_CODES.values())
        # Labels live only inside the sector; nothing is imaged outside it.
        assert not f.tissue[~f.sector_mask].any() and not f.lesion_ids[~f.sector_mask].any()
        t = f.truth
        assert t["frame_index"] == i and t["quality_label"] == "good"
        for les in t["lesions"]:
            assert {"lesion_id", "class", "xyxy_px", "diameter_mm"} <= set(les)
            x0, y0, x1, y1 = les["xyxy_px"]
            assert (f.lesion_ids[y0:y1, x0:x1] == les["lesion_id"]).any()
        json.dumps(t)
    ct = case.truth()
    assert {"steatosis_grade", "attenuation_db_cm_mhz", "fibrosis_stage", "lesions",
            "lirads_category"} <= set(ct)
    assert [les["lesion_id"] for les in ct["lesions"]] == [1, 2]
    for les in ct["lesions"]:
        assert {"lesion_id", "class", "malignant", "diameter_mm", "lirads_category"} <= set(les)
    mx, my = case.mm_per_px(H, W)
    assert mx == my and 0.3 < mx < 1.5


def test_same_seed_gives_bit_identical_frames_and_truth():
    a = _clip(sample_case(77, events=True), 8)
    b = _clip(sample_case(77, events=True), 8)
    for fa, fb in zip(a, b, strict=True):
        assert np.array_equal(fa.image, fb.image)
        assert np.array_equal(fa.lesion_ids, fb.lesion_ids)
        assert np.array_equal(fa.tissue, fb.tissue)
        assert json.dumps(fa.truth, sort_keys=True) == json.dumps(fb.truth, sort_keys=True)
    assert sample_case(77).truth() == sample_case(77).truth()
    with_threads = list(simulate_clip(sample_case(77, events=True), n_frames=8, height=H,
                                      width=W, workers=2))
    assert all(np.array_equal(fa.image, fw.image) and fa.truth == fw.truth
               for fa, fw in zip(a, with_threads, strict=True))
    c = _clip(sample_case(78, events=True), 1)
    assert not np.array_equal(a[0].image, c[0].image)


def test_ui_is_outside_the_sector_with_exact_mask_and_ruler():
    case = sample_case(5, ui=True, events=False)
    f = _clip(case, 1, 480, 640)[0]
    assert f.ui_text_mask.any()
    assert not (f.ui_text_mask & f.sector_mask).any()
    # Outside the sector only UI pixels are lit, and every UI pixel is lit.
    outside = ~f.sector_mask
    assert not f.image[outside & ~f.ui_text_mask].any()
    assert (f.image[f.ui_text_mask] > 0).all()
    no_ui = _clip(sample_case(5, ui=False, events=False), 1, 480, 640)[0]
    assert not no_ui.ui_text_mask.any() and not no_ui.image[outside].any()
    from sonoflow.stream.sim.clip import ClipRenderer

    clip = ClipRenderer(case, 1, 480, 640, 30.0)
    kinds = {it["kind"] for it in clip.ui.items}
    assert {"patient_name", "patient_id", "date", "ruler", "ruler_label"} <= kinds
    labels = {it["text"] for it in clip.ui.items if it["kind"] == "ruler_label"}
    assert {"0", "5", "10"} <= labels
    ticks = clip.ui.ruler["ticks"]
    spacing = np.diff([t["y_px"] for t in ticks])
    mm_px = case.mm_per_px(480, 640)[1]
    assert np.all(np.abs(spacing - 10.0 / mm_px) <= 1.0)
    for it in clip.ui.items:
        x0, y0, x1, y1 = it["xyxy_px"]
        assert f.ui_text_mask[y0:y1, x0:x1].any()


@pytest.mark.parametrize("event", config.EVENT_KINDS)
def test_forced_quality_event_labels_frames(event):
    case = sample_case(9, events=[event], sweep=False)
    frames = _clip(case, 40, 128, 160)
    labels = [f.truth["quality_label"] for f in frames]
    assert event in labels, labels
    for prev, f in zip(frames, frames[1:], strict=False):
        lab = f.truth["quality_label"]
        if lab == "frozen":
            assert np.array_equal(f.image, prev.image)
            assert f.truth["lesions"] == prev.truth["lesions"]
        if lab == "black":
            assert not f.image.any()
        if lab != "frozen":
            assert f.truth["frame_index"] == f.frame_index
    good = [f for f in frames if f.truth["quality_label"] == "good"]
    assert good and good[0].image[good[0].sector_mask].mean() > 20
    if event in ("too_bright", "too_dark"):
        bad = [f for f in frames if f.truth["quality_label"] == event][-1]
        diff = bad.image[bad.sector_mask].mean() - good[0].image[good[0].sector_mask].mean()
        assert diff * (1 if event == "too_bright" else -1) > 15
    if event == "no_contact":
        bad = [f for f in frames if f.truth["quality_label"] == event]
        # Persistence keeps a fading trace of the last contact frame; then it goes dark.
        # (electronic noise amplified by the TGC stays visible at depth, as on a scanner).
        ref = good[0].image[good[0].sector_mask].mean()
        assert min(f.image[f.sector_mask].mean() for f in bad) < 0.4 * ref
        assert all(f.truth["contact_fraction"] < 0.1 for f in bad)


def test_sweep_moves_lesions_in_and_out_of_the_plane():
    case = sample_case(14, n_lesions=1, lesion_classes=["hemangioma"],
                       lesion_diameters_mm=[12.0], sweep=True, events=False)
    frames = _clip(case, 30, 128, 160, fps=2.0)
    seen = [bool(f.truth["lesions"]) for f in frames]
    assert any(seen) and not all(seen)
    ids = {les["lesion_id"] for f in frames for les in f.truth["lesions"]}
    assert ids == {1}
    fr = [les["visible_fraction"] for f in frames for les in f.truth["lesions"]]
    assert max(fr) - min(fr) > 0.25  # the cut grows and shrinks as the plane passes


def test_steatosis_bins_follow_the_configured_cutoffs():
    bins = steatosis_bins()
    for grade, (lo, hi) in enumerate(bins):
        assert grade_for_attenuation(lo) == grade and grade_for_attenuation(hi) == grade
    for seed in range(40):
        liv = sample_case(seed).liver
        assert grade_for_attenuation(liv.attenuation_db_cm_mhz) == liv.steatosis_grade
    custom = (0.6, 0.7, 0.8)
    liv = sample_case(1, steatosis_grade=2, steatosis_cutoffs_db_cm_mhz=custom).liver
    assert 0.7 <= liv.attenuation_db_cm_mhz < 0.8
    assert "0.67" in config.STEATOSIS_CUTOFFS_SOURCE


def test_lesion_size_distribution_and_lirads():
    sizes = []
    for seed in range(150):
        for les in sample_case(seed, n_lesions=3).lesions:
            sizes.append(les.diameter_mm)
            cat = les.lirads_category
            if les.cls in ("cyst", "hemangioma", "fat_sparing"):
                assert cat == "US-1"
            else:
                assert cat == ("US-2" if les.diameter_mm < 10 else "US-3")
    sizes = np.array(sizes)
    assert sizes.min() >= 3.0 and sizes.max() <= 50.0
    assert 0.25 < (sizes < 10).mean() < 0.42


def test_bad_overrides_raise_config_errors():
    with pytest.raises(ConfigError, match="unknown override"):
        sample_case(1, steatosis=2)
    with pytest.raises(ConfigError, match="fat_sparing"):
        sample_case(1, lesion_classes=["fat_sparing"], steatosis_grade=0)
    with pytest.raises(ConfigError, match="out of range"):
        sample_case(1, depth_mm=50)
    with pytest.raises(ConfigError, match="outside the bin"):
        sample_case(1, steatosis_grade=0, attenuation_db_cm_mhz=0.9)
    with pytest.raises(ConfigError):
        next(simulate_clip(sample_case(1), n_frames=1, height=10, width=10))


def test_consecutive_frames_are_correlated_but_never_identical_unless_frozen():
    """A freeze detector must tell bit-identical repeats from a still probe (DESIGN: quality)."""
    case = sample_case(2, events=False, ui=False, sweep=False, breathing=False, persistence=0.0)
    frames = _clip(case, 5)
    for a, b in zip(frames, frames[1:], strict=False):
        m = (a.tissue == TISSUE_CODES["liver"]) & (b.tissue == TISSUE_CODES["liver"])
        x = a.image[m].astype(float) - a.image[m].mean()
        y = b.image[m].astype(float) - b.image[m].mean()
        r = (x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum())
        assert 0.6 < r < 0.9995 and not np.array_equal(a.image, b.image), r
