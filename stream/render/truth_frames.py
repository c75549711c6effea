"""Frame packets whose "detections" are the simulator's ground truth (an oracle ``infer``).

For previews of the overlay, the viewer's tests and benchmarks, and the docs screenshots: it
fills exactly the header fields the infer/track/aggregate stages fill, from
:mod:`sonoflow.stream.sim`'s exact truth, so the view can be built and checked without models.
The HUD labels such frames "ground truth (simulator)" (``InferResult.backend`` =
:data:`TRUTH_BACKEND`), never as model output.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from sonoflow.stream.messages import (
    Detection,
    FrameHeader,
    InferResult,
    LesionSummary,
    Packet,
    PreprocessResult,
    QualityResult,
    now_ns,
)
from sonoflow.stream.render.layers import TRUTH_BACKEND

#: the simulator's class names -> the five model classes (the mimic is "other")
SIM_TO_MODEL_CLASS = {"cyst": "cyst", "hemangioma": "hemangioma", "metastasis": "metastasis",
                      "hcc": "hcc", "fat_sparing": "other"}
#: the B-mode signs each simulated class is drawn with (sim docs), as feature labels
CLASS_FEATURES = {
    "cyst": ("anechoic", "posterior_enhancement", "well_defined"),
    "hemangioma": ("hyperechoic", "well_defined"),
    "metastasis": ("halo_target", "hypoechoic"),
    "hcc": ("hypoechoic", "mosaic"),
    "other": ("hypoechoic",),
}
MALIGNANT = ("metastasis", "hcc")


def truth_detection(lesion: dict[str, Any]) -> Detection:
    """A :class:`Detection` for one per-frame ground-truth lesion entry (confidence 1)."""
    label = SIM_TO_MODEL_CLASS.get(lesion["class"], "other")
    lid = int(lesion["lesion_id"])
    return Detection(
        xyxy_px=tuple(float(v) for v in lesion["xyxy_px"]), confidence=1.0, label=label,
        class_probs={c: float(c == label) for c in CLASS_FEATURES},
        malignancy=float(label in MALIGNANT),
        features={f: 1.0 for f in CLASS_FEATURES[label]}, track_id=lid, mask_id=lid)


class TruthAnnotator:
    """Turns simulator frames into enriched frame packets, one stream at a time.

    Args:
        case_truth: ``case.truth()`` of the simulated case (for the LI-RADS category).
        mm_per_px: ``(x, y)`` pixel spacing in mm.
        stream_id: the stream id written in each header.
        fps: nominal frame rate (sets ``pts`` and ``time_base``).
    """

    def __init__(self, case_truth: dict[str, Any], mm_per_px: tuple[float, float],
                 stream_id: str = "sim", fps: float = 30.0):
        self.case_truth = case_truth
        self.mm_per_px = mm_per_px
        self.stream_id = stream_id
        self.fps = fps
        self._lesions: dict[int, LesionSummary] = {}
        self._seq = 0

    def packet(self, frame: Any, capture_ns: int | None = None) -> Packet:
        """The packet for one ``SimFrame`` (arrays: ``image`` blanked outside the sector as
        ``preprocess`` does, ``lesion_mask``, ``liver_mask``).

        Frames whose ``quality_label`` is a fault are marked ``rejected`` with the fault as
        reason and carry no detections, as the quality gate would leave them.
        """
        truth = frame.truth
        fault = truth.get("quality_label", "good")
        good = fault == "good"
        dets = [truth_detection(les) for les in truth.get("lesions", [])] if good else []
        for det in dets:
            self._remember(det, frame.frame_index, truth)
        lirads = self.case_truth.get("lirads_category")
        header = FrameHeader(
            stream_id=self.stream_id, seq=self._seq, frame_index=int(frame.frame_index),
            pts=int(frame.frame_index), time_base=(1, int(round(self.fps))),
            capture_ns=now_ns() if capture_ns is None else capture_ns, pixel_format="gray8",
            pixel_spacing_mm=self.mm_per_px, spacing_source="simulator", source="sim",
            status="analysed" if good else "rejected",
            preprocess=PreprocessResult(sector_kind="convex", mm_per_px=self.mm_per_px,
                                        calibration_source="simulator", blanked=True),
            quality=QualityResult(score=1.0 if good else 0.0, flags=[] if good else [fault],
                                  keyframe=good, reason="" if good else fault.replace("_", " ")),
            infer=InferResult(detections=dets, backend=TRUTH_BACKEND) if good else None,
            lesions=sorted(self._lesions.values(), key=lambda s: s.lesion_id),
            extra={"lirads": {"category": lirads, "provisional": False}} if lirads else {})
        self._seq += 1
        from sonoflow.stream.sim.config import TISSUE_CODES

        # as the preprocess stage would: nothing outside the imaging sector (burned-in text)
        image = np.where(frame.sector_mask, frame.image, 0).astype(np.uint8)
        arrays = {"image": image,
                  "lesion_mask": np.ascontiguousarray(frame.lesion_ids, dtype=np.uint8),
                  "liver_mask": (frame.tissue == TISSUE_CODES["liver"]).astype(np.uint8)}
        return Packet(header=header, arrays=arrays)

    def _remember(self, det: Detection, frame_index: int, truth: dict[str, Any]) -> None:
        lid = int(det.track_id)
        entry = next(les for les in truth["lesions"] if int(les["lesion_id"]) == lid)
        diam = float(entry["diameter_mm"])
        short = entry.get("short_axis_mm")
        old = self._lesions.get(lid)
        is_best = old is None or old.long_axis_mm is None or diam >= old.long_axis_mm
        self._lesions[lid] = LesionSummary(
            lesion_id=lid, first_frame=frame_index if old is None else old.first_frame,
            last_frame=frame_index, best_frame=frame_index if is_best else old.best_frame,
            xyxy_px=det.xyxy_px if is_best else old.xyxy_px,
            long_axis_mm=diam if is_best else old.long_axis_mm,
            short_axis_mm=(None if short is None else float(short)) if is_best
            else old.short_axis_mm,
            label=det.label, class_probs=dict(det.class_probs), malignancy=det.malignancy,
            features=dict(det.features), n_frames=1 if old is None else old.n_frames + 1)


def truth_packets(seed: int, n_frames: int, height: int = 480, width: int = 640,
                  fps: float = 30.0, stream_id: str = "sim", **overrides: Any) -> Iterator[Packet]:
    """Simulate a clip and yield its oracle-annotated frame packets (see :class:`TruthAnnotator`).

    ``overrides`` go to :func:`sonoflow.stream.sim.sample_case` (e.g. ``n_lesions=3``).
    """
    from sonoflow.stream.sim import sample_case, simulate_clip

    case = sample_case(seed, **overrides)
    ann = TruthAnnotator(case.truth(), case.mm_per_px(height, width), stream_id, fps)
    for frame in simulate_clip(case, n_frames=n_frames, height=height, width=width, fps=fps):
        yield ann.packet(frame)
