"""Tests for sonoflow.training.metrics: hand-computed values, edge cases, reference identities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sonoflow.training import metrics as M


def _frame(pred, scores, gt, sizes=None):
    return M.FrameDetections(np.array(pred, float).reshape(-1, 4), np.array(scores, float),
                             np.array(gt, float).reshape(-1, 4),
                             None if sizes is None else np.array(sizes, float))


@pytest.mark.parametrize("a,b,expected", [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
    ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
    ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
    ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),
])
def test_box_iou(a, b, expected):
    assert M.box_iou(np.array([a]), np.array([b]))[0, 0] == pytest.approx(expected)


def test_match_prefers_high_score_and_is_one_to_one():
    p2g, g2p = M.match_detections(np.array([[0, 0, 10, 10], [1, 1, 10, 10]]), np.array([0.2, 0.9]),
                                  np.array([[0, 0, 10, 10]]))
    assert p2g.tolist() == [-1, 0]
    assert g2p.tolist() == [1]


def test_average_precision_hand_computed():
    # Two gt boxes; detections by score: TP, FP, TP -> precision 1, 1/2, 2/3 at recall .5, .5, 1
    frames = [_frame([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8], [[0, 0, 10, 10]]),
              _frame([[0, 0, 10, 10]], [0.7], [[0, 0, 10, 10]])]
    assert M.average_precision(frames) == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))
    assert M.average_precision([_frame([], [], [])]) != M.average_precision(frames)
    assert math.isnan(M.average_precision([_frame([], [], [])]))
    assert M.average_precision([_frame([], [], [[0, 0, 5, 5]])]) == 0.0


def test_fp_rate_threshold_and_recall_by_size():
    frames = [
        _frame([[0, 0, 10, 10], [30, 30, 40, 40]], [0.9, 0.6], [[0, 0, 10, 10]], [12.0]),
        _frame([[0, 0, 4, 4], [70, 70, 80, 80]], [0.3, 0.8], [[0, 0, 4, 4]], [6.0]),
        _frame([], [], []),
        _frame([[5, 5, 9, 9]], [0.5], []),
    ]
    # FP scores: 0.8, 0.6, 0.5; 4 frames * 0.25 = 1 FP allowed -> threshold just above 0.6.
    thr = M.threshold_for_fp_rate(frames, 0.25)
    assert 0.6 < thr < 0.6000001
    assert M.false_positives_per_frame(frames, thr) == pytest.approx(0.25)
    res = M.recall_at_fp_rate(frames, 0.25)
    assert res["recall"]["ge10mm"] == {"recall": 1.0, "found": 1, "total": 1}
    assert res["recall"]["lt10mm"]["recall"] == 0.0  # its detection (0.3) is below threshold
    assert res["recall"]["all"]["total"] == 2
    assert M.threshold_for_fp_rate(frames, 10.0) == -math.inf
    assert M.recall_by_size(frames, 0.0)["lt10mm"]["recall"] == 1.0


@pytest.mark.parametrize("p,g,expected", [
    ([[1, 1], [0, 0]], [[1, 0], [0, 0]], 2 * 1 / 3),
    ([[0, 0]], [[0, 0]], 1.0),
    ([[1, 1]], [[0, 0]], 0.0),
])
def test_dice(p, g, expected):
    assert M.dice(np.array(p), np.array(g)) == pytest.approx(expected)


def test_dice_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shapes differ"):
        M.dice(np.zeros((2, 2)), np.zeros((3, 3)))


def test_confusion_and_prf():
    cm = M.confusion_matrix([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    prf = M.per_class_prf(cm, ["a", "b", "c"])
    assert prf["a"]["precision"] == pytest.approx(0.5)
    assert prf["b"]["recall"] == pytest.approx(1.0)
    assert prf["c"]["f1"] == pytest.approx(2 * 1 * 0.5 / 1.5)
    with pytest.raises(ValueError, match="expected"):
        M.confusion_matrix([3], [0], 3)


def test_fbeta_and_binary():
    r = M.binary_prf([1, 1, 0, 0], [0.9, 0.2, 0.7, 0.1])
    assert r["precision"] == 0.5 and r["recall"] == 0.5
    assert r["f2"] == pytest.approx(0.5)
    assert M.fbeta(1.0, 0.5, 2.0) == pytest.approx(5 * 0.5 / (4 + 0.5))
    assert math.isnan(M.precision_recall_f(0, 0, 3)["precision"])


def test_auc_matches_trapezoid_of_roc():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = np.round(y * 0.5 + rng.normal(size=200), 1)  # rounding creates ties
    fpr, tpr, _ = M.roc_curve(y, s)
    assert M.roc_auc(y, s) == pytest.approx(np.trapezoid(tpr, fpr))
    assert M.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert M.roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert M.roc_auc([1, 1], [0.1, 0.2]) is None


def test_bootstrap_ci_contains_value_and_is_seeded():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 100)
    s = y + rng.normal(size=100)
    a = M.bootstrap_ci(M.roc_auc, y, s, n_boot=300, seed=3)
    b = M.bootstrap_ci(M.roc_auc, y, s, n_boot=300, seed=3)
    assert a == b
    assert a["ci_low"] < a["value"] < a["ci_high"]
    res = M.per_class_auc(np.array([0, 1, 1, 2]), np.eye(3)[[0, 1, 1, 2]], ["x", "y", "z"],
                          n_boot=50)
    assert res["y"]["value"] == 1.0 and res["y"]["n_pos"] == 2


def test_calibration_curve_perfect_and_ece():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.05, 0.05, 0.95, 0.95])
    c = M.calibration_curve(y, p, n_bins=10)
    assert c["count"][0] == 2 and c["count"][9] == 2
    assert c["ece"] == pytest.approx(0.05)
    assert math.isnan(c["mean_predicted"][5])
