"""Aggregation: pooling, sizes, frame counts, and the aggregate stage end to end (no sockets)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import msgspec
import numpy as np
import pytest

from sonoflow.stream.aggregation.case import frame_counts, noisy_or, pool_diffuse
from sonoflow.stream.aggregation.errors import AggregationError
from sonoflow.stream.aggregation.pooling import attention_pool, log_odds_pool, pool_binary
from sonoflow.stream.aggregation.size import axes_from_box, axes_from_mask
from sonoflow.stream.aggregation.thumbnail import lesion_thumbnail
from sonoflow.stream.errors import ConfigError
from sonoflow.stream.messages import decode, encode
from sonoflow.stream.stages.aggregate import AggregateStage


def _fixtures():
    path = Path(__file__).with_name("aggregate_fixtures.py")
    spec = importlib.util.spec_from_file_location("aggregate_fixtures", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("aggregate_fixtures", mod)
    spec.loader.exec_module(mod)
    return mod


fx = _fixtures()


# --- pooling ---------------------------------------------------------------------------------

def test_pooling_of_identical_frames_returns_the_frame():
    row = np.array([0.7, 0.2, 0.1])
    probs = np.tile(row, (5, 1))
    w = np.linspace(0.1, 1, 5)
    assert log_odds_pool(probs, w) == pytest.approx(row, abs=1e-6)
    assert attention_pool(probs, w) == pytest.approx(row, abs=1e-6)


def test_weights_decide_between_disagreeing_frames():
    probs = np.array([[0.9, 0.1], [0.1, 0.9]])
    for pool in (log_odds_pool, attention_pool):
        assert pool(probs, np.array([1.0, 0.1]))[0] > 0.7
        assert pool(probs, np.array([0.1, 1.0]))[0] < 0.3


def test_attention_prefers_decided_frames_at_equal_weight():
    probs = np.array([[0.95, 0.05], [0.45, 0.55]])
    assert attention_pool(probs, np.ones(2))[0] > 0.85


def test_pool_binary_and_noisy_or():
    assert pool_binary(np.array([0.8, 0.8]), np.ones(2), "log_odds") == pytest.approx(0.8)
    assert noisy_or([0.5, 0.5]) == pytest.approx(0.75)
    assert noisy_or([]) == 0.0


def test_pooling_rejects_bad_shapes_and_methods():
    with pytest.raises(AggregationError):
        log_odds_pool(np.ones((3, 2)), np.ones(2))
    with pytest.raises(AggregationError):
        pool_binary(np.ones(2), np.ones(2), "mean")
    with pytest.raises(ConfigError):
        AggregateStage({"method": "mean"})


def test_pool_diffuse_is_labelled_estimated():
    out = pool_diffuse([{"S0": 0.2, "S1": 0.8}, {}, {"S0": 0.4, "S1": 0.6}], [1, 1, 1],
                       ("S0", "S1"))
    assert out["grade"] == "S1" and out["frames"] == 2 and out["estimated"] is True
    assert pool_diffuse([{}], [1.0], ("S0",)) is None


# --- size ------------------------------------------------------------------------------------

@pytest.mark.parametrize("diam_px,spacing", [(40, (0.25, 0.25)), (21, (0.5, 0.5)),
                                             (80, (0.2, 0.2))])
def test_axes_of_a_disc(diam_px, spacing):
    mask = np.zeros((200, 200), np.uint8)
    cv2.circle(mask, (100, 100), diam_px // 2, 1, -1)
    long_mm, short_mm = axes_from_mask(mask, spacing)
    true_mm = (2 * (diam_px // 2) + 1) * spacing[0]
    assert long_mm == pytest.approx(true_mm, rel=0.06)
    assert short_mm == pytest.approx(true_mm, rel=0.06)


def test_axes_of_a_rotated_ellipse_with_anisotropic_pixels():
    # 20 x 10 mm ellipse at 30 degrees, drawn on pixels 0.2 mm wide and 0.4 mm high
    sx, sy = 0.2, 0.4
    pts_mm = cv2.ellipse2Poly((0, 0), (1000, 500), 30, 0, 360, 2).astype(np.float64) / 100
    pts_px = pts_mm / np.array([sx, sy]) + np.array([150, 100])
    mask = np.zeros((200, 300), np.uint8)
    cv2.fillPoly(mask, [np.round(pts_px).astype(np.int32)], 1)
    long_mm, short_mm = axes_from_mask(mask, (sx, sy))
    assert long_mm == pytest.approx(20.0, rel=0.05)
    assert short_mm == pytest.approx(10.0, rel=0.08)


def test_axes_from_box_and_empty_mask():
    assert axes_from_box((10, 10, 50, 30), (0.5, 0.25)) == (20.0, 5.0)
    assert axes_from_mask(np.zeros((10, 10), bool), (1, 1)) is None


def test_thumbnail_does_not_touch_the_frame():
    image = np.full((100, 120), 80, np.uint8)
    image.flags.writeable = False  # like a wire buffer
    mask = np.zeros((100, 120), bool)
    mask[40:60, 50:70] = True
    thumb = lesion_thumbnail(image, (50, 40, 70, 60), mask, size_px=64)
    assert thumb.shape == (64, 64, 3) and thumb.dtype == np.uint8
    assert (thumb[..., 0] != thumb[..., 2]).any()  # the coloured contour is drawn
    assert (image == 80).all()


# --- frame counts ----------------------------------------------------------------------------

@pytest.mark.parametrize("statuses,seqs,last_seq,expected", [
    (["analysed"] * 3, [0, 1, 2], 2, {"total": 3, "analysed": 3, "rejected": 0, "dropped": 0,
                                      "failed": 0}),
    (["analysed", "rejected", "dropped"], [0, 2, 3], 5,
     {"total": 6, "analysed": 1, "rejected": 1, "dropped": 4, "failed": 0}),
    (["pending", "failed"], [0, 1], None, {"total": 2, "analysed": 0, "rejected": 0,
                                           "dropped": 0, "failed": 2}),
    ([], [], None, {"total": 0, "analysed": 0, "rejected": 0, "dropped": 0, "failed": 0}),
])
def test_frame_counts_sum_to_total(statuses, seqs, last_seq, expected):
    out = frame_counts(statuses, seqs, last_seq)
    assert out == expected
    assert sum(v for k, v in out.items() if k != "total") == out["total"]


# --- the stage -------------------------------------------------------------------------------

def test_stage_end_to_end_on_two_lesions():
    packets = fx.disc_clip(n_frames=60, drop_seqs=(7, 8), bad_frames=(20, 21, 22))
    frames, lesion_events, case_packet = fx.run_stages(
        packets, aggregate_config={"lirads_min_good_frames": 10}, last_seq=61)
    case = case_packet.header.case
    assert case["schema"] == "sonoflow.case/1"
    assert case["frames"] == {"total": 62, "analysed": 55, "rejected": 3, "dropped": 4,
                              "failed": 0}
    assert [les["class"] for les in case["lesions"]] == ["cyst", "metastasis"]
    for les, true_mm in zip(case["lesions"], (20.0, 14.0), strict=True):
        # the equator is mid-clip; 1 px of rasterisation on a 0.25 mm grid
        assert les["long_axis_mm"] == pytest.approx(true_mm, abs=0.8)
        assert 22 <= les["best_frame"] <= 37  # sqrt(1 - t^2) is flat near the equator
    assert case["lirads"]["category"] == "US-3"  # a 14 mm metastasis
    assert case["lirads"]["version"] == "v2017"
    assert case["steatosis"]["grade"] == "S1" and case["steatosis"]["estimated"] is True
    assert case["fibrosis"]["stage"] == "F0" and case["fibrosis"]["estimated"] is True
    assert 0.0 < case["malignancy_risk"]["value"] <= 1.0
    assert set(case_packet.arrays) == {"thumb_1", "thumb_2"}
    assert case_packet.arrays["thumb_1"].shape == (160, 160, 3)
    # live: confirmed lesions on frames, one lesion event per lesion at least
    assert {les.lesion_id for les in frames[-1].header.lesions} == {1, 2}
    assert {ev.header.lesion.lesion_id for ev in lesion_events} >= {1, 2}
    assert frames[-1].header.extra["lirads"]["provisional"] is True
    # frame and lesion packets go on the wire with what the stages added
    frame_back = decode(encode(frames[-1])).header
    assert frame_back.lesions == frames[-1].header.lesions
    assert frame_back.extra["track"] == frames[-1].header.extra["track"]
    assert decode(encode(lesion_events[0])).header.lesion == lesion_events[0].header.lesion
    # the case packet goes on the wire
    back = decode(encode(case_packet))
    assert back.header.case == case
    assert (back.arrays["thumb_2"] == case_packet.arrays["thumb_2"]).all()


def test_stage_is_deterministic():
    a = fx.run_stages(fx.disc_clip(seed=3))[2].header.case
    b = fx.run_stages(fx.disc_clip(seed=3))[2].header.case
    assert msgspec.json.encode(a) == msgspec.json.encode(b)


def test_uncalibrated_clip_has_no_mm_and_lirads_abstains():
    packets = fx.disc_clip(mm_per_px=None)
    case = fx.run_stages(packets, aggregate_config={"lirads_min_good_frames": 10})[2].header.case
    assert case["calibration"] == {"mm_per_px": None, "source": "none",
                                   "note": case["calibration"]["note"]}
    assert "uncalibrated" in case["calibration"]["note"]
    assert all(les["long_axis_mm"] is None for les in case["lesions"])
    assert case["lirads"]["category"] is None and "uncalibrated" in case["lirads"]["reason"]


def test_too_few_good_frames_abstains_unless_a_positive_was_seen():
    # the clip's metastasis is >= 10 mm: seen on 20 good frames (30 needed), it still makes
    # the study US-3; with that rule off, and for a negative, the study abstains
    clip = fx.disc_clip(n_frames=20)
    case = fx.run_stages(clip)[2].header.case  # default needs 30
    assert case["lirads"]["category"] == "US-3" and "seen on only 20" in case["lirads"]["reason"]
    off = {"lirads_positive_overrides_few_frames": False}
    case = fx.run_stages(fx.disc_clip(n_frames=20), aggregate_config=off)[2].header.case
    assert case["lirads"]["category"] is None
    assert "good-quality" in case["lirads"]["reason"]


@pytest.mark.parametrize("method", ["log_odds", "attention"])
def test_both_pooling_methods_get_the_classes(method):
    case = fx.run_stages(fx.disc_clip(seed=5),
                         aggregate_config={"method": method})[2].header.case
    assert [les["class"] for les in case["lesions"]] == ["cyst", "metastasis"]
    assert case["aggregation"]["method"] == method


def test_short_tracks_are_not_reported():
    # 7 observations: one below the default of 8, reported once the bar is lowered to 7
    case = fx.run_stages(fx.disc_clip(n_frames=7), track_config={"min_hits": 2})[2].header.case
    assert case["aggregation"]["min_track_frames"] == 8 and case["lesions"] == []
    case = fx.run_stages(fx.disc_clip(n_frames=7), track_config={"min_hits": 2},
                         aggregate_config={"min_track_frames": 7})[2].header.case
    assert len(case["lesions"]) == 2


@pytest.mark.parametrize("floor, reported", [(0.0, 2), (0.8, 2), (0.9, 0)])
def test_tracks_below_the_mean_confidence_floor_are_not_reported(floor, reported):
    # the fixture's detections have confidence ~ N(0.85, 0.05)
    case = fx.run_stages(fx.disc_clip(n_frames=30),
                         aggregate_config={"min_track_confidence": floor})[2].header.case
    assert len(case["lesions"]) == reported
    assert case["aggregation"]["min_track_confidence"] == floor


def test_a_track_pooled_to_other_is_listed_as_a_mimic_not_a_lesion():
    clip = fx.disc_clip(lesions=(("metastasis", 14.0), ("other", 18.0)))
    frames, _, case_packet = fx.run_stages(clip)
    case = case_packet.header.case
    assert [les["class"] for les in case["lesions"]] == ["metastasis"]
    assert [m["class"] for m in case["mimics"]] == ["other"]
    assert case["mimics"][0]["long_axis_mm"] is not None  # measured like a lesion
    assert case["aggregation"]["mimic_classes"] == ["other"]
    assert str(case["mimics"][0]["lesion_id"]) not in case["lirads"]["per_lesion"]
    mal = case["lesions"][0]["malignancy"]
    assert case["malignancy_risk"]["value"] == pytest.approx(mal, abs=1e-4)  # mimic left out
    assert f"thumb_{case['mimics'][0]['lesion_id']}" in case_packet.arrays
    # with no mimic classes, both are lesions
    case = fx.run_stages(fx.disc_clip(lesions=(("metastasis", 14.0), ("other", 18.0))),
                         aggregate_config={"mimic_classes": []})[2].header.case
    assert sorted(les["class"] for les in case["lesions"]) == ["metastasis", "other"]
    assert case["mimics"] == []


def test_the_live_view_lists_only_what_the_case_lists_as_lesions():
    frames, lesion_packets, case_packet = fx.run_stages(
        fx.disc_clip(lesions=(("metastasis", 14.0), ("other", 18.0))))
    case = case_packet.header.case
    live_last = frames[-1].header.lesions
    assert [les.lesion_id for les in live_last] == [les["lesion_id"] for les in case["lesions"]]
    assert all(les.label != "other" for f in frames for les in f.header.lesions)
    assert lesion_packets and all(p.header.lesion.label != "other" for p in lesion_packets)


def test_unknown_mimic_class_is_a_config_error():
    from sonoflow.stream.errors import ConfigError
    from sonoflow.stream.stages.aggregate import AggregateStage

    with pytest.raises(ConfigError, match="mimic_classes"):
        AggregateStage({"mimic_classes": ["vessel"]})


def test_min_track_confidence_outside_0_1_is_a_config_error():
    from sonoflow.stream.errors import ConfigError
    from sonoflow.stream.stages.aggregate import AggregateStage

    with pytest.raises(ConfigError, match="min_track_confidence"):
        AggregateStage({"min_track_confidence": 1.5})


def test_model_provenance_reads_full_hash_and_synthetic_flag_from_cards(tmp_path):
    from sonoflow.models.card import InputSpec, ModelCard, file_sha256
    from sonoflow.stream.aggregation.case import model_provenance

    onnx = tmp_path / "frame-v9-int8.onnx"
    onnx.write_bytes(b"not really onnx, only hashed")
    sha = file_sha256(onnx)
    ModelCard(id="frame-v9", task="frame", precision="int8",
              input=InputSpec(name="image", shape=[1, 1, 256, 256]),
              outputs={"heatmap": "(1, 1, 64, 64) lesion centres"}, synthetic_only=True,
              sha256=sha).save(tmp_path / "frame-v9-int8.card.json")
    models, synthetic = model_provenance({"frame-v9": sha[:12], "unknown-v1": "abc"}, "fp32",
                                         search=[tmp_path])
    assert synthetic is True
    assert models[0] == {"id": "frame-v9", "sha256": sha, "precision": "int8",
                         "synthetic_only": True}
    assert models[1] == {"id": "unknown-v1", "sha256": "abc", "precision": None,
                         "synthetic_only": None}
    assert model_provenance({"unknown-v1": "abc"}, "fp32", search=[tmp_path])[1] is None


def _obs(frame: int, extent: float, quality: float = 0.9, has_mask: bool = True):
    from sonoflow.stream.aggregation.lesion import Observation

    return Observation(frame_index=frame, quality=quality, confidence=0.9,
                       class_probs=np.full(5, 0.2), malignancy=None, features={},
                       xyxy_px=(0, 0, extent, extent), axes=(extent, extent), extent=extent,
                       has_mask=has_mask)


@pytest.mark.parametrize("sequence,best_frame", [
    # a smooth sweep: the widest cross-section wins
    ([(0, 5.0), (1, 7.0), (2, 9.0), (3, 8.0)], 2),
    # a stray detection 4x the previous size never becomes the best frame
    ([(0, 8.0), (1, 9.0), (2, 36.0), (3, 9.5)], 3),
    # a box-only measurement loses to mask measurements, however wide
    ([(0, 8.0), (1, 12.0, 0.9, False), (2, 9.0)], 2),
    # a good frame beats a wider poor one
    ([(0, 10.0, 0.2), (1, 8.0, 0.9)], 1),
])
def test_best_frame_rules(sequence, best_frame):
    from sonoflow.stream.aggregation.lesion import LesionEvidence

    ev = LesionEvidence(1, good_quality=0.5)
    for item in sequence:
        ev.add(_obs(*item), calibrated=True)
    assert ev.best.frame_index == best_frame
