"""The output sink: ``frames.jsonl``, ``latency.json``, ``overlay.mp4``, ``events.jsonl`` and,
when the pipeline aggregates, ``case.json`` + ``report.html`` (written by
:mod:`sonoflow.stream.sinks.report`).

Every frame is accounted for: one ``frames.jsonl`` record per captured frame, in capture order,
with ``status`` one of ``analysed``, ``rejected`` (quality), ``dropped`` (policy or lost in
transit: seq gaps), ``failed``; the four counts sum to the frames captured.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sonoflow.stream import messages as m
from sonoflow.stream.stage import Stage
from sonoflow.stream.timing import LatencyBook, frame_latency_ms

log = logging.getLogger(__name__)

FINAL_STATUSES = ("analysed", "rejected", "dropped", "failed")


def frame_record(h: m.FrameHeader, latency_ms: dict[str, float] | None) -> dict[str, Any]:
    """One ``frames.jsonl`` record (keys per DESIGN.md output contracts, plus a few extras)."""
    status = "analysed" if h.status == "pending" else h.status
    rec: dict[str, Any] = {
        "seq": h.seq,
        "frame_index": h.frame_index,
        "pts_s": round(h.pts_s, 6),
        "status": status,
        "quality": ({"score": round(h.quality.score, 4), "flags": list(h.quality.flags)}
                    if h.quality else None),
        "detections": [],
        "steatosis_probs": {},
        "fibrosis_probs": {},
    }
    if h.infer is not None:
        rec["detections"] = [{
            "track_id": d.track_id,
            "xyxy_px": [round(float(v), 1) for v in d.xyxy_px],
            "confidence": round(float(d.confidence), 4),
            "class": d.label,
            "class_probs": {k: round(float(v), 4) for k, v in d.class_probs.items()},
            "malignancy": None if d.malignancy is None else round(float(d.malignancy), 4),
            "features": {k: round(float(v), 4) for k, v in d.features.items()},
        } for d in h.infer.detections]
        rec["steatosis_probs"] = {k: round(float(v), 4) for k, v in h.infer.steatosis_probs.items()}
        rec["fibrosis_probs"] = {k: round(float(v), 4) for k, v in h.infer.fibrosis_probs.items()}
    if h.quality is not None and not h.quality.keyframe and h.quality.reason:
        rec["reason"] = h.quality.reason
    if h.error:
        rec["reason" if status == "dropped" else "error"] = h.error
    if h.preprocess is not None:
        rec["mm_per_px"] = list(h.preprocess.mm_per_px) if h.preprocess.mm_per_px else None
    rec["latency_ms"] = {k: round(v, 3) for k, v in (latency_ms or {}).items()
                         if not k.startswith("edge:")}
    return rec


class _StreamOut:
    def __init__(self, out_dir: Path, cfg: dict[str, Any]):
        self.dir = out_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.frames_path = self.dir / "frames.jsonl"
        self.jsonl = self.frames_path.open("w")
        self.events = (self.dir / "events.jsonl").open("w")
        self.book = LatencyBook(skip_head=int(cfg["latency_skip_head"]))
        self.counts = dict.fromkeys(FINAL_STATUSES, 0)
        self.last_seq = -1
        self.video = None
        self.video_frames = 0
        self.last_shape: tuple[int, ...] | None = None
        self.pts_hist: list[float] = []
        self.source = ""
        self.calibration: dict[str, Any] | None = None
        self.case_written = False
        self.eos: m.EosHeader | None = None

    def write_record(self, rec: dict[str, Any]) -> None:
        self.counts[rec["status"]] += 1
        self.jsonl.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def event(self, obj: dict[str, Any]) -> None:
        self.events.write(json.dumps(obj, separators=(",", ":")) + "\n")


class OutputSink(Stage):
    """Terminal stage writing the per-source output folder.

    Config:
        out_dir: output folder (required).
        per_stream_dirs: write ``out_dir/<stream_id>/`` (several streams in one pipeline).
        video: write ``overlay.mp4`` from the ``overlay`` array (else ``image``).
        fps: video frame rate; 0 = estimate from the stream's pts.
        latency_skip_head: frames excluded from latency statistics (warm-up; stated in
            latency.json).
    """

    key = "sink"
    accepts = ("frame", "lesion", "case", "error")
    wants_all_frames = True
    defaults = {"out_dir": "", "per_stream_dirs": False, "video": True, "fps": 0.0,
                "latency_skip_head": 0, "video_crf": 23}

    def open(self) -> None:
        if not self.config["out_dir"]:
            from sonoflow.stream.errors import ConfigError

            raise ConfigError("sink: `out_dir` is required")
        self._streams: dict[str, _StreamOut] = {}

    def _stream(self, stream_id: str) -> _StreamOut:
        s = self._streams.get(stream_id)
        if s is None:
            base = Path(self.config["out_dir"])
            d = base / stream_id if self.config["per_stream_dirs"] else base
            s = _StreamOut(d, self.config)
            self._streams[stream_id] = s
        return s

    def process(self, packet: m.Packet):
        h = packet.header
        t_end = m.now_ns()
        s = self._stream(h.stream_id)
        if isinstance(h, m.FrameHeader):
            self._gap(s, h.seq)
            s.last_seq = max(s.last_seq, h.seq)
            s.source = s.source or h.source
            if s.calibration is None and h.preprocess is not None:
                s.calibration = {"mm_per_px": list(h.preprocess.mm_per_px)
                                 if h.preprocess.mm_per_px else None,
                                 "source": h.preprocess.calibration_source
                                 if h.preprocess.mm_per_px else "none",
                                 "note": h.preprocess.calibration_note}
            lat = frame_latency_ms(h, t_end) if "image" in packet.arrays else None
            if lat is not None:
                s.book.add(lat, t_end)
            s.write_record(frame_record(h, lat))
            if self.config["video"]:
                self._video(s, h, packet.arrays)
        elif isinstance(h, m.CaseHeader):
            self._write_case(s, packet)
        elif isinstance(h, m.LesionHeader):
            s.event({"kind": "lesion", "seq": h.seq, **m.header_to_builtins(h.lesion)})
        elif isinstance(h, m.ErrorHeader):
            s.event({"kind": "error", **m.header_to_builtins(h)})
        return None

    def _gap(self, s: _StreamOut, seq: int) -> None:
        for missing in range(s.last_seq + 1, seq):
            s.write_record({"seq": missing, "frame_index": None, "pts_s": None,
                            "status": "dropped", "quality": None, "detections": [],
                            "steatosis_probs": {}, "fibrosis_probs": {},
                            "reason": "lost in transit (seq gap, e.g. a stage restart)",
                            "latency_ms": {}})

    def _video(self, s: _StreamOut, h: m.FrameHeader, arrays: dict[str, np.ndarray]) -> None:
        from sonoflow.stream.sinks.video import VideoWriter

        img = arrays.get("overlay", arrays.get("image"))
        if img is not None:
            s.last_shape = img.shape
        if s.video is None:
            if img is None:
                return  # nothing seen yet to size a placeholder frame on
            fps = self.config["fps"] or _estimate_fps(s, h) or 30.0
            s.video = VideoWriter(s.dir / "overlay.mp4", fps, crf=int(self.config["video_crf"]))
        elif img is not None and img.shape[:2] != s.last_shape[:2]:
            return
        if img is None:
            img = _placeholder(s.last_shape, f"frame {h.frame_index}: {h.status}",
                               h.error or "")
        s.video.write(img)
        s.video_frames += 1
        _estimate_fps(s, h)

    def _write_case(self, s: _StreamOut, packet: m.Packet) -> None:
        h: m.CaseHeader = packet.header
        case = dict(h.case)
        case["frames"] = {"total": sum(s.counts.values()), **s.counts}
        s.jsonl.flush()
        try:
            from sonoflow.stream.sinks import report
        except ModuleNotFoundError:
            (s.dir / "case.json").write_text(json.dumps(case, indent=2))
        else:
            packet = m.Packet(m.CaseHeader(stream_id=h.stream_id, case=case), packet.arrays)
            report.write_case_outputs(s.dir, packet, s.frames_path)
        s.case_written = True

    def flush(self, eos: m.Packet) -> list[m.Packet]:
        h: m.EosHeader = eos.header
        s = self._stream(h.stream_id)
        self._gap(s, h.last_seq + 1)
        s.eos = h
        self._finish(s)
        return []

    def _finish(self, s: _StreamOut) -> None:
        if s.jsonl.closed:
            return
        s.jsonl.close()
        s.events.close()
        if s.video is not None:
            s.video.close()
        total = sum(s.counts.values())
        lat = s.book.summary(drops=s.counts["dropped"])
        doc = {
            "schema": "sonoflow.latency/1",
            "source": s.source,
            **lat,
            "frames": {"total": total, **s.counts},
            "overlay_frames": s.video_frames,
            "warmup": f"first {lat['skipped_head']} frame(s) excluded from the distributions",
            "eos": {"reason": s.eos.reason, "error": s.eos.error} if s.eos else None,
            "clock": "time.monotonic_ns (capture_ns -> arrival at the sink)",
        }
        (s.dir / "latency.json").write_text(json.dumps(doc, indent=2))

    def close(self) -> None:
        for s in getattr(self, "_streams", {}).values():
            self._finish(s)


def _estimate_fps(s: _StreamOut, h: m.FrameHeader) -> float | None:
    if len(s.pts_hist) < 16:
        s.pts_hist.append(h.pts_s)
    if len(s.pts_hist) >= 2:
        d = np.diff(np.asarray(s.pts_hist))
        d = d[d > 0]
        if d.size:
            return float(1.0 / np.median(d))
    return None


def _placeholder(shape: tuple[int, ...], title: str, detail: str) -> np.ndarray:
    img = np.zeros((shape[0], shape[1], 3), np.uint8)
    scale = max(0.4, shape[0] / 900)
    cv2.putText(img, title, (10, int(40 * scale) + 10), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (230, 159, 0), max(1, int(2 * scale)), cv2.LINE_AA)
    cv2.putText(img, detail[:80], (10, int(80 * scale) + 10), cv2.FONT_HERSHEY_SIMPLEX,
                scale * 0.7, (200, 200, 200), 1, cv2.LINE_AA)
    return img
