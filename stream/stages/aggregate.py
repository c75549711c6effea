"""The ``aggregate`` stage: frame -> lesion -> case, live lesion updates, the case at the end.

Per frame: collects each tracked detection's evidence (class probabilities, malignancy,
features, size from the lesion mask at that frame), keeps every lesion's best frame and key-frame
thumbnail, and puts the current :class:`LesionSummary` list in ``header.lesions`` and a
provisional US LI-RADS category in ``header.extra["lirads"]``. It returns
``[frame_packet, lesion_packet...]`` when a lesion is confirmed or changes class.

At end of stream (``flush``) it returns one ``case`` packet: the case.json document in
``CaseHeader.case`` and the thumbnails as arrays ``thumb_<lesion_id>`` (uint8 HxWx3 RGB).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from sonoflow.stream import __version__
from sonoflow.stream.aggregation.case import (
    CASE_SCHEMA,
    FIBROSIS_STAGES,
    STEATOSIS_GRADES,
    SYNTHETIC_STATEMENT,
    frame_counts,
    lesion_json,
    model_provenance,
    noisy_or,
    pool_diffuse,
)
from sonoflow.stream.aggregation.lesion import (
    LESION_TYPES,
    LesionEvidence,
    Observation,
    class_vector,
)
from sonoflow.stream.aggregation.lirads import LiradsConfig, categorize, visualization_from_quality
from sonoflow.stream.aggregation.pooling import METHODS
from sonoflow.stream.aggregation.size import axes_from_box, axes_from_mask
from sonoflow.stream.aggregation.thumbnail import lesion_thumbnail
from sonoflow.stream.errors import ConfigError
from sonoflow.stream.messages import (
    CaseHeader,
    Detection,
    FrameHeader,
    LesionHeader,
    LesionSummary,
    Packet,
    QualityResult,
)
from sonoflow.stream.stage import Stage


@dataclass
class _StreamState:
    """Everything the aggregator remembers about one stream until its end."""

    source: str = ""
    seqs: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    qualities: list[QualityResult] = field(default_factory=list)
    good_frames: int = 0
    steatosis: list[dict[str, float]] = field(default_factory=list)
    fibrosis: list[dict[str, float]] = field(default_factory=list)
    diffuse_quality: list[float] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)
    precision: str = ""
    backend: str = ""
    tta: str = ""
    mm_per_px: tuple[float, float] | None = None
    calibration_source: str = "none"
    calibration_note: str = ""
    lesions: dict[int, LesionEvidence] = field(default_factory=dict)
    summaries: dict[int, LesionSummary] = field(default_factory=dict)


class AggregateStage(Stage):
    """Frame -> lesion -> case aggregation. See the module docstring.

    Config:
        method: class-probability pooling, "log_odds" or "attention".
        good_quality: quality score at or above which a frame is "good" (best frame, diffuse
            grades, LI-RADS frame count).
        min_track_frames: observations a confirmed track needs to be reported as a lesion
            (8 since session 6: with session 6's frame network and classifier, on 40 tuning
            clips, seeds 930001-930040, 8 instead of 5 halved the false lesions, 0.45 -> 0.225
            per clip, lost 1 of 46 eligible lesions and left the US LI-RADS agreement at 80 %;
            session 5 had gone from 3 to 5 on the same clips: 0.70 -> 0.60 and 0.65 -> 0.50
            false lesions per clip, none lost). At 30 fps, 8 analysed frames are about a
            quarter of a second of evidence.
        min_track_confidence: and the mean detection confidence over those observations must
            reach this (0 = no such rule, the default: on 100 tuning clips no floor from 0.35 to
            0.5 raised US LI-RADS agreement; each traded recall for false lesions).
        mimic_classes: pooled classes that make a reported track a *mimic* rather than a
            lesion: listed in ``case["mimics"]`` (same fields as a lesion), left out of the
            lesion table, the malignancy risk and US LI-RADS, and out of the live
            ``header.lesions`` and lesion packets too. ``"other"`` is the classifier's
            class for focal fat sparing and for the non-lesions it was trained on (vessel
            cross-sections, shadows). An empty list reports every track as a lesion.
            ``["other"]`` since session 7: on 100 tuning clips (seeds 930001-930100) false
            lesions per clip went 0.35 -> 0.21, 14 of them listed as mimics instead, with the
            same recall (the 3 true fat-sparing lesions found are listed as mimics) and the
            same US LI-RADS agreement.
        thumb_size_px: side of the key-frame thumbnails.
        lirads_threshold_mm, lirads_benign_min_prob, lirads_benign_max_malignancy,
        lirads_min_good_frames, lirads_positive_overrides_few_frames: see
            :class:`~sonoflow.stream.aggregation.lirads.LiradsConfig`.
    """

    key: ClassVar[str] = "aggregate"
    defaults: ClassVar[dict[str, Any]] = {
        "method": "log_odds",
        "good_quality": 0.5,
        "min_track_frames": 8,
        "min_track_confidence": 0.0,
        "mimic_classes": ["other"],
        "thumb_size_px": 160,
        "lirads_threshold_mm": LiradsConfig.threshold_mm,
        "lirads_benign_min_prob": LiradsConfig.benign_min_prob,
        "lirads_benign_max_malignancy": LiradsConfig.benign_max_malignancy,
        "lirads_min_good_frames": LiradsConfig.min_good_frames,
        "lirads_positive_overrides_few_frames": LiradsConfig.positive_overrides_few_frames,
    }

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        if self.config["method"] not in METHODS:
            raise ConfigError(f"aggregate: method {self.config['method']!r} is not one of "
                              f"{METHODS}; set method = \"log_odds\" or \"attention\"")
        self._mimics = frozenset(self.config["mimic_classes"])
        unknown = self._mimics - set(LESION_TYPES)
        if unknown:
            raise ConfigError(f"aggregate: mimic_classes {sorted(unknown)} are not lesion types "
                              f"{list(LESION_TYPES)}")
        if not 0.0 <= float(self.config["min_track_confidence"]) <= 1.0:
            raise ConfigError(f"aggregate: min_track_confidence must lie in [0, 1], got "
                              f"{self.config['min_track_confidence']}")
        if int(self.config["min_track_frames"]) < 1:
            raise ConfigError(f"aggregate: min_track_frames must be >= 1, got "
                              f"{self.config['min_track_frames']}")
        self.lirads_config = LiradsConfig(
            threshold_mm=float(self.config["lirads_threshold_mm"]),
            benign_min_prob=float(self.config["lirads_benign_min_prob"]),
            benign_max_malignancy=float(self.config["lirads_benign_max_malignancy"]),
            min_good_frames=int(self.config["lirads_min_good_frames"]),
            positive_overrides_few_frames=bool(
                self.config["lirads_positive_overrides_few_frames"]),
            good_quality=float(self.config["good_quality"]))
        self._streams: dict[str, _StreamState] = {}

    # --- per frame ---------------------------------------------------------------------------

    def process(self, packet: Packet) -> Packet | list[Packet]:
        header = packet.header
        if not isinstance(header, FrameHeader):
            return packet
        st = self._streams.get(header.stream_id)
        if st is None:
            st = self._streams[header.stream_id] = _StreamState()
        st.source = st.source or header.source
        st.seqs.append(header.seq)
        st.statuses.append(header.status)
        self._note_calibration(st, header)
        quality = header.quality.score if header.quality is not None else 1.0
        if header.quality is not None:  # slim copy: a live stream runs for hours
            st.qualities.append(QualityResult(score=header.quality.score,
                                              flags=list(header.quality.flags),
                                              keyframe=header.quality.keyframe))
        events: list[Packet] = []
        if header.infer is not None:
            inf = header.infer
            st.models.update(inf.models)
            st.precision = inf.precision or st.precision
            st.backend = inf.backend or st.backend
            st.tta = inf.tta or st.tta
            if quality >= self.lirads_config.good_quality:
                st.good_frames += 1
                st.steatosis.append(dict(inf.steatosis_probs))
                st.fibrosis.append(dict(inf.fibrosis_probs))
                st.diffuse_quality.append(quality)
            updated = self._observe(st, header, packet.arrays, quality)
            for lesion_id in updated:
                events.extend(self._refresh(st, header, lesion_id))
        # the live view lists what case.json will list as lesions: possible mimics stay out
        header.lesions = [st.summaries[k] for k in sorted(st.summaries)
                          if st.summaries[k].label not in self._mimics]
        provisional = categorize(header.lesions, st.good_frames, st.mm_per_px is not None,
                                 ("-", "provisional"), self.lirads_config)
        header.extra["lirads"] = {"category": provisional.category, "provisional": True,
                                  "reason": provisional.reason}
        return [packet, *events] if events else packet

    def _note_calibration(self, st: _StreamState, header: FrameHeader) -> None:
        pre = header.preprocess
        if pre is not None:
            st.mm_per_px = tuple(pre.mm_per_px) if pre.mm_per_px is not None else None
            st.calibration_source = pre.calibration_source if pre.mm_per_px else "none"
            st.calibration_note = pre.calibration_note
        elif header.pixel_spacing_mm is not None:  # no preprocess stage: the source's spacing
            st.mm_per_px = tuple(header.pixel_spacing_mm)
            st.calibration_source = header.spacing_source
            st.calibration_note = header.spacing_note

    def _observe(self, st: _StreamState, header: FrameHeader, arrays: dict[str, np.ndarray],
                 quality: float) -> list[int]:
        """Add this frame's tracked detections to their lesions; return the lesion ids seen."""
        dets = header.infer.detections
        track = header.extra.get("track") or {}
        ids = track.get("ids") or [d.track_id for d in dets]
        confirmed = track.get("confirmed") or [d.track_id is not None for d in dets]
        lesion_mask = arrays.get("lesion_mask")
        image = arrays.get("image", arrays.get("gray"))
        seen = []
        for det, tid, ok in zip(dets, ids, confirmed, strict=True):
            if tid is None:
                continue
            ev = st.lesions.get(tid)
            if ev is None:
                ev = st.lesions[tid] = LesionEvidence(tid, self.lirads_config.good_quality)
            ev.confirmed = ev.confirmed or bool(ok)
            mask = None
            if lesion_mask is not None and det.mask_id:
                mask = lesion_mask == det.mask_id
                if not mask.any():
                    mask = None
            axes = self._axes(det, mask, st.mm_per_px)
            obs = Observation(
                frame_index=header.frame_index, quality=quality,
                confidence=float(det.confidence),
                class_probs=class_vector(det.class_probs, det.label),
                malignancy=None if det.malignancy is None else float(det.malignancy),
                features=dict(det.features), xyxy_px=tuple(det.xyxy_px), axes=axes,
                extent=axes[0], has_mask=mask is not None)
            if ev.add(obs, st.mm_per_px is not None) and image is not None:
                ev.thumbnail = lesion_thumbnail(image, det.xyxy_px, mask,
                                                int(self.config["thumb_size_px"]))
            seen.append(tid)
        return seen

    @staticmethod
    def _axes(det: Detection, mask: np.ndarray | None,
              mm_per_px: tuple[float, float] | None) -> tuple[float, float]:
        if mask is not None:
            axes = axes_from_mask(mask, mm_per_px)
            if axes is not None:
                return axes
        return axes_from_box(det.xyxy_px, mm_per_px)

    def _refresh(self, st: _StreamState, header: FrameHeader, lesion_id: int) -> list[Packet]:
        """Recompute one lesion's summary; a lesion packet when it is new or changed class."""
        ev = st.lesions[lesion_id]
        if not self._reportable(ev):
            return []
        summary = ev.summary(self.config["method"])
        previous = st.summaries.get(lesion_id)
        st.summaries[lesion_id] = summary
        if summary.label not in self._mimics and (previous is None
                                                  or previous.label != summary.label):
            return [Packet(LesionHeader(stream_id=header.stream_id, seq=header.seq,
                                        lesion=summary))]
        return []

    def _reportable(self, ev: LesionEvidence) -> bool:
        """A confirmed track with enough observations, confident enough on average."""
        obs = ev.observations
        if not ev.confirmed or len(obs) < int(self.config["min_track_frames"]):
            return False
        floor = float(self.config["min_track_confidence"])
        return floor <= 0 or float(np.mean([o.confidence for o in obs])) >= floor

    # --- end of stream -----------------------------------------------------------------------

    def flush(self, eos: Packet) -> list[Packet]:
        stream_id = eos.header.stream_id
        st = self._streams.pop(stream_id, None) or _StreamState()
        last_seq = getattr(eos.header, "last_seq", None)
        case, thumbs = self.build_case(st, last_seq)
        return [Packet(CaseHeader(stream_id=stream_id, case=case), arrays=thumbs)]

    def build_case(self, st: _StreamState, last_seq: int | None
                   ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The case.json document and the thumbnails of one stream's state."""
        method = self.config["method"]
        min_frames = int(self.config["min_track_frames"])
        reported = [st.lesions[k].summary(method) for k in sorted(st.lesions)
                    if self._reportable(st.lesions[k])]
        lesions = [les for les in reported if les.label not in self._mimics]
        mimics = [les for les in reported if les.label in self._mimics]
        calibrated = st.mm_per_px is not None
        visualization = visualization_from_quality(st.qualities)
        lirads = categorize(lesions, st.good_frames, calibrated, visualization,
                            self.lirads_config)
        models, synthetic = model_provenance(st.models, st.precision)
        scores = [q.score for q in st.qualities]
        flags: dict[str, int] = {}
        for q in st.qualities:
            for f in q.flags:
                flags[f] = flags.get(f, 0) + 1
        case: dict[str, Any] = {
            "schema": CASE_SCHEMA,
            "source": st.source,
            "frames": frame_counts(st.statuses, st.seqs, last_seq),
            "calibration": {"mm_per_px": list(st.mm_per_px) if calibrated else None,
                            "source": st.calibration_source if calibrated else "none",
                            "note": st.calibration_note or (
                                "" if calibrated else "uncalibrated: no sizes in mm, and no "
                                "mm-based US LI-RADS rule can be applied")},
            "lesions": [lesion_json(les) for les in lesions],
            "mimics": [lesion_json(les) for les in mimics],
            "malignancy_risk": {"value": round(noisy_or(les.malignancy or 0.0 for les in lesions),
                                               4),
                                "method": "noisy-OR over lesions"},
            "steatosis": _diffuse_block(st.steatosis, st.diffuse_quality, STEATOSIS_GRADES,
                                        "grade"),
            "fibrosis": _diffuse_block(st.fibrosis, st.diffuse_quality, FIBROSIS_STAGES,
                                       "stage"),
            "lirads": lirads.to_json(),
            "quality": {"frames_scored": len(scores),
                        "mean_score": round(float(np.mean(scores)), 4) if scores else None,
                        "good_frames": st.good_frames,
                        "good_threshold": self.lirads_config.good_quality,
                        "flags": dict(sorted(flags.items()))},
            "aggregation": {"method": method, "min_track_frames": min_frames,
                            "min_track_confidence": float(self.config["min_track_confidence"]),
                            "mimic_classes": sorted(self._mimics),
                            "weights": "frame quality x detection confidence"},
            "models": models,
            "inference": {"backend": st.backend or None, "precision": st.precision or None,
                          "tta": st.tta or None},
            "software": {"name": "sonoflow", "version": __version__},
            "synthetic_models": synthetic,
            "synthetic_statement": (SYNTHETIC_STATEMENT if synthetic else
                                    "Model provenance unknown: no model card was found for "
                                    "the models named in the frames." if synthetic is None
                                    else "The models' cards do not declare synthetic-only "
                                    "training. Research software, not a diagnosis."),
        }
        thumbs = {f"thumb_{les.lesion_id}": st.lesions[les.lesion_id].thumbnail
                  for les in reported if st.lesions[les.lesion_id].thumbnail is not None}
        return case, thumbs

    def close(self) -> None:
        self._streams.clear()


def _diffuse_block(probs: list[dict[str, float]], qualities: list[float], names: tuple[str, ...],
                   grade_key: str) -> dict[str, Any]:
    pooled = pool_diffuse(probs, qualities, names)
    if pooled is None:  # no good-quality frame carried diffuse probabilities
        return {grade_key: None, "probs": {}, "frames": 0, "estimated": True}
    return {grade_key: pooled["grade"], "probs": pooled["probs"], "frames": pooled["frames"],
            "estimated": True}
