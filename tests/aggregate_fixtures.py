"""Synthetic frames for the aggregate / report tests: moving discs with known size and class.

Not a test module (no ``test_`` prefix); imported by ``tests/test_aggregate*.py`` and
``tests/test_report*.py`` by path, since ``tests/`` is not a package.
"""

from __future__ import annotations

import cv2
import numpy as np

from sonoflow.stream.messages import (
    Detection,
    FrameHeader,
    InferResult,
    Packet,
    PreprocessResult,
    QualityResult,
)
from sonoflow.stream.stages.aggregate import AggregateStage
from sonoflow.stream.stages.track import TrackStage

TYPES = ("cyst", "hemangioma", "metastasis", "hcc", "other")


def disc_clip(n_frames: int = 60, mm_per_px: tuple[float, float] | None = (0.25, 0.25),
              lesions: tuple[tuple[str, float], ...] = (("cyst", 20.0), ("metastasis", 14.0)),
              seed: int = 0, drop_seqs: tuple[int, ...] = (), bad_frames: tuple[int, ...] = (),
              stream_id: str = "clip") -> list[Packet]:
    """Frames with one disc per lesion (class, diameter in mm at the equator).

    Each disc's in-plane diameter follows a sweep: ``d * sqrt(1 - t^2)`` with t from -0.9 to
    0.9, so the equator (true diameter) is mid-clip. Detections carry noisy class
    probabilities (the true class wins on average), a mask, features, malignancy.
    ``bad_frames`` get quality 0.2 and status "rejected" (no infer). ``drop_seqs`` never arrive.
    """
    rng = np.random.default_rng(seed)
    h, w = 240, 320
    spacing = mm_per_px or (0.25, 0.25)
    packets = []
    for f in range(n_frames):
        if f in drop_seqs:
            continue
        t = -0.9 + 1.8 * f / max(n_frames - 1, 1)
        image = np.full((h, w), 90, np.uint8)
        lesion_mask = np.zeros((h, w), np.uint8)
        dets = []
        for k, (cls, diam_mm) in enumerate(lesions):
            r_px = diam_mm * np.sqrt(1 - t * t) / 2 / spacing[0]
            cx, cy = 80 + 150 * k + 0.5 * f, 120 + 10 * np.sin(f / 10)
            cv2.circle(image, (int(round(cx)), int(round(cy))), int(round(r_px)), 30, -1)
            cv2.circle(lesion_mask, (int(round(cx)), int(round(cy))), int(round(r_px)), k + 1, -1)
            logits = rng.normal(0, 1.0, len(TYPES))
            logits[TYPES.index(cls)] += 1.5
            probs = np.exp(logits) / np.exp(logits).sum()
            dets.append(Detection(
                xyxy_px=(float(cx - r_px), float(cy - r_px), float(cx + r_px), float(cy + r_px)),
                confidence=float(np.clip(rng.normal(0.85, 0.05), 0, 1)),
                label=TYPES[int(np.argmax(probs))],
                class_probs={c: float(p) for c, p in zip(TYPES, probs, strict=True)},
                malignancy=float(np.clip(probs[2] + probs[3], 0, 1)),
                features={"anechoic": 0.9 if cls == "cyst" else 0.1}, mask_id=k + 1))
        bad = f in bad_frames
        header = FrameHeader(
            stream_id=stream_id, seq=f, frame_index=f, pts=f, time_base=(1, 30), capture_ns=0,
            pixel_format="gray8", source="synthetic-discs",
            status="rejected" if bad else "analysed",
            preprocess=PreprocessResult(mm_per_px=mm_per_px,
                                        calibration_source="simulator" if mm_per_px else "none"),
            quality=QualityResult(score=0.2 if bad else 0.9, flags=["too_dark"] if bad else [],
                                  keyframe=not bad),
            infer=None if bad else InferResult(
                detections=dets, steatosis_probs={"S0": 0.1, "S1": 0.7, "S2": 0.1, "S3": 0.1},
                fibrosis_probs={"F0": 0.6, "F1": 0.1, "F2": 0.1, "F3": 0.1, "F4": 0.1},
                models={}, backend="synthetic", precision="fp32"))
        arrays = {"image": image}
        if not bad:
            arrays["lesion_mask"] = lesion_mask
        packets.append(Packet(header, arrays))
    return packets


def run_stages(packets: list[Packet], track_config: dict | None = None,
               aggregate_config: dict | None = None, last_seq: int | None = None
               ) -> tuple[list[Packet], list[Packet], Packet]:
    """Chain track -> aggregate over ``packets`` (no sockets).

    Returns:
        ``(frame_packets, lesion_packets, case_packet)``.
    """
    from sonoflow.stream.messages import EosHeader

    track = TrackStage(track_config)
    agg = AggregateStage(aggregate_config)
    frames, lesions = [], []
    for p in packets:
        out = agg.process(track.process(p))
        for q in out if isinstance(out, list) else [out]:
            (frames if q.kind == "frame" else lesions).append(q)
    stream_id = packets[0].header.stream_id
    last = packets[-1].header.seq if last_seq is None else last_seq
    eos = Packet(EosHeader(stream_id=stream_id, last_seq=last, frames_total=last + 1))
    track.flush(eos)
    (case,) = agg.flush(eos)
    return frames, lesions, case
