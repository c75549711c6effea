"""Tracker and track stage: identity over motion, gaps and low scores; per-instance ids."""

from __future__ import annotations

import numpy as np
import pytest

from sonoflow.stream.errors import ConfigError
from sonoflow.stream.messages import Detection, FrameHeader, InferResult, Packet
from sonoflow.stream.stages.track import TrackStage
from sonoflow.stream.tracking.association import assign, centre_proximity, iou_matrix
from sonoflow.stream.tracking.kalman import BoxKalman
from sonoflow.stream.tracking.tracker import ByteTrackLike, TrackerConfig


def det(cx: float, cy: float, r: float, conf: float = 0.9) -> Detection:
    return Detection(xyxy_px=(cx - r, cy - r, cx + r, cy + r), confidence=conf)


def test_iou_and_centre_proximity_values():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert iou_matrix(a, b)[0] == pytest.approx([1.0, 50 / 150, 0.0])
    prox = centre_proximity(a, b, gate_scale=1.0)[0]
    assert prox[0] == 1.0 and prox[1] == pytest.approx(0.5) and prox[2] == 0.0


def test_assign_respects_floor():
    sim = np.array([[0.9, 0.1], [0.2, 0.25]])
    matches, rows, cols = assign(sim, min_similarity=0.3)
    assert matches == [(0, 0)] and rows == [1] and cols == [1]


def test_kalman_learns_velocity_and_stops_when_lost():
    kf = BoxKalman(np.array([0, 0, 10, 10.0]))
    for k in range(1, 15):
        kf.predict()
        kf.update(np.array([3 * k, 0, 3 * k + 10, 10.0]))
    pred = kf.predict()
    assert pred[0] == pytest.approx(45, abs=1.5)  # one more step of 3 px
    for _ in range(20):
        pred = kf.predict()
    assert pred[0] < 45 + 2 * 3 + 1  # velocity decays while lost: no runaway


@pytest.mark.parametrize("speed_px", [0.0, 2.0, 6.0])
def test_moving_lesion_keeps_one_id(speed_px):
    tracker = ByteTrackLike()
    ids = set()
    for f in range(40):
        out = tracker.update([det(100 + speed_px * f, 200, 20)], f)
        ids.update(t.track_id for t in out if t.confirmed)
    assert ids == {1}


def test_confirmation_needs_min_hits_and_single_frame_false_positive_dies():
    tracker = ByteTrackLike(TrackerConfig(min_hits=3, tentative_max_misses=1))
    out = tracker.update([det(50, 50, 10), det(300, 300, 10)], 0)
    assert [t.confirmed for t in out] == [False, False]
    out = tracker.update([det(51, 50, 10)], 1)
    assert not out[0].confirmed
    out = tracker.update([det(52, 50, 10)], 2)
    assert out[0].confirmed and out[0].track_id == 1
    assert len(tracker.tracks) == 1  # the one-frame detection at (300, 300) is gone


def test_track_survives_a_gap_and_reenters_small():
    """A lesion leaves the plane for 25 frames and re-enters as a small cross-section."""
    tracker = ByteTrackLike()
    for f in range(20):
        tracker.update([det(200, 200, 25)], f)
    for f in range(20, 45):
        assert tracker.update([], f) == []
    out = []
    for f in range(45, 50):
        out = tracker.update([det(206, 195, 8 + f - 45)], f)
    assert [t.track_id for t in out] == [1] and out[0].confirmed


def test_gap_longer_than_max_lost_starts_a_new_track():
    tracker = ByteTrackLike(TrackerConfig(max_lost_updates=5))
    for f in range(10):
        tracker.update([det(200, 200, 25)], f)
    for f in range(10, 17):
        tracker.update([], f)
    out = tracker.update([det(200, 200, 25)], 17)
    assert out[0].track_id == 2


def test_low_confidence_detection_extends_but_never_starts_a_track():
    tracker = ByteTrackLike(TrackerConfig(high_confidence=0.5, low_confidence=0.1))
    for f in range(5):
        tracker.update([det(100, 100, 15, 0.9)], f)
    out = tracker.update([det(101, 100, 15, 0.2), det(400, 400, 15, 0.3)], 5)
    assert [(t.track_id, t.detection_index) for t in out] == [(1, 0)]
    assert len(tracker.tracks) == 1


def test_two_lesions_crossing_paths_keep_their_ids():
    tracker = ByteTrackLike()
    first: dict[int, int] = {}
    for f in range(30):
        a = det(100 + 4 * f, 150, 12)
        b = det(220 - 4 * f, 190, 12)
        for t in tracker.update([a, b], f):
            if t.confirmed:
                first.setdefault(t.detection_index, t.track_id)
                assert first[t.detection_index] == t.track_id


def test_ids_are_per_instance_and_reset_restarts_them():
    a, b = ByteTrackLike(), ByteTrackLike()
    for f in range(3):
        a.update([det(10, 10, 5), det(100, 100, 5)], f)
    out_b = b.update([det(10, 10, 5)], 0)
    assert out_b[0].track_id == 1  # not 3: no class-level counter
    a.reset()
    assert a.tracks == [] and a.update([det(10, 10, 5)], 0)[0].track_id == 1


def test_bad_config_is_refused():
    with pytest.raises(ConfigError):
        TrackerConfig(low_confidence=0.8, high_confidence=0.5)
    with pytest.raises(ConfigError):
        TrackStage({"min_hits": 0})
    with pytest.raises(ConfigError):
        TrackStage({"no_such_key": 1})


def frame(f: int, dets: list[Detection] | None, stream_id: str = "s") -> Packet:
    header = FrameHeader(stream_id=stream_id, seq=f, frame_index=f, pts=f, time_base=(1, 30),
                         capture_ns=0, pixel_format="gray8",
                         infer=None if dets is None else InferResult(detections=dets))
    return Packet(header)


def test_track_stage_sets_ids_only_for_confirmed_and_records_tentative():
    stage = TrackStage({"min_hits": 2})
    p0 = stage.process(frame(0, [det(50, 50, 10)]))
    d0 = p0.header.infer.detections[0]
    assert d0.track_id is None and p0.header.extra["track"] == {"ids": [1], "confirmed": [False]}
    skipped = stage.process(frame(1, None))  # a rejected frame: no infer, tracker untouched
    assert "track" not in skipped.header.extra
    p2 = stage.process(frame(2, [det(51, 50, 10)]))
    assert p2.header.infer.detections[0].track_id == 1
    assert p2.header.extra["track"]["confirmed"] == [True]


def test_track_stage_keeps_streams_apart():
    stage = TrackStage({"min_hits": 1})
    a = stage.process(frame(0, [det(50, 50, 10)], "a"))
    stage.process(frame(0, [det(300, 50, 10)], "a"))
    b = stage.process(frame(0, [det(50, 50, 10)], "b"))
    assert a.header.infer.detections[0].track_id == 1
    assert b.header.infer.detections[0].track_id == 1


@pytest.mark.parametrize("tentative_max_misses,confirmed", [(0, False), (1, True)])
def test_a_faint_lesion_missed_once_still_confirms(tentative_max_misses, confirmed):
    tracker = ByteTrackLike(TrackerConfig(min_hits=3,
                                          tentative_max_misses=tentative_max_misses))
    out = []
    for f, seen in enumerate([True, True, False, True]):
        out = tracker.update([det(80, 80, 6)] if seen else [], f)
    assert bool(out and out[0].confirmed and out[0].track_id == 1) is confirmed


HEM = {"cyst": 0.02, "hemangioma": 0.9, "metastasis": 0.03, "hcc": 0.03, "other": 0.02}
HCC = {"cyst": 0.01, "hemangioma": 0.06, "metastasis": 0.08, "hcc": 0.83, "other": 0.02}


def typed(cx: float, cy: float, r: float, probs: dict[str, float]) -> Detection:
    d = det(cx, cy, r)
    d.class_probs = dict(probs)
    return d


@pytest.mark.parametrize("min_sim, returning, same_id", [
    (0.0, HCC, True),    # check off: the lost track takes whatever enters at its place
    (0.7, HCC, False),   # another lesion type: a new track
    (0.7, HEM, True),    # the same lesion coming back: its old track
])
def test_a_lost_track_takes_back_only_a_lesion_that_looks_like_its_own(min_sim, returning,
                                                                       same_id):
    tracker = ByteTrackLike(TrackerConfig(min_appearance_similarity=min_sim,
                                          appearance_after_misses=5))
    for f in range(20):
        tracker.update([typed(200, 200, 20, HEM)], f)
    (t,) = tracker.tracks
    assert t.class_probs["hemangioma"] == pytest.approx(0.9)
    for f in range(20, 40):  # the hemangioma leaves the plane
        tracker.update([], f)
    out = tracker.update([typed(210, 205, 18, returning)], 40)
    assert (out[0].track_id == 1) == same_id


def test_appearance_is_not_checked_while_the_track_is_followed():
    """Type probabilities flicker from frame to frame: a track seen on the previous updates
    keeps its detections whatever their type."""
    tracker = ByteTrackLike(TrackerConfig(min_appearance_similarity=0.9,
                                          appearance_after_misses=5))
    for f in range(10):
        tracker.update([typed(200, 200, 20, HEM)], f)
    tracker.update([], 10)
    out = tracker.update([typed(202, 200, 20, HCC)], 11)
    assert out[0].track_id == 1


def test_bhattacharyya_coefficient():
    from sonoflow.stream.tracking.tracker import bhattacharyya

    assert bhattacharyya(HEM, HEM) == pytest.approx(1.0)
    assert bhattacharyya(HEM, HCC) < 0.5
    assert bhattacharyya({"a": 1.0}, {"b": 1.0}) == 0.0
