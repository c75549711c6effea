"""US LI-RADS v2017 rules, abstention, visualization, and agreement with the simulator's table."""

from __future__ import annotations

import pytest

from sonoflow.stream.aggregation.lirads import (
    RECOMMENDATIONS,
    VERSION,
    LiradsConfig,
    categorize,
    lesion_category,
    visualization_from_quality,
)
from sonoflow.stream.messages import LesionSummary, QualityResult

TYPES = ("cyst", "hemangioma", "metastasis", "hcc", "other")


def lesion(lesion_id: int, cls: str, long_mm: float | None, p: float = 0.9) -> LesionSummary:
    probs = {c: (p if c == cls else (1 - p) / 4) for c in TYPES}
    return LesionSummary(lesion_id=lesion_id, first_frame=0, last_frame=10, best_frame=5,
                         xyxy_px=(0, 0, 10, 10), long_axis_mm=long_mm,
                         short_axis_mm=None if long_mm is None else long_mm * 0.8, label=cls,
                         class_probs=probs, malignancy=None, features={})


VIS = ("A", "test")


@pytest.mark.parametrize("lesions,expected", [
    ([], "US-1"),
    ([lesion(1, "cyst", 25.0)], "US-1"),
    ([lesion(1, "hemangioma", 12.0), lesion(2, "other", 30.0)], "US-1"),
    ([lesion(1, "metastasis", 8.0)], "US-2"),
    ([lesion(1, "hcc", 9.9)], "US-2"),
    ([lesion(1, "hcc", 10.0)], "US-3"),
    ([lesion(1, "cyst", 40.0), lesion(2, "metastasis", 6.0), lesion(3, "hcc", 22.0)], "US-3"),
    ([lesion(1, "cyst", 40.0), lesion(2, "metastasis", 6.0)], "US-2"),
])
def test_category_rules(lesions, expected):
    res = categorize(lesions, good_frames=100, calibrated=True, visualization=VIS)
    assert res.category == expected
    assert res.recommendation.startswith(RECOMMENDATIONS[expected])
    assert res.to_json()["version"] == VERSION == "v2017"


def test_uncertain_benign_call_is_not_definitely_benign():
    # argmax "cyst" at 0.4 but benign classes sum to 0.4 + 3 * 0.15 = 0.85 -> still benign;
    # a metastasis-leaning lesion with cyst 0.3 is not.
    les = LesionSummary(lesion_id=1, first_frame=0, last_frame=1, best_frame=0,
                        xyxy_px=(0, 0, 1, 1), long_axis_mm=15.0, short_axis_mm=10.0,
                        label="cyst", class_probs={"cyst": 0.3, "hemangioma": 0.1,
                                                   "metastasis": 0.55, "hcc": 0.05,
                                                   "other": 0.0},
                        malignancy=None, features={})
    assert lesion_category(les, True, LiradsConfig()) == "US-3"


def test_uncalibrated_abstains_only_when_size_matters():
    res = categorize([lesion(1, "hcc", None)], 100, calibrated=False, visualization=VIS)
    assert res.category is None and "uncalibrated" in res.reason
    res = categorize([lesion(1, "cyst", None)], 100, calibrated=False, visualization=VIS)
    assert res.category == "US-1"


@pytest.mark.parametrize("lesions", [[], [lesion(1, "cyst", 25.0)],
                                     [lesion(1, "metastasis", 7.0), lesion(2, "cyst", 30.0)]])
def test_too_few_good_frames_abstains_when_nothing_positive_was_seen(lesions):
    res = categorize(lesions, good_frames=5, calibrated=True, visualization=("C", "poor"))
    assert res.category is None and "good-quality" in res.reason
    assert res.to_json()["category"] is None


def test_a_positive_seen_on_few_good_frames_stands():
    lesions = [lesion(1, "cyst", 25.0), lesion(2, "hcc", 20.0)]
    res = categorize(lesions, good_frames=5, calibrated=True, visualization=("C", "poor"))
    assert res.category == "US-3" and "seen on only 5" in res.reason
    assert res.recommendation.startswith(RECOMMENDATIONS["US-3"])
    assert "not adequately seen" in res.recommendation
    assert res.per_lesion == {1: "US-1", 2: "US-3"}
    off = LiradsConfig(positive_overrides_few_frames=False)
    assert categorize(lesions, 5, True, ("C", "poor"), off).category is None


def test_visualization_c_is_reported_and_keeps_the_category():
    res = categorize([lesion(1, "metastasis", 7.0)], 100, True, ("C", "shadowing"))
    assert res.category == "US-2" and res.visualization == "C"
    assert "Visualization C" in res.recommendation


def test_visualization_from_quality_returns_a_score():
    good = [QualityResult(score=0.9) for _ in range(50)]
    bad = [QualityResult(score=0.1, flags=["black"]) for _ in range(50)]
    score_good, reason_good = visualization_from_quality(good)
    score_bad, _ = visualization_from_quality(bad)
    assert score_good in "ABC" and reason_good
    assert "ABC".index(score_good) < "ABC".index(score_bad)
    assert visualization_from_quality([])[0] == "C"


def test_table_agrees_with_the_simulator_ground_truth_convention():
    sim_config = pytest.importorskip("sonoflow.stream.sim.config",
                                     reason="simulator config not built yet")
    cfg = LiradsConfig()
    assert cfg.threshold_mm == sim_config.LIRADS_THRESHOLD_MM
    # our "other" class is the simulator's fat-sparing mimic
    sim_benign = {"other" if c == "fat_sparing" else c for c in
                  sim_config.DEFINITELY_BENIGN_CLASSES}
    assert set(cfg.definitely_benign_classes) == sim_benign


@pytest.mark.parametrize("malignancy,expected", [(None, "US-1"), (0.2, "US-1"), (0.8, "US-3")])
def test_benign_type_with_a_malignant_head_is_not_dismissed(malignancy, expected):
    les = lesion(1, "other", 15.0)
    les.malignancy = malignancy
    assert lesion_category(les, True, LiradsConfig()) == expected
