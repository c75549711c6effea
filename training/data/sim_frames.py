"""Frame-network training data from the simulator, cached to disk.

Each case is drawn with heavy randomisation of what the scanner and the patient can change
(probe frequency, depth, gain, persistence, TGC, noise, clutter, UI, view, steatosis grade,
fibrosis stage, lesion count and classes) and a few frames of its clip are kept. Every kept
frame is letterboxed from the true sector's box into the network input and blanked outside the
sector exactly as :func:`sonoflow.models.preprocess.letterbox` does in the pipeline.

A cache shard (``.npz``) holds, for N frames:

* ``image`` (N, S, S) uint8: the letterboxed input;
* ``lesion`` (N, S/2, S/2) uint8: lesion instance ids on the mask grid (0 = background);
* ``liver`` (N, S/2, S/2) uint8: liver mask (parenchyma incl. lesions, nodules, vessels);
* ``boxes`` (M, 6) float32: ``frame, x0, y0, x1, y1, diameter_mm`` in input pixels;
* ``box_class`` (M,) int8: index into the simulator's lesion classes;
* ``steatosis`` (N,) int8, ``fibrosis`` (N,) int8, ``seed`` (N,) int32, ``frame_index``
  (N,) int16, ``quality`` (N,) int8 (index into ``QUALITY_LABELS``), ``mm_per_px`` (N, 2).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from sonoflow.models.preprocess import letterbox
from sonoflow.stream.sim import sample_case, simulate_clip
from sonoflow.stream.sim.config import LESION_CLASSES, TISSUE_CODES

log = logging.getLogger(__name__)

CACHE_FORMAT = "sonoflow.simframes/1"
QUALITY_LABELS = ("good", "frozen", "black", "no_contact", "partial_contact", "too_bright",
                  "too_dark", "motion_blur")
LIVER_CODES = tuple(TISSUE_CODES[k] for k in ("liver", "portal_vein", "hepatic_vein",
                                                "regenerative_nodule", "lesion"))


@dataclass(frozen=True)
class SimFrameSpec:
    """How frames are drawn from the simulator.

    Attributes:
        render_hw: simulator render size (H, W) in pixels.
        input_size: network input side (the letterbox target).
        clip_frames: frames simulated per case.
        keep_every: keep every k-th frame of the clip (decorrelates kept frames).
        events_fraction: fraction of cases with quality events (non-"good" frames are kept
            and labelled; training skips them, evaluation reports them separately).
        ui_fraction: fraction of cases with burned-in UI.
        depth_mm: (lo, hi) imaging depth range.
        freq_mhz: (lo, hi) centre frequency range.
        gain_db: (lo, hi) overall gain offset.
        lesion_boost: probability that a case is forced to have 1..4 lesions (the
            simulator's own prior leaves many cases lesion-free).
        small_lesion_fraction: of those, the fraction whose lesions are drawn 4-14 mm.
        hard_class_fraction: of those, the fraction whose lesions all get a class from
            ``hard_classes`` (over-samples the classes the detector misses; 0 = the
            simulator's class prior).
        hard_classes: the classes ``hard_class_fraction`` draws from, in turn.
    """

    render_hw: tuple[int, int] = (336, 448)
    input_size: int = 256
    clip_frames: int = 12
    keep_every: int = 4
    events_fraction: float = 0.15
    ui_fraction: float = 0.5
    depth_mm: tuple[float, float] = (120.0, 200.0)
    freq_mhz: tuple[float, float] = (2.5, 5.0)
    gain_db: tuple[float, float] = (-6.0, 6.0)
    lesion_boost: float = 0.7
    small_lesion_fraction: float = 0.4
    hard_class_fraction: float = 0.0
    hard_classes: tuple[str, ...] = ("hcc",)


def _cache_spec(spec: SimFrameSpec) -> dict:
    """The spec as the cache's meta records it. With ``hard_class_fraction`` 0 the hard-class
    fields change no data, so they are left out: a cache made before they existed stays valid."""
    d = asdict(spec)
    if d["hard_class_fraction"] == 0.0:
        del d["hard_class_fraction"], d["hard_classes"]
    return d


def case_overrides(seed: int, spec: SimFrameSpec) -> dict:
    """The randomised scanner/patient settings for one case (deterministic in ``seed``)."""
    rng = np.random.default_rng([seed, 7919])
    ov: dict = {
        "ui": bool(rng.random() < spec.ui_fraction),
        "events": bool(rng.random() < spec.events_fraction),
        "depth_mm": float(rng.uniform(*spec.depth_mm)),
        "freq_mhz": float(rng.uniform(*spec.freq_mhz)),
        "gain_db": float(rng.uniform(*spec.gain_db)),
        "persistence": float(rng.uniform(0.0, 0.6)),
        "tgc": bool(rng.random() < 0.85),
        "sweep": True,
    }
    if rng.random() < spec.lesion_boost:
        n = int(rng.integers(1, 5))
        ov["n_lesions"] = n
        if rng.random() < spec.small_lesion_fraction:
            # the simulator's size prior (median 20 mm) has few sub-centimetre nodules, which
            # issue 5 asks to find: over-sample them
            ov["lesion_diameters_mm"] = [float(d) for d in rng.uniform(4.0, 14.0, n)]
        # drawn last and only when on, so every other setting of every seed is unchanged
        if spec.hard_class_fraction and rng.random() < spec.hard_class_fraction:
            ov["lesion_classes"] = [spec.hard_classes[i % len(spec.hard_classes)]
                                    for i in range(n)]
    return ov


def frames_of_case(seed: int, spec: SimFrameSpec) -> dict[str, np.ndarray]:
    """Simulate one case and return its kept frames as cache arrays (see module docstring)."""
    case = sample_case(seed, **case_overrides(seed, spec))
    truth = case.truth()
    S, M = spec.input_size, spec.input_size // 2
    out: dict[str, list] = {k: [] for k in ("image", "lesion", "liver", "boxes", "box_class",
                                            "steatosis", "fibrosis", "seed", "frame_index",
                                            "quality", "mm_per_px")}
    H, W = spec.render_hw
    n_kept = 0
    # The pipeline's sector box comes from preprocess's fan detection, a few pixels off the
    # truth: jitter each side of the true box (per case) so the model does not rely on it.
    jitter = np.random.default_rng([seed, 104729]).uniform(-0.02, 0.03, 4)
    for f in simulate_clip(case, n_frames=spec.clip_frames, height=H, width=W, fps=30.0):
        if f.frame_index % spec.keep_every != spec.keep_every - 1:
            continue
        ys, xs = np.nonzero(f.sector_mask)
        bw, bh = xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()
        box = (int(max(0, xs.min() - jitter[0] * bw)), int(max(0, ys.min() - jitter[1] * bh)),
               int(min(W, xs.max() + 1 + jitter[2] * bw)), int(min(H, ys.max() + 1 + jitter[3] * bh)))
        img, lb = letterbox(f.image, box, (S, S), valid_mask=f.sector_mask)
        # labels: nearest-neighbour onto the mask grid, with the same letterbox
        lesion = _label_letterbox(f.lesion_ids, box, lb, M)
        liver = _label_letterbox(np.isin(f.tissue, LIVER_CODES).astype(np.uint8), box, lb, M)
        out["image"].append(img)
        out["lesion"].append(lesion)
        out["liver"].append(liver)
        for les in f.truth.get("lesions", []):
            b = lb.to_input_xyxy(np.asarray(les["xyxy_px"], np.float32))[0]
            out["boxes"].append([n_kept, *b, float(les.get("diameter_mm", 0.0))])
            out["box_class"].append(LESION_CLASSES.index(les["class"]))
        out["steatosis"].append(int(truth["steatosis_grade"]))
        out["fibrosis"].append(int(truth["fibrosis_stage"]))
        out["seed"].append(seed)
        out["frame_index"].append(f.frame_index)
        q = f.truth.get("quality_label", "good")
        out["quality"].append(QUALITY_LABELS.index(q) if q in QUALITY_LABELS else 0)
        out["mm_per_px"].append(truth.get("mm_per_px", [0.0, 0.0]) if "mm_per_px" in truth
                                else case.mm_per_px(H, W))
        n_kept += 1
    return _stack(out, S, M)


def _label_letterbox(labels: np.ndarray, box, lb, grid: int) -> np.ndarray:
    """Letterbox a label map onto the (grid, grid) mask grid with nearest-neighbour sampling."""
    f = grid / lb.width
    s = lb.scale * f
    m = np.array([[s, 0.0, (lb.pad_x - lb.x0 * lb.scale) * f + 0.5 * s - 0.5],
                  [0.0, s, (lb.pad_y - lb.y0 * lb.scale) * f + 0.5 * s - 0.5]], np.float64)
    return cv2.warpAffine(labels.astype(np.uint8), m, (grid, grid), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _stack(out: dict[str, list], S: int, M: int) -> dict[str, np.ndarray]:
    n = len(out["image"])
    return {
        "image": np.asarray(out["image"], np.uint8).reshape(n, S, S),
        "lesion": np.asarray(out["lesion"], np.uint8).reshape(n, M, M),
        "liver": np.asarray(out["liver"], np.uint8).reshape(n, M, M),
        "boxes": np.asarray(out["boxes"], np.float32).reshape(-1, 6),
        "box_class": np.asarray(out["box_class"], np.int8),
        "steatosis": np.asarray(out["steatosis"], np.int8),
        "fibrosis": np.asarray(out["fibrosis"], np.int8),
        "seed": np.asarray(out["seed"], np.int32),
        "frame_index": np.asarray(out["frame_index"], np.int16),
        "quality": np.asarray(out["quality"], np.int8),
        "mm_per_px": np.asarray(out["mm_per_px"], np.float32).reshape(n, 2),
    }


def concat(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate shards, renumbering the frame column of ``boxes``."""
    parts = [p for p in parts if len(p["image"])]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    offset, boxes = 0, []
    for p in parts:
        b = p["boxes"].copy()
        b[:, 0] += offset
        boxes.append(b)
        offset += len(p["image"])
    out["boxes"] = np.concatenate(boxes) if boxes else np.zeros((0, 6), np.float32)
    return out


def build_cache(path: str | Path, seeds: Sequence[int], spec: SimFrameSpec,
                workers: int = 2, shard_cases: int = 25) -> dict[str, np.ndarray]:
    """Simulate ``seeds`` (one case each) into shards under ``path`` (a folder) and return
    all of them concatenated.

    Shards (``part-<first>-<last>.npz``, ``shard_cases`` cases each) are written as they
    complete, so an interrupted run resumes where it stopped; the folder's ``meta.json``
    (format, spec) must match or the folder is rebuilt.

    Returns:
        The arrays (see the module docstring).
    """
    path = Path(path)
    meta = json.loads(json.dumps({"format": CACHE_FORMAT, "spec": _cache_spec(spec)}))
    meta_path = path / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()) != meta:
        log.warning("%s: cache spec changed; rebuilding", path)
        for old in path.glob("part-*.npz"):
            old.unlink()
    path.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps(meta))
    seeds = [int(s) for s in seeds]
    chunks = [seeds[i:i + shard_cases] for i in range(0, len(seeds), shard_cases)]
    todo = [c for c in chunks if not (path / f"part-{c[0]}-{c[-1]}.npz").exists()]
    if todo:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            bar = tqdm(total=sum(len(c) for c in todo), desc=f"simulate {path.name}",
                       unit="case")
            for chunk in todo:
                parts = []
                for part in pool.map(frames_of_case, chunk, [spec] * len(chunk)):
                    parts.append(part)
                    bar.update(1)
                # write then rename: a run killed mid-write leaves no truncated shard behind
                final = path / f"part-{chunk[0]}-{chunk[-1]}.npz"
                tmp = final.with_suffix(".npz.tmp")
                with open(tmp, "wb") as fh:
                    np.savez_compressed(fh, **concat(parts))
                tmp.replace(final)
            bar.close()
    shards = []
    for c in chunks:
        with np.load(path / f"part-{c[0]}-{c[-1]}.npz") as z:
            shards.append({k: z[k] for k in z.files})
    return concat(shards)
