"""Frame -> lesion: the evidence of one track and its pooled summary.

A :class:`LesionEvidence` collects one :class:`Observation` per frame in which its track was
matched (tentative matches included, so the frames seen before confirmation count), keeps the
best frame (largest in-plane extent among good-quality frames) with its thumbnail, and pools
class probabilities, malignancy and feature labels with the configured method.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sonoflow.stream.aggregation.errors import AggregationError
from sonoflow.stream.aggregation.pooling import evidence_weights, pool, pool_binary
from sonoflow.stream.messages import LesionSummary

#: The five lesion types and the malignant ones (same vocabulary as ``sonoflow.models.card``).
LESION_TYPES = ("cyst", "hemangioma", "metastasis", "hcc", "other")
MALIGNANT_TYPES = ("metastasis", "hcc")


@dataclass
class Observation:
    """What one frame says about one lesion.

    Attributes:
        frame_index: source frame index.
        quality: frame quality score in [0, 1] (1.0 without a quality stage).
        confidence: detection confidence in [0, 1].
        class_probs: ``(C,)`` probabilities over :data:`LESION_TYPES`.
        malignancy: malignancy head output, or None when the model has none.
        features: feature label -> probability.
        xyxy_px: detection box in original-frame pixels.
        axes: ``(long, short)`` in mm when calibrated, else in px.
        extent: the value the best frame maximises (long axis, mm or px).
        has_mask: the axes were measured on a segmentation mask (not on the box).
    """

    frame_index: int
    quality: float
    confidence: float
    class_probs: np.ndarray
    malignancy: float | None
    features: dict[str, float]
    xyxy_px: tuple[float, float, float, float]
    axes: tuple[float, float]
    extent: float
    has_mask: bool = False


@dataclass
class LesionEvidence:
    """All observations of one track, its best frame and thumbnail.

    Attributes:
        lesion_id: the track id.
        good_quality: frames with quality at or above this may be the best frame.
        observations: in frame order.
        best: the best observation so far (None before the first).
        thumbnail: ``(S, S, 3)`` uint8 RGB key-frame crop of the best frame.
        confirmed: the tracker confirmed this track at some point.
        calibrated: the best frame's axes are in mm.
    """

    lesion_id: int
    good_quality: float = 0.5
    observations: list[Observation] = field(default_factory=list)
    best: Observation | None = None
    thumbnail: np.ndarray | None = None
    confirmed: bool = False
    calibrated: bool = False

    def add(self, obs: Observation, calibrated: bool) -> bool:
        """Record a frame; return True when it becomes the best frame (caller then renders
        the thumbnail from this frame's pixels, which will not be kept)."""
        previous = self.observations[-1] if self.observations else None
        self.observations.append(obs)
        if self.best is None or _better(obs, self.best, previous, self.good_quality):
            self.best = obs
            self.calibrated = calibrated
            return True
        return False

    def summary(self, method: str) -> LesionSummary:
        """Pool the observations into a :class:`LesionSummary` (keys as in case.json).

        Args:
            method: "log_odds" or "attention" (see ``pooling``).

        Raises:
            AggregationError: no observation yet, or an unknown method.
        """
        obs = self.observations
        best = self.best
        if best is None:
            raise AggregationError(f"lesion {self.lesion_id}: summary() needs at least one "
                                   f"observation, got none; call add() first")
        w = evidence_weights(np.array([o.quality for o in obs]),
                             np.array([o.confidence for o in obs]))
        probs = pool(np.stack([o.class_probs for o in obs]), w, method)
        class_probs = {c: round(float(p), 4) for c, p in zip(LESION_TYPES, probs, strict=True)}
        label = LESION_TYPES[int(np.argmax(probs))]
        mal_obs = [(o.malignancy, wi) for o, wi in zip(obs, w, strict=True)
                   if o.malignancy is not None]
        if mal_obs:
            malignancy = pool_binary(np.array([m for m, _ in mal_obs]),
                                     np.array([wi for _, wi in mal_obs]), method)
        else:
            malignancy = float(sum(class_probs[c] for c in MALIGNANT_TYPES))
        names = sorted({k for o in obs for k in o.features})
        features = {}
        for name in names:
            have = [(o.features[name], wi) for o, wi in zip(obs, w, strict=True)
                    if name in o.features]
            features[name] = round(pool_binary(np.array([v for v, _ in have]),
                                               np.array([wi for _, wi in have]), method), 4)
        long_mm, short_mm = (best.axes if self.calibrated else (None, None))
        return LesionSummary(
            lesion_id=self.lesion_id, first_frame=obs[0].frame_index,
            last_frame=obs[-1].frame_index, best_frame=best.frame_index,
            xyxy_px=tuple(round(float(v), 1) for v in best.xyxy_px),
            long_axis_mm=None if long_mm is None else round(float(long_mm), 1),
            short_axis_mm=None if short_mm is None else round(float(short_mm), 1),
            label=label, class_probs=class_probs, malignancy=round(float(malignancy), 4),
            features=features, n_frames=len(obs), confirmed=self.confirmed)


#: A frame whose extent jumps above this multiple of the track's previous observation cannot
#: become the best frame: cross-sections change smoothly along a sweep, so such a jump is a
#: stray detection the tracker attached (seen on held-out simulator clips 900002 and 900011,
#: where a false positive near a lost track would otherwise have set the size).
MAX_EXTENT_JUMP = 1.5


def _better(obs: Observation, best: Observation, previous: Observation | None,
            good_quality: float) -> bool:
    """Good-quality frames beat poor ones, mask measurements beat box ones; then the larger
    in-plane extent wins, unless it jumped implausibly from the previous observation."""
    rank_obs = (obs.quality >= good_quality, obs.has_mask)
    rank_best = (best.quality >= good_quality, best.has_mask)
    if rank_obs != rank_best:
        return rank_obs > rank_best
    if previous is not None and obs.extent > MAX_EXTENT_JUMP * previous.extent:
        return False
    return obs.extent > best.extent


def class_vector(class_probs: dict[str, float], label: str) -> np.ndarray:
    """A detection's class probabilities as a ``(C,)`` vector over :data:`LESION_TYPES`.

    Detections without class probabilities count as one-hot on their label ("other" when the
    label is not a lesion type, e.g. the detector's generic "lesion").
    """
    if class_probs:
        v = np.array([max(float(class_probs.get(c, 0.0)), 0.0) for c in LESION_TYPES])
        if v.sum() > 0:
            return v / v.sum()
    v = np.zeros(len(LESION_TYPES))
    v[LESION_TYPES.index(label) if label in LESION_TYPES else LESION_TYPES.index("other")] = 1.0
    return v
