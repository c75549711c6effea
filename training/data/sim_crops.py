"""Classifier crops from simulator frames: lesions at jittered ground-truth boxes plus hard
negatives, with type, malignancy and B-mode feature labels derived from the simulator's truth.

The crop contract (also written into the classifier's model card, ``extra.crop``) is
implemented by :func:`crop_box`: a **square** window centred on the box centre, side =
``crop_margin`` x the box's longer side (at least ``min_side_px``), pixels outside the image
filled with ``pad_value``, resized to ``size_px`` x ``size_px`` with ``cv2.INTER_AREA`` when
shrinking and ``cv2.INTER_LINEAR`` when enlarging. A square window keeps the lesion's aspect
ratio; the margin keeps the context the features need (a halo at the rim, posterior
enhancement below).

Labels (see ``docs/evaluation.md``, "Classifier labels"):

* type: the simulator's lesion class; ``fat_sparing`` (the mimic) and every hard negative
  (portal/hepatic vessel, gallbladder, regenerative nodule, plain liver) are ``"other"``.
* malignancy: the simulator's ``malignant`` flag; 0 for every negative.
* features: :func:`lesion_features` maps the simulator's per-lesion rendering parameters
  (class, subtype, appearance levels) to the seven B-mode feature labels; negatives get the features their tissue shows (vessels and the
  gallbladder are anechoic, the gallbladder also has posterior enhancement).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sonoflow.stream.errors import ConfigError, SourceError

LESION_TYPES = ("cyst", "hemangioma", "metastasis", "hcc", "other")
LESION_FEATURES = ("anechoic", "hyperechoic", "hypoechoic", "halo_target",
                   "posterior_enhancement", "mosaic", "well_defined")
MALIGNANT_TYPES = ("metastasis", "hcc")
SIM_CLASS_TO_TYPE = {"cyst": "cyst", "hemangioma": "hemangioma", "metastasis": "metastasis",
                     "hcc": "hcc", "fat_sparing": "other"}
# Negative crop kinds -> the features their anatomy shows (SIMULATOR.md 4.3).
NEGATIVE_FEATURES = {
    "vessel": ("anechoic", "well_defined"),
    "gallbladder": ("anechoic", "posterior_enhancement", "well_defined"),
    "regenerative_nodule": (),
    "liver": (),
}
CROPSET_FORMAT = "sonoflow.cropset/1"


@dataclass(frozen=True)
class CropSpec:
    """The crop contract.

    Attributes:
        margin: square side = margin x the box's longer side.
        size_px: output side in pixels.
        min_side_px: smallest window side in source pixels (tiny boxes still get context).
        pad_value: grey level for pixels outside the image.
    """

    margin: float = 1.5
    size_px: int = 64
    min_side_px: int = 12
    pad_value: int = 0

    def to_card(self) -> dict[str, Any]:
        """The contract as written into the model card's ``extra.crop``."""
        return {"shape": "square, centred on the box centre",
                "side_px": f"max({self.min_side_px}, crop_margin * max(x1 - x0, y1 - y0))",
                "crop_margin": self.margin, "size_px": self.size_px,
                "min_side_px": self.min_side_px, "outside": f"pad_value {self.pad_value}",
                "resize": "cv2.INTER_AREA when shrinking, cv2.INTER_LINEAR when enlarging",
                "window": "x0 = round(cx - side/2), x1 = x0 + round(side) (same for y)",
                "implementation": "sonoflow.models.preprocess.crop_square"}


def crop_box(image: np.ndarray, xyxy_px: Sequence[float], spec: CropSpec = CropSpec()) -> np.ndarray:
    """Cut the classifier's input window for one box (the contract of :class:`CropSpec`).

    Delegates to :func:`sonoflow.models.preprocess.crop_square`, the function the ``infer``
    stage uses, so training crops and pipeline crops are cut by the same code.

    Args:
        image: (H, W) uint8 grey frame.
        xyxy_px: (x0, y0, x1, y1) box in ``image`` pixels (exclusive corner).
        spec: the crop contract.

    Returns:
        (size_px, size_px) uint8 crop.

    Raises:
        InputContractError: ``image`` is not 2-D or the box is not finite.
    """
    from sonoflow.models.preprocess import crop_square

    return crop_square(image, xyxy_px, spec.margin, spec.size_px, spec.min_side_px,
                       spec.pad_value)


def lesion_features(cls: str, subtype: str, levels: dict[str, float] | None = None
                    ) -> dict[str, bool]:
    """The seven B-mode feature labels of one simulated lesion, from how it is rendered.

    Read from the simulator's truth: the lesion's ``class`` and ``subtype`` (in the case truth)
    and its appearance ``levels`` (``Case.lesions[i].levels``, dB relative to the liver). The
    derivation follows ``sonoflow.stream.sim.lesions`` (SIMULATOR.md section 2):

    * cyst ("simple"): anechoic (lumen -46 dB), posterior enhancement (attenuation 0.02),
      well-defined (coherent wall);
    * hemangioma: well-defined; "hyperechoic" subtype (+6..+12 dB) is hyperechoic; the "rim"
      subtype (-3 dB centre inside an echogenic border) is neither hyper- nor hypoechoic
      overall, so only well-defined;
    * metastasis: "target" (echogenic centre, dark ring) and "hyperechoic" (bright with a dark
      rim) carry ``halo_target``; "hyperechoic" is also hyperechoic; "hypoechoic" (-12..-6 dB
      flat, no ring) is hypoechoic only;
    * HCC: posterior enhancement always (attenuation 0.8 x liver); ``halo_target`` when
      ``levels["halo"]`` (capsule at -14 dB); mosaic for the "mosaic" subtype; hypoechoic for
      a non-mosaic nodule whose level is below -3 dB (the < 30 mm ones, -9..-4 dB);
    * fat sparing ("geographic"): hypoechoic relative to the fatty liver, not well-defined.

    Args:
        cls: simulator class.
        subtype: the lesion's subtype.
        levels: its appearance levels (needed for HCC halo and level).

    Returns:
        ``{feature: bool}`` over :data:`LESION_FEATURES`.

    Raises:
        ConfigError: the class is unknown.
    """
    lv = levels or {}
    on: set[str] = set()
    if cls == "cyst":
        on |= {"anechoic", "posterior_enhancement", "well_defined"}
    elif cls == "hemangioma":
        on.add("well_defined")
        if subtype != "rim":
            on.add("hyperechoic")
    elif cls == "metastasis":
        if subtype in ("target", "hyperechoic"):
            on.add("halo_target")
        on.add({"hyperechoic": "hyperechoic", "hypoechoic": "hypoechoic"}.get(subtype,
                                                                             "halo_target"))
    elif cls == "hcc":
        on.add("posterior_enhancement")
        if float(lv.get("halo", 0.0)) > 0:
            on.add("halo_target")
        if subtype == "mosaic":
            on.add("mosaic")
        elif float(lv.get("level_db", 0.0)) < -3.0:
            on.add("hypoechoic")
    elif cls == "fat_sparing":
        on.add("hypoechoic")
    else:
        raise ConfigError(f"lesion_features: unknown simulator lesion class {cls!r}; expected "
                          f"one of {sorted(SIM_CLASS_TO_TYPE)}")
    return {f: f in on for f in LESION_FEATURES}


@dataclass
class CropSet:
    """A cached set of labelled crops (arrays share the first dimension N).

    Attributes:
        crops: (N, S, S) uint8.
        type_idx: (N,) int64 index into :data:`LESION_TYPES`.
        malignant: (N,) float32 0/1.
        features: (N, 7) float32 0/1 in :data:`LESION_FEATURES` order.
        seed: (N,) int64 simulator seed of the clip.
        frame_index: (N,) int64.
        kind: (N,) str: the simulator class ("cyst", ..., "fat_sparing") or negative kind.
        size_mm: (N,) float32 in-plane lesion diameter (nan for negatives).
        meta: free-form (the spec, the generation config).
    """

    crops: np.ndarray
    type_idx: np.ndarray
    malignant: np.ndarray
    features: np.ndarray
    seed: np.ndarray
    frame_index: np.ndarray
    kind: np.ndarray
    size_mm: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.crops))

    def subset(self, index: np.ndarray) -> CropSet:
        """Rows ``index`` (bool mask or integer indices) as a new set."""
        return CropSet(self.crops[index], self.type_idx[index], self.malignant[index],
                       self.features[index], self.seed[index], self.frame_index[index],
                       self.kind[index], self.size_mm[index], dict(self.meta))

    def save(self, path: str | Path) -> Path:
        """Write to a compressed ``.npz`` (no pickle: ``kind`` is stored as fixed-width str)."""
        import json

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, format=np.array(CROPSET_FORMAT), crops=self.crops,
                            type_idx=self.type_idx, malignant=self.malignant,
                            features=self.features, seed=self.seed, frame_index=self.frame_index,
                            kind=self.kind.astype("U24"), size_mm=self.size_mm,
                            meta=np.array(json.dumps(self.meta)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> CropSet:
        """Read a set written by :meth:`save`.

        Raises:
            SourceError: missing file or a different format tag.
        """
        import json

        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                fmt = str(z["format"])
                if fmt != CROPSET_FORMAT:
                    raise SourceError(str(path), f"crop set format {fmt!r}, expected "
                                                 f"{CROPSET_FORMAT!r}; rebuild the cache")
                return cls(z["crops"], z["type_idx"], z["malignant"], z["features"], z["seed"],
                           z["frame_index"], z["kind"], z["size_mm"], json.loads(str(z["meta"])))
        except (OSError, KeyError, ValueError) as e:
            raise SourceError(str(path), f"cannot read crop set ({e})") from e

    @classmethod
    def concat(cls, sets: Iterable[CropSet]) -> CropSet:
        """Concatenate sets (meta of the first)."""
        sets = list(sets)
        if not sets:
            raise ValueError("CropSet.concat: nothing to concatenate")
        cat = np.concatenate
        return cls(cat([s.crops for s in sets]), cat([s.type_idx for s in sets]),
                   cat([s.malignant for s in sets]), cat([s.features for s in sets]),
                   cat([s.seed for s in sets]), cat([s.frame_index for s in sets]),
                   cat([s.kind for s in sets]), cat([s.size_mm for s in sets]), dict(sets[0].meta))


@dataclass(frozen=True)
class CropSampling:
    """How crops are drawn from frames.

    Attributes:
        jitter_centre: centre shift, standard deviation as a fraction of the box side.
        jitter_scale_ln: box scale jitter, standard deviation of ln(scale).
        jitters_per_lesion: crops per visible lesion per sampled frame.
        min_box_px: lesions whose box is smaller (either side) are skipped.
        min_visible_fraction: lesions cut near their pole (cross-section area below this
            fraction of the equatorial area) are skipped: the plane then shows mostly the
            rim, and the class's signs are not visible.
        negatives_per_frame: hard-negative crops per sampled frame.
        negative_side_mm: (lo, hi) side of plain-liver negative boxes in mm.
        skip_quality: frame quality labels whose frames are not used.
    """

    jitter_centre: float = 0.08
    jitter_scale_ln: float = 0.12
    jitters_per_lesion: int = 2
    min_box_px: int = 5
    min_visible_fraction: float = 0.15
    negatives_per_frame: int = 1
    negative_side_mm: tuple[float, float] = (5.0, 35.0)
    skip_quality: tuple[str, ...] = ("black", "no_contact")


def jitter_box(rng: np.random.Generator, box: Sequence[float], s: CropSampling) -> list[float]:
    """A detector-like perturbation of a box: centre shift and log-normal scale (pixels)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    side = max(w, h)
    cx = 0.5 * (x0 + x1) + rng.normal(0, s.jitter_centre) * side
    cy = 0.5 * (y0 + y1) + rng.normal(0, s.jitter_centre) * side
    k = math.exp(rng.normal(0, s.jitter_scale_ln))
    return [cx - k * w / 2, cy - k * h / 2, cx + k * w / 2, cy + k * h / 2]


def _negative_boxes(rng: np.random.Generator, tissue: np.ndarray, lesion_ids: np.ndarray,
                    tissue_codes: dict[str, int], mm_per_px: float, n: int,
                    s: CropSampling) -> list[tuple[str, list[float]]]:
    """Hard-negative boxes: vessel/gallbladder/nodule components, else plain liver windows."""
    out: list[tuple[str, list[float]]] = []
    groups = {"vessel": [tissue_codes["portal_vein"], tissue_codes["hepatic_vein"]],
              "gallbladder": [tissue_codes["gallbladder"]],
              "regenerative_nodule": [tissue_codes["regenerative_nodule"]]}
    candidates: list[tuple[str, tuple[int, int, int, int], np.ndarray]] = []
    for kind, codes in groups.items():
        m = np.isin(tissue, codes).astype(np.uint8)
        if not m.any():
            continue
        k, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        for c in range(1, k):
            x, y, w, h, area = (int(v) for v in stats[c])
            if area >= 30:
                candidates.append((kind, (x, y, w, h), labels == c))
    lo_px, hi_px = (v / mm_per_px for v in s.negative_side_mm)
    liver = (tissue == tissue_codes["liver"]) & (lesion_ids == 0)
    for _ in range(n):
        if candidates and rng.random() < 0.6:
            kind, (x, y, w, h), comp = candidates[int(rng.integers(len(candidates)))]
            if max(w, h) > hi_px:  # a long vessel: a window around one of its pixels
                ys, xs = np.nonzero(comp)
                j = int(rng.integers(len(xs)))
                side = rng.uniform(lo_px, hi_px)
                out.append((kind, [xs[j] - side / 2, ys[j] - side / 2,
                                   xs[j] + side / 2, ys[j] + side / 2]))
            else:
                out.append((kind, [x, y, x + w, y + h]))
            continue
        ys, xs = np.nonzero(liver)
        if len(xs) == 0:
            continue
        j = int(rng.integers(len(xs)))
        side = rng.uniform(lo_px, hi_px)
        box = [xs[j] - side / 2, ys[j] - side / 2, xs[j] + side / 2, ys[j] + side / 2]
        bx0, by0, bx1, by1 = (int(round(v)) for v in box)
        sub = lesion_ids[max(by0, 0):max(by1, 0), max(bx0, 0):max(bx1, 0)]
        if sub.size and (sub > 0).any():
            continue  # overlaps a lesion: not a clean negative
        out.append(("liver", box))
    return out


def crops_from_clip(seed: int, n_frames: int, frame_stride: int, spec: CropSpec,
                    sampling: CropSampling, height: int = 480, width: int = 640,
                    case_overrides: dict[str, Any] | None = None) -> dict[str, list]:
    """Simulate one clip and cut labelled crops from every ``frame_stride``-th frame.

    Args:
        seed: simulator seed (training and held-out seeds must never overlap).
        n_frames: frames to simulate.
        frame_stride: use frames 0, stride, 2*stride, ...
        spec: the crop contract.
        sampling: jitter and negative settings.
        height: frame height in pixels.
        width: frame width in pixels.
        case_overrides: passed to ``sample_case``.

    Returns:
        Column lists (``crops``, ``type_idx``, ``malignant``, ``features``, ``seed``,
        ``frame_index``, ``kind``, ``size_mm``) for :class:`CropSet`.
    """
    from sonoflow.stream.sim import sample_case, simulate_clip
    from sonoflow.stream.sim.config import TISSUE_CODES

    rng = np.random.default_rng([seed, 0x5EED])
    case = sample_case(seed, **(case_overrides or {}))
    case_truth = case.truth()
    by_id = {int(les["lesion_id"]): les for les in case_truth["lesions"]}
    levels = {int(les.lesion_id): dict(les.levels) for les in case.lesions}
    mm_per_px = float(case.mm_per_px(height, width)[0])
    cols: dict[str, list] = {k: [] for k in ("crops", "type_idx", "malignant", "features", "seed",
                                             "frame_index", "kind", "size_mm")}

    def add(crop, kind, type_name, malignant, feats, size_mm, frame_index):
        cols["crops"].append(crop)
        cols["type_idx"].append(LESION_TYPES.index(type_name))
        cols["malignant"].append(float(malignant))
        cols["features"].append([float(feats.get(f, False)) for f in LESION_FEATURES])
        cols["seed"].append(seed)
        cols["frame_index"].append(frame_index)
        cols["kind"].append(kind)
        cols["size_mm"].append(size_mm)

    for f in simulate_clip(case, n_frames=n_frames, height=height, width=width):
        if f.frame_index % frame_stride:
            continue
        truth = f.truth
        if truth.get("quality_label", "good") in sampling.skip_quality:
            continue
        for les in truth.get("lesions", []):
            x0, y0, x1, y1 = les["xyxy_px"]
            if min(x1 - x0, y1 - y0) < sampling.min_box_px:
                continue
            if float(les.get("visible_fraction", 1.0)) < sampling.min_visible_fraction:
                continue
            full = by_id[int(les["lesion_id"])]
            cls = str(full["class"])
            feats = lesion_features(cls, str(full.get("subtype", "")),
                                    levels.get(int(les["lesion_id"])))
            for _ in range(sampling.jitters_per_lesion):
                box = jitter_box(rng, les["xyxy_px"], sampling)
                add(crop_box(f.image, box, spec), cls, SIM_CLASS_TO_TYPE[cls],
                    bool(full["malignant"]), feats, float(les.get("diameter_mm", np.nan)),
                    f.frame_index)
        for kind, box in _negative_boxes(rng, f.tissue, f.lesion_ids, TISSUE_CODES, mm_per_px,
                                         sampling.negatives_per_frame, sampling):
            feats = {name: True for name in NEGATIVE_FEATURES[kind]}
            add(crop_box(f.image, box, spec), kind, "other", False, feats, float("nan"),
                f.frame_index)
    return cols


def columns_to_cropset(cols: dict[str, list], spec: CropSpec, meta: dict[str, Any]) -> CropSet:
    """Stack column lists from :func:`crops_from_clip` into a :class:`CropSet`."""
    n = len(cols["crops"])
    s = spec.size_px
    return CropSet(
        np.asarray(cols["crops"], np.uint8).reshape(n, s, s),
        np.asarray(cols["type_idx"], np.int64).reshape(n),
        np.asarray(cols["malignant"], np.float32).reshape(n),
        np.asarray(cols["features"], np.float32).reshape(n, len(LESION_FEATURES)),
        np.asarray(cols["seed"], np.int64).reshape(n),
        np.asarray(cols["frame_index"], np.int64).reshape(n),
        np.asarray(cols["kind"], dtype="U24").reshape(n),
        np.asarray(cols["size_mm"], np.float32).reshape(n),
        meta)
