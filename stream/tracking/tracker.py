"""ByteTrack-style lesion tracker: Kalman prediction, two-pass association, gap survival.

Per-instance state only: track ids count from 1 in each tracker and restart at ``reset()``
(ByteTrack's class-level ``BaseTrack._count`` shares ids between every tracker in a process;
two streams in one process would then interleave ids).

One ``update`` per analysed frame:

1. every live track predicts its box (Kalman, constant velocity; velocity decays while lost);
2. pass 1: high-confidence detections vs all live tracks (confirmed, tentative, lost),
   similarity = IoU blended with centre proximity, Hungarian assignment;
3. pass 2: low-confidence detections vs the confirmed tracks left over that were seen on the
   previous update (low-score recovery: a fading lesion keeps its track without being allowed
   to start one);
4. unmatched high-confidence detections start tentative tracks; a track is confirmed after
   ``min_hits`` matches; a tentative track that misses more than ``tentative_max_misses``
   updates in a row is dropped; a confirmed track survives
   ``max_lost_updates`` updates without a match (a lesion leaves and re-enters the plane
   during a sweep), with a gate that widens while it is lost;
5. optionally (``min_appearance_similarity`` > 0; off by default), re-acquisition checks
   appearance: a track lost for ``appearance_after_misses`` updates or more only takes a
   detection whose lesion-type probabilities agree with the track's (Bhattacharyya
   coefficient). It targets a track taking over a different lesion that enters the plane
   after its own lesion left; the one such switch seen on test clips (seed 970014) happened
   with no missed update between the two lesions, so the check could not catch it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from sonoflow.stream.errors import ConfigError
from sonoflow.stream.tracking.association import assign, similarity
from sonoflow.stream.tracking.kalman import BoxKalman


class BoxLike(Protocol):
    """Anything with a pixel box and a confidence (``sonoflow.stream.messages.Detection``);
    an optional ``class_probs`` mapping (lesion type -> probability) is used for appearance."""

    xyxy_px: tuple[float, float, float, float]
    confidence: float


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker thresholds. Counts are in tracker updates (analysed frames).

    Attributes:
        high_confidence: detections at or above this enter pass 1. It was set just below
            session 3's ``frame-v1`` operating threshold (heatmap 0.387). The shipped
            ``frame-v1`` card's threshold is now 0.267, *below* this: its detections in
            [0.267, 0.35) extend confirmed tracks (pass 2) but do not start tracks. Measured on
            tuning clips (seeds 930001-930020, ``benchmarks/eval_findings.py --track-config``):
            following the card (0.26 for this and ``new_track_confidence``) found 17 instead of
            16 of 24 lesions but doubled the false lesions (0.7 -> 1.4 per clip), so 0.35
            stays. Lower the infer stage's ``heatmap_threshold`` to feed pass 2 with weaker
            detections.
        low_confidence: detections in ``[low_confidence, high_confidence)`` enter pass 2 only;
            below it they are ignored.
        new_track_confidence: an unmatched detection starts a track only at or above this.
        min_hits: matches needed before a track is confirmed.
        max_lost_updates: updates a confirmed track survives without a match. Long: in a
            sweep a lesion leaves the plane and comes back 2-3 s later (measured on simulator
            sweeps with seeds 900004 and 900013: gaps of 57-62 frames at 30 fps).
        tentative_max_misses: consecutive misses a not-yet-confirmed track survives (the
            shipped frame network finds a >= 10 mm lesion on about a third of frames, so a
            missed frame or two must not restart the count).
        iou_weight: weight of IoU in the similarity (the rest is centre proximity).
        gate_scale: centre gate radius as a multiple of the larger box side.
        lost_gate_growth: the gate grows by this fraction per missed update, up to 2x.
        min_similarity_high: assignment floor in pass 1.
        min_similarity_low: assignment floor in pass 2 (stricter: low scores are noisier).
        velocity_decay: Kalman velocity factor per prediction made without a measurement.
        appearance_after_misses: a track lost for this many updates or more must agree in
            appearance to be matched again.
        min_appearance_similarity: that agreement: Bhattacharyya coefficient between the
            track's running mean of lesion-type probabilities and the detection's, in [0, 1]
            (0 switches the check off; it is skipped when either has no probabilities, e.g.
            without the lesion classifier).
            Off by default. On 100 tuning clips (seeds 930001-930100, frame-v1 and
            lesion-cls-v1 of session 6), 0.3 removed one of 35 false lesions and changed
            nothing else; 0.5 and 0.7 lost a lesion (a track split when the classifier's output
            drifted); 5 or 15 missed updates made no difference. On the test clips, though, a
            split at 0.3 turned 9 frames of a hemangioma's track into a "metastasis" of their
            own (seed 940011: US-1 became US-3): a false lesion that is not definitely benign,
            a worse error than the one the check removes.
        appearance_memory: updates over which the track's type probabilities are averaged
            (an exponential mean with weight ``1 / min(matches, appearance_memory)``).
    """

    high_confidence: float = 0.35
    low_confidence: float = 0.1
    new_track_confidence: float = 0.35
    min_hits: int = 3
    max_lost_updates: int = 150
    tentative_max_misses: int = 2
    iou_weight: float = 0.5
    gate_scale: float = 1.0
    lost_gate_growth: float = 0.05
    min_similarity_high: float = 0.3
    min_similarity_low: float = 0.4
    velocity_decay: float = 0.5
    appearance_after_misses: int = 5
    min_appearance_similarity: float = 0.0
    appearance_memory: int = 30

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_confidence <= self.high_confidence <= 1.0:
            raise ConfigError(
                f"tracker: need 0 <= low_confidence <= high_confidence <= 1, got "
                f"low={self.low_confidence}, high={self.high_confidence}; fix the track config")
        if self.min_hits < 1 or self.max_lost_updates < 0 or self.tentative_max_misses < 0:
            raise ConfigError(f"tracker: need min_hits >= 1, max_lost_updates >= 0 and "
                              f"tentative_max_misses >= 0, got {self.min_hits}, "
                              f"{self.max_lost_updates} and {self.tentative_max_misses}")
        if not 0.0 <= self.min_appearance_similarity <= 1.0 or self.appearance_memory < 1 \
                or self.appearance_after_misses < 1:
            raise ConfigError(f"tracker: need min_appearance_similarity in [0, 1], "
                              f"appearance_memory >= 1 and appearance_after_misses >= 1, got "
                              f"{self.min_appearance_similarity}, {self.appearance_memory} and "
                              f"{self.appearance_after_misses}")
        if not 0.0 <= self.iou_weight <= 1.0 or self.gate_scale <= 0:
            raise ConfigError(f"tracker: iou_weight must be in [0, 1] and gate_scale > 0, got "
                              f"{self.iou_weight} and {self.gate_scale}")


@dataclass
class Track:
    """One lesion track.

    Attributes:
        track_id: id unique within this tracker (from 1).
        first_frame: frame index of the first match.
        last_frame: frame index of the latest match.
        hits: number of matched updates.
        misses: consecutive updates without a match (0 when matched on this update).
        confirmed: reached ``min_hits`` (stays True once set).
        detection_index: index of the matched detection in the latest ``update`` input, or
            None when this track was not matched on the latest update.
        confidence: confidence of the latest matched detection.
        class_probs: running mean of the matched detections' lesion-type probabilities
            (empty when they carry none).
    """

    track_id: int
    kalman: BoxKalman = field(repr=False)
    first_frame: int
    last_frame: int
    hits: int = 1
    misses: int = 0
    confirmed: bool = False
    detection_index: int | None = None
    confidence: float = 0.0
    class_probs: dict[str, float] = field(default_factory=dict)

    @property
    def xyxy_px(self) -> tuple[float, float, float, float]:
        """The filtered box ``(x0, y0, x1, y1)`` in pixels."""
        return tuple(float(v) for v in self.kalman.xyxy_px)  # type: ignore[return-value]


class ByteTrackLike:
    """Two-pass (high, then low confidence) Kalman tracker. See the module docstring.

    Args:
        config: thresholds; the defaults suit 30 fps sweeps with key frames every frame.
    """

    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self._tracks: list[Track] = []
        self._next_id = 1

    def reset(self) -> None:
        """Forget every track and restart ids at 1."""
        self._tracks = []
        self._next_id = 1

    @property
    def tracks(self) -> list[Track]:
        """Every live track (tentative, confirmed, lost), oldest first."""
        return list(self._tracks)

    def update(self, detections: Sequence[BoxLike], frame_index: int) -> list[Track]:
        """Associate one frame's detections with the tracks.

        Args:
            detections: boxes (``xyxy_px`` in original-frame pixels) with ``confidence``.
            frame_index: the frame's index in the source (for first/last frame bookkeeping).

        Returns:
            The tracks matched on this update (tentative and confirmed), each with
            ``detection_index`` pointing into ``detections``; sorted by ``track_id``.
        """
        cfg = self.config
        boxes = np.array([d.xyxy_px for d in detections], dtype=np.float64).reshape(-1, 4)
        conf = np.array([d.confidence for d in detections], dtype=np.float64)
        probs = [dict(getattr(d, "class_probs", None) or {}) for d in detections]
        for t in self._tracks:
            t.kalman.predict()
            t.detection_index = None
        high = [i for i in range(len(conf)) if conf[i] >= cfg.high_confidence]
        low = [i for i in range(len(conf)) if cfg.low_confidence <= conf[i] < cfg.high_confidence]

        # pass 1: high-confidence detections against every live track
        matched_tracks: set[int] = set()
        pool = list(range(len(self._tracks)))
        unmatched_high = self._match(pool, high, boxes, cfg.min_similarity_high, matched_tracks,
                                     frame_index, conf, probs)
        # pass 2: low-confidence detections against confirmed tracks seen on the last update
        pool2 = [k for k in range(len(self._tracks)) if k not in matched_tracks
                 and self._tracks[k].confirmed and self._tracks[k].misses == 0]
        self._match(pool2, low, boxes, cfg.min_similarity_low, matched_tracks, frame_index, conf,
                    probs)

        survivors: list[Track] = []
        for k, t in enumerate(self._tracks):
            if k not in matched_tracks:
                t.misses += 1
                limit = cfg.max_lost_updates if t.confirmed else cfg.tentative_max_misses
                if t.misses > limit:
                    continue
            survivors.append(t)
        for j in unmatched_high:
            if conf[j] >= cfg.new_track_confidence:
                survivors.append(self._new_track(boxes[j], frame_index, j, float(conf[j]),
                                                 probs[j]))
        self._tracks = survivors
        return sorted((t for t in self._tracks if t.detection_index is not None),
                      key=lambda t: t.track_id)

    def _match(self, pool: list[int], det_idx: list[int], boxes: np.ndarray, floor: float,
               matched_tracks: set[int], frame_index: int, conf: np.ndarray,
               probs: list[dict[str, float]]) -> list[int]:
        """Assign ``det_idx`` detections to the ``pool`` tracks; return unmatched detections."""
        if not pool or not det_idx:
            return list(det_idx)
        cfg = self.config
        track_boxes = np.stack([self._tracks[k].kalman.xyxy_px for k in pool])
        sim = np.empty((len(pool), len(det_idx)))
        for row, k in enumerate(pool):
            growth = min(1.0 + cfg.lost_gate_growth * self._tracks[k].misses, 2.0)
            sim[row] = similarity(track_boxes[row:row + 1], boxes[det_idx], cfg.iou_weight,
                                  cfg.gate_scale * growth)[0]
            t = self._tracks[k]
            if (cfg.min_appearance_similarity > 0 and t.misses >= cfg.appearance_after_misses
                    and t.class_probs):
                for col, j in enumerate(det_idx):
                    if probs[j] and bhattacharyya(t.class_probs, probs[j]) \
                            < cfg.min_appearance_similarity:
                        sim[row, col] = -1.0  # below every assignment floor
        matches, _, unmatched_cols = assign(sim, floor)
        for row, col in matches:
            t = self._tracks[pool[row]]
            j = det_idx[col]
            t.kalman.update(boxes[j])
            t.hits += 1
            t.misses = 0
            t.last_frame = frame_index
            t.detection_index = j
            t.confidence = float(conf[j])
            t.confirmed = t.confirmed or t.hits >= cfg.min_hits
            if probs[j]:
                w = 1.0 / min(t.hits, cfg.appearance_memory)
                t.class_probs = {c: (1 - w) * t.class_probs.get(c, 0.0) + w * p
                                 for c, p in probs[j].items()} if t.class_probs else \
                    dict(probs[j])
            matched_tracks.add(pool[row])
        return [det_idx[c] for c in unmatched_cols]

    def _new_track(self, box: np.ndarray, frame_index: int, det: int, conf: float,
                   probs: dict[str, float]) -> Track:
        t = Track(track_id=self._next_id, kalman=BoxKalman(box, self.config.velocity_decay),
                  first_frame=frame_index, last_frame=frame_index, detection_index=det,
                  confidence=conf, confirmed=self.config.min_hits <= 1,
                  class_probs=dict(probs))
        self._next_id += 1
        return t


def bhattacharyya(p: dict[str, float], q: dict[str, float]) -> float:
    """Bhattacharyya coefficient sum(sqrt(p_c q_c)) of two class distributions, in [0, 1]
    (1 = identical); classes missing from one side count as probability 0."""
    return float(sum(np.sqrt(max(v, 0.0) * max(q.get(c, 0.0), 0.0)) for c, v in p.items()))
