"""Evaluate tracking + aggregation (+ the models) on simulator clips with held-out seeds.

Each clip is simulated (``sonoflow.stream.sim``), then run in process, without sockets, through
``preprocess -> quality -> <detector> -> track -> aggregate`` (two aggregate instances side by
side: log-odds pooling and attention pooling). The detector is either

* ``--detector models``: the ``infer`` stage with the shipped models (``ort-cpu``),
* ``--detector gt-boxes-classifier``: the noisy ground-truth boxes below, classified by the
  shipped lesion classifier (:class:`ClassifierOnTruthBoxes`), or
* ``--detector gt-noise``: **detections derived from the simulator's ground truth with noise**
  (boxes jittered, misses, false positives incl. a persistent mimic, noisy class probabilities
  and diffuse grades; see :class:`GroundTruthNoiseDetector`). It measures the tracking and
  aggregation logic only, never the models, and every output says so.

"In view" means cut by the scan plane and visible there (echo around it, contrast; the rule of
``sonoflow.training.data.visibility``, the same the frame network's metrics use); recall over
every lesion the plane cuts is reported beside it.

Metrics (issue 6 "Done when"): lesion recall for lesions >= 10 mm in view >= 10 frames, false
lesions per clip, lesion-type accuracy, long-axis error vs the true in-plane diameter, track
fragmentation, US LI-RADS agreement; and frame-level vs lesion-level vs case-level side by side.

Usage::

    .venv/bin/python benchmarks/eval_findings.py --detector gt-noise --clips 20 --frames 150
    .venv/bin/python benchmarks/eval_findings.py --detector models --clips 20 --frames 150

Writes ``benchmarks/results/findings_<detector>.json`` and ``.md`` (and prints the markdown).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sonoflow.stream.aggregation.lirads import LiradsConfig, categorize
from sonoflow.stream.aggregation.size import axes_from_mask
from sonoflow.stream.messages import (
    Detection,
    EosHeader,
    FrameHeader,
    InferResult,
    LesionSummary,
    Packet,
    now_ns,
)
from sonoflow.stream.stage import create
from sonoflow.stream.tracking.association import iou_matrix
from sonoflow.training.data.visibility import frame_visibility

FIRST_SEED = 900001  # never used in training or tuning (training seeds start at 0)
TYPES = ("cyst", "hemangioma", "metastasis", "hcc", "other")
SIM_TO_TYPE = {"cyst": "cyst", "hemangioma": "hemangioma", "metastasis": "metastasis",
               "hcc": "hcc", "fat_sparing": "other"}
MALIGNANT = {"metastasis", "hcc"}
STEATOSIS = ("S0", "S1", "S2", "S3")
FIBROSIS = ("F0", "F1", "F2", "F3", "F4")
ELIGIBLE_MM = 10.0
ELIGIBLE_FRAMES = 10
MATCH_IOU = 0.3
CACHED_ARRAYS = ("image", "lesion_mask")


# --- the ground-truth-with-noise detector ------------------------------------------------------

class GroundTruthNoiseDetector:
    """Stand-in for ``infer``: detections from the simulator's truth, degraded on purpose.

    Per visible lesion and frame: detected with probability 0.85 (0.5 below 5 mm in plane,
    halved on frames whose quality label is not "good"); box = true box with Gaussian jitter of
    5 % of its size per coordinate; mask = the true instance mask; confidence ~ N(0.8, 0.1);
    class logits = 1.2 on the true type + N(0, 1) noise (about 60 % of single frames right);
    malignancy = sigmoid(+-1.5 + N(0, 1.2)). False positives: Poisson(0.08) per frame at random
    places in the sector (confidence U(0.3, 0.7), random type); and in 30 % of clips a
    persistent mimic at a fixed place detected on 30 % of frames (confidence ~0.55). Diffuse
    grades: logits 1.0 on the true grade + N(0, 1). Deterministic per (seed, frame).
    """

    def __init__(self, seed: int, truth_case: dict[str, Any]):
        self.seed = seed
        self.steatosis = int(truth_case["steatosis_grade"])
        self.fibrosis = int(truth_case["fibrosis_stage"])
        rng = np.random.default_rng([seed, 7])
        self.mimic = rng.random() < 0.3
        self.mimic_xy = rng.uniform(0.3, 0.7, size=2)

    def detect(self, frame: Any, mm_per_px: tuple[float, float]) -> tuple[InferResult, np.ndarray]:
        rng = np.random.default_rng([self.seed, frame.frame_index, 11])
        h, w = frame.image.shape[:2]
        lesion_mask = np.zeros((h, w), np.uint8)
        dets: list[Detection] = []
        quality = frame.truth.get("quality_label", "good")
        blind = quality in ("black", "no_contact")
        for les in frame.truth.get("lesions", []):
            lid = int(les["lesion_id"])
            inst = frame.lesion_ids == lid
            if blind or not inst.any():
                continue
            p = 0.85 if les.get("diameter_mm", 10.0) >= 5.0 else 0.5
            if quality != "good":
                p *= 0.5
            if rng.random() > p:
                continue
            x0, y0, x1, y1 = (float(v) for v in les["xyxy_px"])
            s = max(x1 - x0, y1 - y0)
            box = np.array([x0, y0, x1, y1]) + rng.normal(0, 0.05 * s, 4)
            mask_id = len(dets) + 1
            lesion_mask[inst] = mask_id
            true_type = SIM_TO_TYPE[les["class"]]
            dets.append(self._det(rng, tuple(box), true_type, float(rng.normal(0.8, 0.1)),
                                  mask_id))
        if not blind:
            sector = np.argwhere(frame.sector_mask)
            for _ in range(rng.poisson(0.08)):
                cy, cx = sector[rng.integers(len(sector))]
                r = rng.uniform(8, 20)
                dets.append(self._det(rng, (cx - r, cy - r, cx + r, cy + r),
                                      TYPES[rng.integers(5)], float(rng.uniform(0.3, 0.7)), None,
                                      weak=True))
            if self.mimic and rng.random() < 0.3:
                cx, cy = self.mimic_xy[0] * w, self.mimic_xy[1] * h
                dets.append(self._det(rng, (cx - 15, cy - 12, cx + 15, cy + 12), "other",
                                      float(rng.normal(0.55, 0.05)), None, weak=True))
        infer = InferResult(
            detections=dets,
            steatosis_probs=_noisy_probs(rng, STEATOSIS, self.steatosis, 1.0),
            fibrosis_probs=_noisy_probs(rng, FIBROSIS, self.fibrosis, 1.0),
            models={"gt-noise": "000000000000"}, backend="gt-noise", precision="fp32")
        return infer, lesion_mask

    @staticmethod
    def _det(rng, box, true_type: str, conf: float, mask_id: int | None,
             weak: bool = False) -> Detection:
        logits = rng.normal(0, 1.0, 5)
        logits[TYPES.index(true_type)] += 0.0 if weak else 1.2
        probs = np.exp(logits) / np.exp(logits).sum()
        sign = 1.5 if true_type in MALIGNANT else -1.5
        mal = 1 / (1 + np.exp(-(sign + rng.normal(0, 1.2))))
        return Detection(xyxy_px=tuple(float(v) for v in box),
                         confidence=float(np.clip(conf, 0.05, 0.99)),
                         label=TYPES[int(np.argmax(probs))],
                         class_probs={t: float(p) for t, p in zip(TYPES, probs, strict=True)},
                         malignancy=float(mal), features={}, mask_id=mask_id)


class ClassifierOnTruthBoxes:
    """The shipped lesion classifier on the noisy ground-truth boxes of
    :class:`GroundTruthNoiseDetector` (until the frame network ships).

    Boxes, masks, misses, false positives and diffuse grades come from the noise model; the type
    probabilities, malignancy and feature labels of every box are the classifier's (same crop
    contract as the ``infer`` stage: ``sonoflow.models.preprocess.crop_square``). So type,
    malignancy and LI-RADS figures measure a real model pooled by the aggregator.
    """

    def __init__(self, seed: int, truth_case: dict[str, Any], precision: str = "fp32"):
        from sonoflow.models.registry import resolve
        from sonoflow.models.runtime import load

        self.boxes = GroundTruthNoiseDetector(seed, truth_case)
        path, card = resolve("lesion-cls-v1", precision)
        self.runtime = load(path, backend="ort-cpu", card=card)
        self.card = card
        self.short_sha = card.sha256[:12]

    def detect(self, frame: Any, image: np.ndarray, mm_per_px: tuple[float, float]
               ) -> tuple[InferResult, np.ndarray]:
        from sonoflow.models.preprocess import crop_square, normalise

        infer, lesion_mask = self.boxes.detect(frame, mm_per_px)
        if infer.detections:
            spec = self.card.input
            crop = self.card.extra.get("crop", {})
            crops = np.stack([crop_square(image, d.xyxy_px, float(spec.crop_margin),
                                          int(spec.shape[-1]),
                                          int(crop.get("min_side_px", 12)),
                                          int(spec.pad_value)) for d in infer.detections])
            x = normalise(crops, spec)
            if spec.shape[0] > 0:
                parts = [self.runtime.run({spec.name: x[i:i + 1]}) for i in range(len(x))]
                outs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            else:
                outs = self.runtime.run({spec.name: x})
            logits = outs["type_logits"]
            types = np.exp(logits - logits.max(1, keepdims=True))
            types /= types.sum(1, keepdims=True)
            mal = 1 / (1 + np.exp(-outs["malignancy_logit"].reshape(-1)))
            feats = 1 / (1 + np.exp(-outs["feature_logits"]))
            names = self.card.class_names["type"]
            feat_names = self.card.class_names["features"]
            for k, d in enumerate(infer.detections):
                d.class_probs = {n: float(p) for n, p in zip(names, types[k], strict=True)}
                d.label = names[int(np.argmax(types[k]))]
                d.malignancy = float(mal[k])
                d.features = {n: float(p) for n, p in zip(feat_names, feats[k], strict=True)}
        infer.models = {"gt-noise-boxes": "000000000000", self.card.id: self.short_sha}
        infer.backend = "ort-cpu"
        return infer, lesion_mask


def _noisy_probs(rng, names, true_idx: int, strength: float) -> dict[str, float]:
    logits = rng.normal(0, 1.0, len(names))
    logits[true_idx] += strength
    p = np.exp(logits) / np.exp(logits).sum()
    return {n: float(v) for n, v in zip(names, p, strict=True)}


# --- running one clip --------------------------------------------------------------------------

@dataclass
class ClipRun:
    """What one clip produced, for scoring."""

    seed: int
    truth: dict[str, Any]
    frame_truth: list[dict[str, Any]]
    cases: dict[str, dict[str, Any]]  # pooling method -> case.json document
    # per frame, {lesion id: visible} by the frame network's visibility rule
    frame_visible: list[dict[int, bool]] = field(default_factory=list)
    track_votes: dict[int, Counter] = field(default_factory=dict)  # track id -> truth id votes
    frame_dets: list[dict[str, Any]] = field(default_factory=list)  # per matched detection
    frame_categories: list[str | None] = field(default_factory=list)
    frame_diffuse: list[tuple[str, str]] = field(default_factory=list)
    frame_fp: list[int] = field(default_factory=list)  # unmatched detections per analysed frame
    # per visible true lesion and analysed frame: (in-plane diameter mm, detected)
    frame_hits: list[tuple[float, bool]] = field(default_factory=list)
    mm_per_px: tuple[float, float] = (1.0, 1.0)
    seconds: float = 0.0
    stage_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def _detector_frames(seed: int, n_frames: int, detector_kind: str, stage_keys: list[str],
                     infer_config: dict[str, Any] | None,
                     stage_configs: dict[str, dict[str, Any]] | None = None):
    """Yield ``(frame truth, visibility, packet after the detector)`` per frame.

    The packet is what ``track`` receives: preprocessed, quality-scored and, where the gate is
    open, filled by the detector.
    """
    from sonoflow.stream.sim import sample_case, simulate_clip

    case = sample_case(seed)
    truth = case.truth()
    h, w = 480, 640
    mm = tuple(case.mm_per_px(h, w))
    stages = [create(k, (stage_configs or {}).get(k)) for k in stage_keys]
    infer = create("infer", infer_config) if detector_kind == "models" else None
    gt_det = GroundTruthNoiseDetector(seed, truth) if detector_kind == "gt-noise" else None
    cls_det = ClassifierOnTruthBoxes(seed, truth) if detector_kind == "gt-boxes-classifier" \
        else None
    for s in [*stages, *([infer] if infer else [])]:
        s.open()
    stream_id = f"sim-{seed}"
    try:
        for seq, f in enumerate(simulate_clip(case, n_frames=n_frames, height=h, width=w,
                                              fps=30.0)):
            header = FrameHeader(stream_id=stream_id, seq=seq, frame_index=f.frame_index,
                                 pts=seq, time_base=(1, 30), capture_ns=now_ns(),
                                 pixel_format="gray8", pixel_spacing_mm=mm,
                                 spacing_source="simulator", source=f"sim:seed={seed}")
            packet = Packet(header, {"image": f.image})
            for s in stages:
                packet = s.process(packet)
            hdr = packet.header
            gate_open = hdr.quality is None or hdr.quality.keyframe
            if gate_open:
                if infer is not None:
                    packet = infer.process(packet)
                else:
                    inf, lesion_mask = (gt_det.detect(f, mm) if gt_det is not None else
                                        cls_det.detect(f, packet.arrays["image"], mm))
                    hdr.infer = inf
                    hdr.status = "analysed"
                    packet.arrays["lesion_mask"] = lesion_mask
            yield f.truth, frame_visibility(f), packet
    finally:
        for s in [*stages, *([infer] if infer else [])]:
            s.close()


def _cache_path(cache: Path, seed: int, n_frames: int, detector_kind: str,
                stage_keys: list[str], infer_config: dict[str, Any] | None,
                stage_configs: dict[str, dict[str, Any]] | None = None) -> Path:
    """One file per clip and detector setting; the key holds everything the frames depend on,
    including the shipped weights' bytes when no ``weights_dir`` is given."""
    import hashlib

    from sonoflow.models.registry import weights_dir as shipped_dir

    key = json.dumps({"seed": seed, "frames": n_frames, "detector": detector_kind,
                      "stages": stage_keys, "infer": infer_config or {},
                      **({"stage_configs": stage_configs} if stage_configs else {})},
                     sort_keys=True)
    h = hashlib.sha256(key.encode())
    if detector_kind in ("models", "gt-boxes-classifier"):
        wdir = Path((infer_config or {}).get("weights_dir") or shipped_dir())
        for f in sorted(wdir.glob("*.onnx")):
            h.update(f.name.encode() + hashlib.sha256(f.read_bytes()).digest())
    return cache / f"{seed}_{h.hexdigest()[:16]}.msgpack"


def cached_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of one clip's cache file (:func:`run_clip`); decode them with
    :func:`frames_from_rows`, once per replay (the stages mutate the packets they get)."""
    import msgspec

    return msgspec.msgpack.decode(path.read_bytes())


def frames_from_rows(rows: list[dict[str, Any]]):
    """``(frame truth, visibility, packet)`` per cached row, packets freshly decoded."""
    from sonoflow.stream.messages import decode

    for r in rows:
        yield r["truth"], {int(k): v for k, v in r["visible"].items()}, decode(r["parts"])


def run_clip(seed: int, n_frames: int, detector_kind: str, stage_keys: list[str],
             infer_config: dict[str, Any] | None = None,
             aggregate_config: dict[str, Any] | None = None,
             track_config: dict[str, Any] | None = None,
             cache: Path | None = None,
             stage_configs: dict[str, dict[str, Any]] | None = None) -> ClipRun:
    """Simulate one clip and push it through the stages in process.

    With ``cache``, what the detector produced per frame is stored there on the first run (the
    packets in their wire encoding, :func:`sonoflow.stream.messages.encode`) and read back on
    later ones, so that track and aggregate settings can be compared in seconds (the frames are
    the same: simulation and models are deterministic per seed).
    """
    import msgspec

    from sonoflow.stream.messages import encode

    t0 = time.perf_counter()
    frames: Any
    path = (_cache_path(cache, seed, n_frames, detector_kind, stage_keys, infer_config,
                        stage_configs) if cache is not None else None)
    if path is not None and path.exists():
        frames = frames_from_rows(cached_rows(path))
    else:
        frames = _detector_frames(seed, n_frames, detector_kind, stage_keys, infer_config,
                                  stage_configs)
        if path is not None:
            # only the arrays track and aggregate read (the image for key frames, the lesion
            # mask for sizes): the rest would make a clip's file 2.5x larger
            frames = [(t, vis, Packet(pk.header, {k: a for k, a in pk.arrays.items()
                                                  if k in CACHED_ARRAYS}))
                      for t, vis, pk in frames]
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = [{"truth": t, "visible": {str(k): v for k, v in vis.items()},
                     "parts": [bytes(x) for x in encode(pk)]} for t, vis, pk in frames]
            path.write_bytes(msgspec.msgpack.encode(rows))
            # replay what was stored, so a cached and an uncached run see the same packets
            frames = frames_from_rows(rows)
    run = replay_clip(seed, frames, track_config, aggregate_config)
    run.seconds = time.perf_counter() - t0
    return run


def replay_clip(seed: int, frames, track_config: dict[str, Any] | None = None,
                aggregate_config: dict[str, Any] | None = None) -> ClipRun:
    """Track and aggregate (both pooling methods) one clip's detector output, and score it
    frame by frame; ``frames`` yields ``(frame truth, visibility, packet)``."""
    from sonoflow.stream.sim import sample_case

    t0 = time.perf_counter()
    case = sample_case(seed)
    truth = case.truth()
    mm = tuple(case.mm_per_px(480, 640))
    track = create("track", track_config)
    aggs = {m: create("aggregate", {**(aggregate_config or {}), "method": m})
            for m in ("log_odds", "attention")}
    for s in [track, *aggs.values()]:
        s.open()
    run = ClipRun(seed=seed, truth=truth, frame_truth=[], cases={}, mm_per_px=mm)
    votes: dict[int, Counter] = defaultdict(Counter)
    stream_id = f"sim-{seed}"
    lcfg = LiradsConfig()
    n_seen = 0
    for ftruth, visible, packet in frames:
        n_seen += 1
        run.frame_truth.append(ftruth)
        run.frame_visible.append(visible)
        t_stage = time.perf_counter()
        packet = track.process(packet)
        run.stage_ms["track"].append((time.perf_counter() - t_stage) * 1e3)
        hdr = packet.header
        if hdr.infer is not None:
            _score_frame(run, votes, hdr, packet.arrays, ftruth, mm, lcfg)
        for agg in aggs.values():
            t_stage = time.perf_counter()
            out = agg.process(packet)
            run.stage_ms[f"aggregate[{agg.config['method']}]"].append(
                (time.perf_counter() - t_stage) * 1e3)
            packet = out[0] if isinstance(out, list) else out
    eos = Packet(EosHeader(stream_id=stream_id, last_seq=n_seen - 1, frames_total=n_seen))
    for m, agg in aggs.items():
        (case_packet,) = agg.flush(eos)
        run.cases[m] = case_packet.header.case
    for s in [track, *aggs.values()]:
        s.close()
    run.track_votes = dict(votes)
    run.seconds = time.perf_counter() - t0
    return run


def _score_frame(run: ClipRun, votes, hdr: FrameHeader, arrays, ftruth, mm, lcfg) -> None:
    """Frame-level bookkeeping: detection <-> truth matches, votes, single-frame LI-RADS."""
    dets = hdr.infer.detections
    tids = (hdr.extra.get("track") or {}).get("ids") or [d.track_id for d in dets]
    truth_l = ftruth.get("lesions", [])
    truth_boxes = np.array([t["xyxy_px"] for t in truth_l], dtype=float).reshape(-1, 4)
    det_boxes = np.array([d.xyxy_px for d in dets], dtype=float).reshape(-1, 4)
    iou = iou_matrix(det_boxes, truth_boxes) if len(dets) and len(truth_l) else None
    single: list[LesionSummary] = []
    lesion_mask = arrays.get("lesion_mask")
    matched_truth: set[int] = set()
    for i, d in enumerate(dets):
        tid = tids[i]
        match = None
        if iou is not None and iou[i].max() >= MATCH_IOU:
            match = truth_l[int(iou[i].argmax())]
            matched_truth.add(int(match["lesion_id"]))
        if tid is not None:
            votes[tid][int(match["lesion_id"]) if match else 0] += 1
        mask = (lesion_mask == d.mask_id) if (lesion_mask is not None and d.mask_id) else None
        axes = axes_from_mask(mask, mm) if mask is not None and mask.any() else None
        if axes is None:
            bw, bh = (d.xyxy_px[2] - d.xyxy_px[0]) * mm[0], (d.xyxy_px[3] - d.xyxy_px[1]) * mm[1]
            axes = (max(bw, bh), min(bw, bh))
        if match is not None:
            run.frame_dets.append({"lesion_id": int(match["lesion_id"]), "class": d.label,
                                   "true_class": SIM_TO_TYPE[match["class"]],
                                   "malignancy": d.malignancy, "long_axis_mm": float(axes[0]),
                                   "true_inplane_mm": float(match.get("diameter_mm", np.nan)),
                                   "confidence": float(d.confidence), "track_id": tid})
        if d.confidence >= 0.5:
            single.append(LesionSummary(lesion_id=i + 1, first_frame=0, last_frame=0,
                                        best_frame=0, xyxy_px=tuple(d.xyxy_px),
                                        long_axis_mm=float(axes[0]), short_axis_mm=float(axes[1]),
                                        label=d.label, class_probs=dict(d.class_probs),
                                        malignancy=d.malignancy, features={}))
    good = hdr.quality is None or hdr.quality.score >= lcfg.good_quality
    # frame-level detection: every detection the infer stage emits, matched at IoU >=
    # MATCH_IOU to the lesions visible on this frame; unmatched ones are false
    vis = run.frame_visible[-1] if run.frame_visible else {}
    run.frame_fp.append(sum(1 for i in range(len(dets))
                            if iou is None or iou[i].max() < MATCH_IOU))
    for t in truth_l:
        if vis.get(int(t["lesion_id"]), not run.frame_visible):
            run.frame_hits.append((float(t.get("diameter_mm", 0.0)),
                                   int(t["lesion_id"]) in matched_truth))
    if good:
        res = categorize(single, good_frames=lcfg.min_good_frames, calibrated=True,
                         visualization=("-", "single frame"), config=lcfg)
        run.frame_categories.append(res.category)
        st = hdr.infer.steatosis_probs
        fb = hdr.infer.fibrosis_probs
        if st and fb:
            run.frame_diffuse.append((max(st, key=st.get), max(fb, key=fb.get)))


# --- scoring -----------------------------------------------------------------------------------

def truth_lesion_table(run: ClipRun) -> dict[int, dict[str, Any]]:
    """Per true lesion: frames in view, max in-plane diameter, class, 3-D diameter.

    A frame counts as "in view" when the scan plane cuts the lesion *and* the lesion is
    visible there by :func:`sonoflow.training.data.visibility.lesion_visibility` (echo around
    it, contrast): a lesion cut in a rib shadow or beyond the penetration depth is not in view.
    ``frames_cut`` counts every frame the plane cuts it, visible or not; ``frames_good``
    counts the in-view frames the simulator labels good quality (not too dark, frozen, blurred
    or off the skin): the frames a quality gate is meant to let through.
    """
    out: dict[int, dict[str, Any]] = {}
    for les in run.truth["lesions"]:
        out[int(les["lesion_id"])] = {"class": SIM_TO_TYPE[les["class"]], "frames": 0,
                                      "frames_cut": 0, "frames_good": 0, "max_inplane_mm": 0.0,
                                      "diameter_mm": float(les["diameter_mm"]),
                                      "lirads": les.get("lirads_category")}
    visible = run.frame_visible or [{} for _ in run.frame_truth]
    for ft, vis in zip(run.frame_truth, visible, strict=True):
        for les in ft.get("lesions", []):
            t = out.get(int(les["lesion_id"]))
            if t is None:
                continue
            t["frames_cut"] += 1
            t["max_inplane_mm_cut"] = max(t.get("max_inplane_mm_cut", 0.0),
                                          float(les.get("diameter_mm", 0.0)))
            if not vis.get(int(les["lesion_id"]), not run.frame_visible):
                continue
            t["frames"] += 1
            if ft.get("quality_label", "good") == "good":
                t["frames_good"] += 1
            t["max_inplane_mm"] = max(t["max_inplane_mm"], float(les.get("diameter_mm", 0.0)))
    return out


def score_clip(run: ClipRun, method: str) -> dict[str, Any]:
    """Lesion- and case-level scores of one clip for one pooling method."""
    case = run.cases[method]
    truth = truth_lesion_table(run)
    eligible = {k for k, t in truth.items()
                if t["max_inplane_mm"] >= ELIGIBLE_MM and t["frames"] >= ELIGIBLE_FRAMES}
    # the same rule over good-quality frames only (reported beside it)
    eligible_good = {k for k in eligible if truth[k]["frames_good"] >= ELIGIBLE_FRAMES}
    # the same rule on every frame the plane cuts, visible or not (reported beside it)
    eligible_cut = {k for k, t in truth.items()
                    if t.get("max_inplane_mm_cut", 0.0) >= ELIGIBLE_MM
                    and t["frames_cut"] >= ELIGIBLE_FRAMES}
    # a true lesion counts as found when the case lists it as a lesion or as a possible mimic
    # (case["mimics"]: focal fat sparing is one); a false track counts against the lesion
    # table only when it is listed as a lesion, and is counted apart when listed as a mimic
    mimic_ids = {les["lesion_id"] for les in case.get("mimics", [])}
    reported = {les["lesion_id"]: les for les in [*case["lesions"], *case.get("mimics", [])]}
    assign: dict[int, int] = {}
    for lid in reported:
        v = run.track_votes.get(lid, Counter())
        assign[lid] = v.most_common(1)[0][0] if v else 0
    false_lesions = [lid for lid, t in assign.items() if t == 0 and lid not in mimic_ids]
    false_mimics = [lid for lid, t in assign.items() if t == 0 and lid in mimic_ids]
    per_truth: dict[int, list[int]] = defaultdict(list)
    for lid, t in assign.items():
        if t:
            per_truth[t].append(lid)
    type_hits, size_err, size_err_best, type_pairs, size_signed = [], [], [], [], []
    mal_pairs = []
    for t, lids in per_truth.items():
        main = max(lids, key=lambda k: reported[k].get("n_frames", 0))
        les = reported[main]
        type_hits.append(les["class"] == truth[t]["class"])
        type_pairs.append((truth[t]["class"], les["class"]))
        mal_pairs.append((les["malignancy"], truth[t]["class"] in MALIGNANT))
        if les.get("long_axis_mm") is not None and truth[t]["max_inplane_mm"] > 0:
            signed = (les["long_axis_mm"] - truth[t]["max_inplane_mm"]) / truth[t]["max_inplane_mm"]
            size_signed.append(signed)
            size_err.append(abs(signed))
            best = _inplane_at(run, t, les["best_frame"])
            if best:
                size_err_best.append(abs(les["long_axis_mm"] - best) / best)
    # why each eligible lesion was missed: never detected (the frame network), or detected on
    # some frames whose tracks were not reported (tracking / confirmation)
    det_frames = Counter(d["lesion_id"] for d in run.frame_dets)
    det_tracks: dict[int, set] = defaultdict(set)
    for d in run.frame_dets:
        if d["track_id"] is not None:
            det_tracks[d["lesion_id"]].add(d["track_id"])
    missed = [{"lesion_id": t, "class": truth[t]["class"],
               "max_inplane_mm": round(truth[t]["max_inplane_mm"], 1),
               "frames_in_view": truth[t]["frames"], "frames_good": truth[t]["frames_good"],
               "frames_detected": det_frames.get(t, 0),
               "tracks_matched": len(det_tracks.get(t, ())),
               "max_confidence": round(max((d["confidence"] for d in run.frame_dets
                                            if d["lesion_id"] == t), default=0.0), 3)}
              for t in sorted(eligible) if t not in per_truth]
    false_detail = [{"lesion_id": lid, "class": reported[lid]["class"],
                     "malignancy": reported[lid]["malignancy"],
                     "n_frames": reported[lid].get("n_frames"),
                     "long_axis_mm": reported[lid].get("long_axis_mm")}
                    for lid in false_lesions]
    in_view = [t for t in truth.values() if t["frames"] >= 1]
    cats = [t["lirads"] for t in in_view if t["lirads"]]
    truth_in_view = max(cats, default="US-1")
    return {
        "seed": run.seed, "eligible": len(eligible),
        "recalled": sum(1 for t in eligible if t in per_truth),
        "eligible_good": len(eligible_good),
        "recalled_good": sum(1 for t in eligible_good if t in per_truth),
        "eligible_cut": len(eligible_cut),
        "recalled_cut": sum(1 for t in eligible_cut if t in per_truth),
        "false_lesions": len(false_lesions), "false_lesion_detail": false_detail,
        "false_mimics": len(false_mimics),
        "recalled_as_mimic_only": sum(1 for t in eligible if t in per_truth
                                      and all(lid in mimic_ids for lid in per_truth[t])),
        "missed": missed,
        "fragments": [len(per_truth[t]) for t in eligible if t in per_truth],
        "type_hits": type_hits, "type_pairs_true_reported": type_pairs, "size_rel_err": size_err,
        "size_signed_rel_err": size_signed, "size_rel_err_bestframe": size_err_best,
        "malignancy_pairs": mal_pairs,
        "lirads": case["lirads"]["category"], "lirads_truth_case": run.truth["lirads_category"],
        "lirads_truth_in_view": truth_in_view,
        "steatosis": (case["steatosis"] or {}).get("grade"),
        "fibrosis": (case["fibrosis"] or {}).get("stage"),
        "steatosis_truth": f"S{run.truth['steatosis_grade']}",
        "fibrosis_truth": f"F{run.truth['fibrosis_stage']}",
        "frames": case["frames"],
    }


def _inplane_at(run: ClipRun, lesion_id: int, frame_index: int) -> float | None:
    for ft in run.frame_truth:
        if ft.get("frame_index") == frame_index:
            for les in ft.get("lesions", []):
                if int(les["lesion_id"]) == lesion_id:
                    return float(les.get("diameter_mm", 0.0)) or None
    return None


def _auc(pairs: list[tuple[float | None, bool]]) -> float | None:
    pos = [p for p, y in pairs if y and p is not None]
    neg = [p for p, y in pairs if not y and p is not None]
    if not pos or not neg:
        return None
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def summarise(runs: list[ClipRun]) -> dict[str, Any]:
    """All figures, frame vs lesion vs case level, for both pooling methods."""
    out: dict[str, Any] = {"clips": len(runs), "methods": {}}
    # frame level (independent of the pooling method)
    fd = [d for r in runs for d in r.frame_dets]
    truth_tables = {r.seed: truth_lesion_table(r) for r in runs}
    frame_size = [abs(d["long_axis_mm"] - truth_tables[r.seed][d["lesion_id"]]["max_inplane_mm"])
                  / truth_tables[r.seed][d["lesion_id"]]["max_inplane_mm"]
                  for r in runs for d in r.frame_dets
                  if truth_tables[r.seed][d["lesion_id"]]["max_inplane_mm"] > 0]
    frame_cat = [(c, r.truth["lirads_category"]) for r in runs for c in r.frame_categories]
    frame_cat_view = []
    for r in runs:
        cats = [t["lirads"] for t in truth_tables[r.seed].values() if t["frames"] >= 1
                and t["lirads"]]
        tv = max(cats, default="US-1")
        frame_cat_view += [(c, tv) for c in r.frame_categories]
    fdiff = [(s == f"S{r.truth['steatosis_grade']}", fb == f"F{r.truth['fibrosis_stage']}")
             for r in runs for s, fb in r.frame_diffuse]
    hits = [h for r in runs for h in r.frame_hits]
    out["frame_level"] = {
        "detection_recall_ge10mm": _mean([d for mm, d in hits if mm >= ELIGIBLE_MM]),
        "detection_recall_5to10mm": _mean([d for mm, d in hits if 5.0 <= mm < ELIGIBLE_MM]),
        "false_detections_per_frame": _mean([n for r in runs for n in r.frame_fp]),
        "matched_detections": len(fd),
        "type_accuracy": _mean([d["class"] == d["true_class"] for d in fd]),
        # the same, averaged per true lesion first (long-visible lesions do not dominate),
        # over every true lesion with at least one matched detection
        "type_accuracy_per_lesion_mean": _per_lesion_frame_accuracy(runs),
        "malignancy_auc": _auc([(d["malignancy"], d["true_class"] in MALIGNANT) for d in fd]),
        "long_axis_within_15pct": _mean([e <= 0.15 for e in frame_size]),
        "long_axis_median_rel_err": _median(frame_size),
        "lirads_agreement_case_truth": _mean([a == b for a, b in frame_cat]),
        "lirads_agreement_in_view_truth": _mean([a == b for a, b in frame_cat_view]),
        "steatosis_accuracy": _mean([a for a, _ in fdiff]),
        "fibrosis_accuracy": _mean([b for _, b in fdiff]),
    }
    stage_ms: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        for k, v in r.stage_ms.items():
            stage_ms[k] += v
    out["stage_ms_per_frame"] = {k: {"p50": float(np.percentile(v, 50)),
                                     "p99": float(np.percentile(v, 99)),
                                     "max": float(np.max(v)), "frames": len(v)}
                                 for k, v in sorted(stage_ms.items()) if v}
    for method in ("log_odds", "attention"):
        scores = [score_clip(r, method) for r in runs]
        eligible = sum(s["eligible"] for s in scores)
        frags = [x for s in scores for x in s["fragments"]]
        size = [x for s in scores for x in s["size_rel_err"]]
        size_best = [x for s in scores for x in s["size_rel_err_bestframe"]]
        out["methods"][method] = {
            "lesion_level": {
                "eligible_lesions": eligible,
                "recall": (sum(s["recalled"] for s in scores) / eligible) if eligible else None,
                "eligible_lesions_good": sum(s["eligible_good"] for s in scores),
                "recall_good": (sum(s["recalled_good"] for s in scores)
                                / max(sum(s["eligible_good"] for s in scores), 1)),
                "eligible_lesions_cut": sum(s["eligible_cut"] for s in scores),
                "recall_cut": (sum(s["recalled_cut"] for s in scores)
                               / max(sum(s["eligible_cut"] for s in scores), 1)),
                "false_lesions_per_clip": _mean([s["false_lesions"] for s in scores]),
                "false_mimics_per_clip": _mean([s["false_mimics"] for s in scores]),
                "recalled_as_mimic_only": sum(s["recalled_as_mimic_only"] for s in scores),
                "fragmentation": _mean(frags),
                "type_accuracy": _mean([x for s in scores for x in s["type_hits"]]),
                "type_confusions_true_reported": dict(Counter(
                    f"{a}->{b}" for s in scores for a, b in s["type_pairs_true_reported"]
                    if a != b)),
                "malignancy_auc": _auc([p for s in scores for p in s["malignancy_pairs"]]),
                "long_axis_within_15pct": _mean([e <= 0.15 for e in size]),
                "long_axis_median_rel_err": _median(size),
                "long_axis_median_signed_rel_err": _median(
                    [x for s in scores for x in s["size_signed_rel_err"]]),
                "long_axis_within_15pct_vs_bestframe_truth": _mean([e <= 0.15 for e in size_best]),
                "missed_by_cause": dict(Counter(miss_cause(m) for s in scores
                                                for m in s["missed"])),
                "false_lesions_by_type": dict(Counter(f["class"] for s in scores
                                                      for f in s["false_lesion_detail"])),
            },
            "case_level": {
                "lirads_agreement_case_truth": _mean([s["lirads"] == s["lirads_truth_case"]
                                                      for s in scores]),
                "lirads_agreement_in_view_truth": _mean([s["lirads"] == s["lirads_truth_in_view"]
                                                         for s in scores]),
                "lirads_agreement_in_view_truth_when_not_abstaining": _mean(
                    [s["lirads"] == s["lirads_truth_in_view"] for s in scores
                     if s["lirads"] is not None]),
                "lirads_abstained": sum(s["lirads"] is None for s in scores),
                "steatosis_accuracy": _mean([s["steatosis"] == s["steatosis_truth"]
                                             for s in scores]),
                "fibrosis_accuracy": _mean([s["fibrosis"] == s["fibrosis_truth"]
                                            for s in scores]),
            },
            "per_clip": scores,
        }
    return out


def miss_cause(m: dict[str, Any]) -> str:
    """Why an eligible lesion was not reported, from :func:`score_clip`'s ``missed`` entry."""
    if m["frames_good"] == 0:
        return "no good-quality frame in view (quality gate)"
    if m["frames_detected"] == 0:
        return "never detected (frame network)"
    return "detected on some frames, no track reported (tracking / aggregation)"


def _per_lesion_frame_accuracy(runs: list[ClipRun]) -> float | None:
    accs = []
    for r in runs:
        per: dict[int, list[bool]] = defaultdict(list)
        for d in r.frame_dets:
            per[d["lesion_id"]].append(d["class"] == d["true_class"])
        accs += [float(np.mean(v)) for v in per.values() if v]
    return _mean(accs)


def _mean(xs) -> float | None:
    xs = list(xs)
    return float(np.mean(xs)) if xs else None


def _median(xs) -> float | None:
    xs = list(xs)
    return float(np.median(xs)) if xs else None


def _f(x, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.1f} %" if pct else f"{x:.3f}"


def markdown(summary: dict[str, Any], detector: str, command: str, n_frames: int,
             seconds: float, first_seed: int = FIRST_SEED) -> str:
    fl = summary["frame_level"]
    lab = ("**detections derived from the simulator's ground truth with noise (NOT the "
           "models)**" if detector == "gt-noise" else
           "**noisy ground-truth boxes (NOT the frame network) classified by the shipped "
           "lesion classifier lesion-cls-v1 fp32**" if detector == "gt-boxes-classifier" else
           f"the models through the infer stage, config {summary.get('infer_config') or 'default'}")
    lines = [f"### Findings on {summary['clips']} held-out simulator clips ({lab})", "",
             f"Command: `{command}`  ", f"Clips: seeds {first_seed}..{first_seed + summary['clips'] - 1},"
             f" {n_frames} frames each, 480x640; run time {seconds:.0f} s.  ",
             f"Machine: {summary.get('machine', 'not recorded')}; {summary.get('date', '')}.", "",
             "| metric | target | frame level | lesion/case (log-odds) | lesion/case (attention) |",
             "|---|---|---|---|---|"]
    lo, at = summary["methods"]["log_odds"], summary["methods"]["attention"]

    def row(name, target, frame, key, level, pct=True):
        lines.append(f"| {name} | {target} | {frame} | {_f(lo[level][key], pct)} | "
                     f"{_f(at[level][key], pct)} |")

    row("lesion recall (>= 10 mm, >= 10 frames in view)", ">= 90 %",
        _f(fl.get("detection_recall_ge10mm"), True), "recall", "lesion_level")
    row("lesion recall, >= 10 in-view frames of good quality (simulator label)", "-", "-",
        "recall_good", "lesion_level")
    row("lesion recall, visibility ignored (>= 10 frames cut by the plane)", "-", "-",
        "recall_cut", "lesion_level")
    row("false lesions per clip", "<= 0.3",
        f"{_f(fl.get('false_detections_per_frame'))} per analysed frame",
        "false_lesions_per_clip", "lesion_level", pct=False)
    row("possible mimics that are not lesions, per clip (listed apart)", "-", "-",
        "false_mimics_per_clip", "lesion_level", pct=False)
    row("track fragmentation (tracks per true lesion)", "<= 1.2", "-", "fragmentation",
        "lesion_level", pct=False)
    row("lesion-type accuracy", ">= 90 %", _f(fl["type_accuracy"], True), "type_accuracy",
        "lesion_level")
    lines.append(f"| lesion-type accuracy, frame level averaged per true lesion | - | "
                 f"{_f(fl['type_accuracy_per_lesion_mean'], True)} | | |")
    row("malignancy AUC", "-", _f(fl["malignancy_auc"]), "malignancy_auc", "lesion_level",
        pct=False)
    row("long axis within 15 % of true max in-plane diameter", "all",
        _f(fl["long_axis_within_15pct"], True), "long_axis_within_15pct", "lesion_level")
    row("long axis median relative error", "-", _f(fl["long_axis_median_rel_err"], True),
        "long_axis_median_rel_err", "lesion_level")
    row("US LI-RADS agreement (simulator case truth, all lesions)", ">= 90 %",
        _f(fl["lirads_agreement_case_truth"], True), "lirads_agreement_case_truth", "case_level")
    row("US LI-RADS agreement (truth over lesions in view)", "-",
        _f(fl["lirads_agreement_in_view_truth"], True), "lirads_agreement_in_view_truth",
        "case_level")
    row("US LI-RADS agreement (in view), abstentions excluded", "-", "-",
        "lirads_agreement_in_view_truth_when_not_abstaining", "case_level")
    row("steatosis grade accuracy", "-", _f(fl["steatosis_accuracy"], True),
        "steatosis_accuracy", "case_level")
    row("fibrosis stage accuracy", "-", _f(fl["fibrosis_accuracy"], True), "fibrosis_accuracy",
        "case_level")
    cost = "; ".join(f"{k} p50 {v['p50']:.2f} ms, p99 {v['p99']:.2f} ms"
                     for k, v in summary.get("stage_ms_per_frame", {}).items())
    lines += ["", f"Per-frame cost, in process: {cost}.  "]
    lines += [f"Eligible lesions: {lo['lesion_level']['eligible_lesions']} "
              f"({lo['lesion_level']['eligible_lesions_good']} with >= {ELIGIBLE_FRAMES} "
              f"good-quality frames in view); LI-RADS "
              f"abstentions: {lo['case_level']['lirads_abstained']} (log-odds), "
              f"{at['case_level']['lirads_abstained']} (attention); matched frame detections: "
              f"{fl['matched_detections']}.", ""]
    lines += [f"Frame-level recall and false detections count analysed frames only: each "
              f"visible true lesion on such a frame is found when a detection matches it at IoU "
              f">= {MATCH_IOU}; unmatched detections are false.", ""]
    miss = lo["lesion_level"].get("missed_by_cause") or {}
    if miss:
        lines += ["Missed eligible lesions by cause (log-odds): "
                  + "; ".join(f"{k}: {v}" for k, v in sorted(miss.items())) + ".  "]
    fl_types = lo["lesion_level"].get("false_lesions_by_type") or {}
    if fl_types:
        lines += ["False lesions by reported type (log-odds): "
                  + ", ".join(f"{k} {v}" for k, v in sorted(fl_types.items())) + ".", ""]
    return "\n".join(lines)


def _machine_text(note: str) -> str:
    """The CPU, core count and load average as measured now, plus the user's note."""
    from sonoflow.stream.bench.machine import machine

    m = machine(note)
    text = f"{m['cpu']}, {m['cores']} cores, load average {m.get('load_avg')} at the end"
    return f"{text}; {note}" if note else text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", choices=["gt-noise", "gt-boxes-classifier", "models"],
                    default="gt-noise")
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--first-seed", type=int, default=FIRST_SEED)
    ap.add_argument("--no-prep", action="store_true",
                    help="skip preprocess/quality (frames are then all 'good')")
    ap.add_argument("--infer-config", type=json.loads, default=None,
                    help='JSON config of the infer stage, e.g. \'{"precision": "int8"}\'')
    ap.add_argument("--aggregate-config", type=json.loads, default=None,
                    help='JSON config of both aggregate stages (the method is set apart), e.g. '
                         '\'{"min_track_frames": 8}\'')
    ap.add_argument("--quality-config", type=json.loads, default=None,
                    help='JSON config of the quality stage, e.g. \'{"threshold": 0.3}\'')
    ap.add_argument("--track-config", type=json.loads, default=None,
                    help='JSON config of the track stage, e.g. \'{"min_hits": 2}\'')
    ap.add_argument("--machine-note", default="",
                    help="free text stored with the machine, e.g. 'shared with other work'")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--cache", type=Path, default=None,
                    help="keep what the detector produced per clip here (pickles, keyed on seed, "
                         "frames, detector, infer config and weights): later runs with other "
                         "--track-config / --aggregate-config skip simulation and models")
    args = ap.parse_args(argv)
    import cv2
    from tqdm import tqdm

    cv2.setNumThreads(1)
    stage_keys = [] if args.no_prep else ["preprocess", "quality"]
    t0 = time.perf_counter()
    runs = [run_clip(args.first_seed + k, args.frames, args.detector, stage_keys,
                     args.infer_config, args.aggregate_config, args.track_config, args.cache,
                     {"quality": args.quality_config} if args.quality_config else None)
            for k in tqdm(range(args.clips), desc="clips", unit="clip")]
    seconds = time.perf_counter() - t0
    summary = summarise(runs)
    summary.update({"detector": args.detector, "frames_per_clip": args.frames,
                    "first_seed": args.first_seed, "stages": stage_keys,
                    "infer_config": args.infer_config,
                    "aggregate_config": args.aggregate_config,
                    "track_config": args.track_config,
                    "quality_config": args.quality_config,
                    "machine": _machine_text(args.machine_note),
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "seconds": round(seconds, 1)})
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"findings_{args.detector}"
    base.with_suffix(".json").write_text(json.dumps(summary, indent=1, default=str))
    cmd = (f".venv/bin/python benchmarks/eval_findings.py --detector {args.detector} "
           f"--clips {args.clips} --frames {args.frames}"
           + (f" --first-seed {args.first_seed}" if args.first_seed != FIRST_SEED else "")
           + (" --no-prep" if args.no_prep else "")
           + (f" --infer-config '{json.dumps(args.infer_config)}'" if args.infer_config else "")
           + (f" --aggregate-config '{json.dumps(args.aggregate_config)}'"
              if args.aggregate_config else "")
           + (f" --track-config '{json.dumps(args.track_config)}'" if args.track_config else "")
           + (f" --quality-config '{json.dumps(args.quality_config)}'"
              if args.quality_config else "")
           + (f" --cache {args.cache}" if args.cache else "")
           + (f" --out {args.out}" if args.out != Path("benchmarks/results") else ""))
    md = markdown(summary, args.detector, cmd, args.frames, seconds, args.first_seed)
    base.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
