"""The frame-network task: data, targets, losses, validation, held-out evaluation, card.

``sonoflow train frame --config training/configs/frame.toml --out runs/frame`` calls
:func:`run`. Data come from the simulator (:mod:`sonoflow.training.data.sim_frames`), cached
under ``runs/cache/frame``; training, validation and held-out cases use disjoint seed ranges,
and the held-out set also draws probe settings outside the training ranges.

Targets (stride 4 for detection, stride 2 for masks, on a 256 x 256 input):

* heatmap: a Gaussian per lesion centre (sigma from the box size, CenterNet-style), trained
  with the penalty-reduced focal loss;
* size: log(w / 4), log(h / 4) at the centre cell (L1); the export applies ``exp(.) * 4``;
* offset: sub-cell centre position in [0, 1) (L1 on the sigmoid);
* lesion / liver masks: BCE + soft Dice on the 128 x 128 grid;
* steatosis / fibrosis: cross-entropy (frame label = the case's grade).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sonoflow.models.arch.frame_net import FrameNet
from sonoflow.models.card import FIBROSIS_STAGES, STEATOSIS_GRADES, InputSpec, ModelCard
from sonoflow.models.errors import ModelError
from sonoflow.models.postprocess import decode_detections, heatmap_threshold_key, merge_hflip
from sonoflow.models.preprocess import normalise
from sonoflow.training import metrics as M
from sonoflow.training.configfile import read_config
from sonoflow.training.data.sim_frames import QUALITY_LABELS, SimFrameSpec, build_cache
from sonoflow.training.data.visibility import cache_visibility
from sonoflow.training.train import FitSpec, config_hash, fit, seed_everything

log = logging.getLogger(__name__)

ARCH_NAME = "frame_net"
STRIDE = 4
MAX_OBJECTS = 12
REQUIRED = {"model": ("id", "normalisation"), "data": ("cache_dir", "train_seeds", "val_seeds",
                                                        "heldout_seeds"),
            "train": ("seed", "epochs", "batch_size", "lr"), "loss": (), "export": ()}


# ----------------------------------------------------------------------------- config ----


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and check a frame config (TOML; ``base = "other.toml"`` inherits, see
    :mod:`sonoflow.training.configfile`), so a second training stage names only what it
    changes.

    Raises:
        ModelError: missing file, bad TOML, a ``base`` cycle, or a required key is missing
            (named).
    """
    path = Path(path)
    cfg = read_config(path, ModelError)
    for section, keys in REQUIRED.items():
        if section not in cfg:
            raise ModelError(f"{path}: missing section [{section}]")
        missing = [k for k in keys if k not in cfg[section]]
        if missing:
            raise ModelError(f"{path}: [{section}] is missing {missing}")
    return cfg


def sim_spec(cfg: dict[str, Any], split: str) -> SimFrameSpec:
    """The simulator spec of a split: ``[data]`` overridden by ``[data.<split>]``."""
    d = cfg["data"]
    keys = SimFrameSpec.__dataclass_fields__
    base = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in keys}
    over = {k: tuple(v) if isinstance(v, list) else v for k, v in d.get(split, {}).items()
            if k in keys}
    return SimFrameSpec(**{**base, **over})


def load_split(cfg: dict[str, Any], split: str, workers: int = 2) -> dict[str, np.ndarray]:
    """Simulate (or load from the cache) the ``train`` / ``val`` / ``heldout`` split."""
    lo, hi = cfg["data"][f"{split}_seeds"]
    spec = sim_spec(cfg, split)
    path = Path(cfg["data"]["cache_dir"]) / split
    data = build_cache(path, list(range(int(lo), int(hi))), spec, workers=workers)
    data["visible"] = cache_visibility(data)
    return data


def good_frames(data: dict[str, np.ndarray]) -> np.ndarray:
    """Indices of frames whose quality label is "good" (what the quality gate lets through)."""
    return np.nonzero(data["quality"] == QUALITY_LABELS.index("good"))[0]


# ---------------------------------------------------------------------------- targets ----


def gaussian_sigma(w_cells: float, h_cells: float) -> float:
    """Heatmap Gaussian sigma in cells for a box of w x h cells (CenterNet's radius / 3)."""
    return max(0.5, 0.18 * math.sqrt(max(w_cells, 1e-3) * max(h_cells, 1e-3)))


def detection_targets(boxes_px: np.ndarray, grid: int) -> dict[str, np.ndarray]:
    """CenterNet targets for one frame.

    Args:
        boxes_px: (K, 4) boxes in input pixels.
        grid: heatmap side (input / STRIDE).

    Returns:
        ``heatmap`` (1, grid, grid), ``ind`` (MAX_OBJECTS,) flat cell index, ``mask``
        (MAX_OBJECTS,), ``size`` (MAX_OBJECTS, 2) log(w/STRIDE), log(h/STRIDE), ``offset``
        (MAX_OBJECTS, 2).
    """
    hm = np.zeros((grid, grid), np.float32)
    ind = np.zeros(MAX_OBJECTS, np.int64)
    mask = np.zeros(MAX_OBJECTS, np.float32)
    size = np.zeros((MAX_OBJECTS, 2), np.float32)
    off = np.zeros((MAX_OBJECTS, 2), np.float32)
    yy, xx = np.mgrid[0:grid, 0:grid].astype(np.float32)
    for k, (x0, y0, x1, y1) in enumerate(boxes_px[:MAX_OBJECTS]):
        w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
        ix, iy = int(np.clip(np.floor(cx), 0, grid - 1)), int(np.clip(np.floor(cy), 0, grid - 1))
        s = gaussian_sigma(w / STRIDE, h / STRIDE)
        g = np.exp(-((xx - ix) ** 2 + (yy - iy) ** 2) / (2 * s * s))
        np.maximum(hm, g, out=hm)
        ind[k], mask[k] = iy * grid + ix, 1.0
        size[k] = np.log(w / STRIDE), np.log(h / STRIDE)
        off[k] = np.clip(cx - ix, 0.0, 0.999), np.clip(cy - iy, 0.0, 0.999)
    return {"heatmap": hm[None], "ind": ind, "mask": mask, "size": size, "offset": off}


class FrameBatches:
    """Shuffled mini-batches of (augmented) frames with targets, as torch tensors.

    Args:
        data: the cache arrays.
        indices: frames to draw from.
        batch_size: frames per batch.
        norm: the card's normalisation.
        augment: horizontal flip + gain/gamma jitter (+ windows, below).
        seed: base seed (epoch is mixed in).
        crop: window side for window batches (multiple of 4; 0 = none).
        crop_fraction: fraction of batches made of windows.
    """

    def __init__(self, data: dict[str, np.ndarray], indices: np.ndarray, batch_size: int,
                 norm: dict[str, float], augment: bool, seed: int, crop: int = 0,
                 crop_fraction: float = 0.0):
        self.crop, self.crop_fraction = int(crop), float(crop_fraction)
        self.data, self.indices = data, np.asarray(indices)
        self.batch_size, self.norm, self.augment, self.seed = batch_size, norm, augment, seed
        b = data["boxes"]
        vis = data["visible"] if "visible" in data else cache_visibility(data)
        self.boxes_of = {int(i): b[(b[:, 0] == i) & vis, 1:5] for i in np.unique(b[:, 0])}
        # lesions nobody could see in that frame: neither positives nor negatives
        self.ignored_of = {int(i): b[(b[:, 0] == i) & ~vis, 1:5] for i in np.unique(b[:, 0])}

    def __len__(self) -> int:
        return len(self.indices) // self.batch_size

    def batches(self, epoch: int):
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.indices)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield self.make(order[start:start + self.batch_size], rng)

    def make(self, idx: np.ndarray, rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
        """One batch. With probability ``crop_fraction`` it is a batch of ``crop`` x ``crop``
        windows (a lesion centre inside when the frame has one): detection and masks are
        fully convolutional, so windows train them at a fraction of the cost on this CPU;
        the grading losses are then switched off (``grade_weight`` 0), as the depth-band
        pooling needs the whole frame."""
        d = self.data
        imgs = d["image"][idx].astype(np.float32) / 255.0
        lesion = (d["lesion"][idx] > 0).astype(np.float32)
        liver = d["liver"][idx].astype(np.float32)
        S = imgs.shape[-1]
        boxes = [self.boxes_of.get(int(i), np.zeros((0, 4), np.float32)).copy() for i in idx]
        keep = np.stack([ignore_weight(self.ignored_of.get(int(i), np.zeros((0, 4))), S)
                         for i in idx])
        if self.augment and rng is not None:
            for j in range(len(idx)):
                if rng.random() < 0.5:
                    imgs[j], lesion[j], liver[j] = imgs[j, :, ::-1], lesion[j, :, ::-1], liver[j, :, ::-1]
                    keep[j] = keep[j, :, ::-1]
                    b = boxes[j]
                    b[:, [0, 2]] = S - b[:, [2, 0]]
                gamma, gain = rng.uniform(0.75, 1.35), rng.uniform(0.8, 1.25)
                imgs[j] = np.clip(imgs[j] ** gamma * gain, 0.0, 1.0)
        grade_weight = 1.0
        if self.augment and rng is not None and self.crop and rng.random() < self.crop_fraction:
            imgs, lesion, liver, boxes, keep = self._windows(imgs, lesion, liver, boxes, keep,
                                                             rng)
            grade_weight = 0.0
        size = imgs.shape[-1]
        x = (imgs - self.norm["mean"]) / self.norm["std"]
        targets = [detection_targets(b, size // STRIDE) for b in boxes]
        out = {k: torch.from_numpy(np.stack([t[k] for t in targets])) for k in targets[0]}
        out["image"] = torch.from_numpy(np.ascontiguousarray(x[:, None]))
        out["lesion_mask"] = torch.from_numpy(np.ascontiguousarray(lesion[:, None]))
        out["liver_mask"] = torch.from_numpy(np.ascontiguousarray(liver[:, None]))
        # loss weights: 0 around ignored lesions (min-pooled onto each output grid)
        out["heatmap_weight"] = torch.from_numpy(_min_pool(keep, STRIDE)[:, None])
        out["mask_weight"] = torch.from_numpy(_min_pool(keep, 2)[:, None])
        out["steatosis"] = torch.from_numpy(d["steatosis"][idx].astype(np.int64))
        out["fibrosis"] = torch.from_numpy(d["fibrosis"][idx].astype(np.int64))
        out["grade_weight"] = torch.tensor(grade_weight)
        return out

    def _windows(self, imgs, lesion, liver, boxes, keep, rng):
        """Cut one ``crop`` x ``crop`` window per frame (origin on the stride-4 grid)."""
        c, S = self.crop, imgs.shape[-1]
        wi, wl, wv, wb, wk = [], [], [], [], []
        for j in range(len(imgs)):
            b = boxes[j]
            if len(b) and rng.random() < 0.8:
                k = rng.integers(len(b))
                cx, cy = (b[k, 0] + b[k, 2]) / 2, (b[k, 1] + b[k, 3]) / 2
                x0 = rng.uniform(cx - c + 8, cx - 8)
                y0 = rng.uniform(cy - c + 8, cy - 8)
            else:
                x0, y0 = rng.uniform(0, S - c), rng.uniform(0, S - c)
            x0 = int(np.clip(round(x0 / 4) * 4, 0, S - c))
            y0 = int(np.clip(round(y0 / 4) * 4, 0, S - c))
            wi.append(imgs[j, y0:y0 + c, x0:x0 + c])
            wk.append(keep[j, y0:y0 + c, x0:x0 + c])
            wl.append(lesion[j, y0 // 2:(y0 + c) // 2, x0 // 2:(x0 + c) // 2])
            wv.append(liver[j, y0 // 2:(y0 + c) // 2, x0 // 2:(x0 + c) // 2])
            nb = b - np.array([x0, y0, x0, y0], np.float32)
            ccx, ccy = (nb[:, 0] + nb[:, 2]) / 2, (nb[:, 1] + nb[:, 3]) / 2
            inside = (ccx >= 0) & (ccx < c) & (ccy >= 0) & (ccy < c)
            wb.append(np.clip(nb[inside], 0, c))
        return np.stack(wi), np.stack(wl), np.stack(wv), wb, np.stack(wk)


def ignore_weight(ignored_px: np.ndarray, size: int, margin: float = 0.25) -> np.ndarray:
    """(size, size) float32 loss weight: 0 inside each ignored box (grown by ``margin`` of
    its side on every edge, so the heatmap's Gaussian skirt is ignored too), 1 elsewhere."""
    w = np.ones((size, size), np.float32)
    for x0, y0, x1, y1 in np.asarray(ignored_px, np.float32).reshape(-1, 4):
        mx, my = margin * (x1 - x0) + 2, margin * (y1 - y0) + 2
        xa, ya = int(max(0, np.floor(x0 - mx))), int(max(0, np.floor(y0 - my)))
        xb, yb = int(min(size, np.ceil(x1 + mx))), int(min(size, np.ceil(y1 + my)))
        w[ya:yb, xa:xb] = 0.0
    return w


def _min_pool(w: np.ndarray, k: int) -> np.ndarray:
    """(N, S, S) -> (N, S/k, S/k) block minimum (a cell is ignored if any pixel of it is)."""
    n, s, _ = w.shape
    return np.ascontiguousarray(w.reshape(n, s // k, k, s // k, k).min(axis=(2, 4)))


# ----------------------------------------------------------------------------- losses ----


def focal_loss(logits: torch.Tensor, target: torch.Tensor,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss, normalised by the number of peaks;
    cells with ``weight`` 0 (ignored lesions) do not count."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    neg = 1.0 - pos
    if weight is not None:
        pos, neg = pos * weight, neg * weight
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p ** 2 * (1 - target) ** 4 * neg
    n = pos.sum().clamp(min=1.0)
    return -(pos_loss.sum() + neg_loss.sum()) / n


def gather(feat: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) gathered at flat indices (N, K) -> (N, K, C)."""
    n, c = feat.shape[:2]
    f = feat.view(n, c, -1).permute(0, 2, 1)
    return f.gather(1, ind[..., None].expand(-1, -1, c))


def soft_dice(logits: torch.Tensor, target: torch.Tensor,
              weight: torch.Tensor | None = None) -> torch.Tensor:
    """1 - soft Dice over the batch (pooled), on sigmoid probabilities (``weight`` 0 pixels
    left out)."""
    p = torch.sigmoid(logits)
    if weight is not None:
        p, target = p * weight, target * weight
    inter = (p * target).sum()
    return 1.0 - (2 * inter + 1.0) / (p.sum() + target.sum() + 1.0)


def frame_loss(model: FrameNet, batch: dict[str, torch.Tensor], weights: dict[str, float]
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the task losses; returns ``(loss, {part: value})``."""
    raw = model.forward_raw(batch["image"])
    m = batch["mask"][..., None]
    nobj = m.sum().clamp(min=1.0)
    parts = {
        "heatmap": focal_loss(raw["heatmap"], batch["heatmap"], batch.get("heatmap_weight")),
        "size": (torch.abs(gather(raw["size"], batch["ind"]) - batch["size"]) * m).sum() / nobj,
        "offset": (torch.abs(torch.sigmoid(gather(raw["offset"], batch["ind"]))
                             - batch["offset"]) * m).sum() / nobj,
        "lesion_mask": F.binary_cross_entropy_with_logits(raw["lesion_mask"],
                                                          batch["lesion_mask"],
                                                          weight=batch.get("mask_weight"),
                                                          pos_weight=torch.tensor(4.0))
        + soft_dice(raw["lesion_mask"], batch["lesion_mask"], batch.get("mask_weight")),
        "liver_mask": F.binary_cross_entropy_with_logits(raw["liver_mask"], batch["liver_mask"])
        + soft_dice(raw["liver_mask"], batch["liver_mask"]),
        "steatosis": F.cross_entropy(raw["steatosis"], batch["steatosis"])
        * batch.get("grade_weight", 1.0),
        "fibrosis": F.cross_entropy(raw["fibrosis"], batch["fibrosis"])
        * batch.get("grade_weight", 1.0),
    }
    loss = sum(float(weights.get(k, 1.0)) * v for k, v in parts.items())
    out = {k: float(v.detach()) for k, v in parts.items()}
    out["loss"] = float(loss.detach())
    return loss, out


# ------------------------------------------------------------------------- evaluation ----


def torch_outputs(model: FrameNet):
    """``x (N,1,S,S) float32 -> {output name: array}`` for an eager model."""
    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            outs = model(torch.from_numpy(x))
        return {k: v.numpy() for k, v in zip(model.output_names, outs, strict=True)}
    return run


def predict(outputs_fn, data: dict[str, np.ndarray], indices: np.ndarray,
            norm: dict[str, float], batch_size: int = 16) -> dict[str, np.ndarray]:
    """Run ``outputs_fn`` over frames ``indices``; concatenated outputs."""
    spec = InputSpec(name="image", shape=[1, 1, 256, 256], normalisation=norm)
    parts: dict[str, list[np.ndarray]] = {}
    for s in range(0, len(indices), batch_size):
        x = normalise(data["image"][indices[s:s + batch_size]], spec)
        for k, v in outputs_fn(x).items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def evaluate(outs: dict[str, np.ndarray], data: dict[str, np.ndarray], indices: np.ndarray,
             threshold: float | None = None, iou: float = 0.5, max_fp_per_frame: float = 0.1,
             decode_floor: float = 0.05) -> dict[str, Any]:
    """Held-out / validation metrics of frame-network outputs on cached frames.

    Args:
        outs: outputs for ``indices`` (see :func:`predict`).
        data: the cache.
        indices: the evaluated frames.
        threshold: the shipped heatmap threshold; when given, recall/FP are also reported
            at it (``at_threshold``).
        iou: IoU for a true positive.
        max_fp_per_frame: the operating point for ``recall_at_fp``.
        decode_floor: lowest peak kept when decoding (the curves start there).

    Returns:
        JSON-ready dict: ``n_frames``, ``ap50``, ``recall_at_fp`` (recall by size at <= 0.1
        FP/frame, with the score threshold), ``at_threshold``, ``lesion_dice`` (pooled over
        frames, and mean over frames with a lesion), ``liver_dice``, ``steatosis_accuracy``,
        ``fibrosis_accuracy``, ``steatosis_confusion``.
    """
    b = data["boxes"]
    vis = data["visible"] if "visible" in data else cache_visibility(data)
    frames, frames_all = [], []
    grid = outs["heatmap"].shape[-1]
    S = data["image"].shape[-1]
    stride = S / grid
    M_grid = outs["lesion_mask"].shape[-1]
    keep = np.ones((len(indices), M_grid, M_grid), np.float32)
    for j, i in enumerate(indices):
        det = decode_detections(outs["heatmap"][j, 0], outs["size"][j], outs["offset"][j],
                                stride, decode_floor, 20)
        rows = b[:, 0] == i
        gt, gv, gi = b[rows], b[rows & vis], b[rows & ~vis]
        frames_all.append(M.FrameDetections(det.xyxy_px, det.confidence, gt[:, 1:5], gt[:, 5]))
        px, ps = drop_on_ignored(det.xyxy_px, det.confidence, gv[:, 1:5], gi[:, 1:5], iou)
        frames.append(M.FrameDetections(px, ps, gv[:, 1:5], gv[:, 5]))
        if len(gi):
            keep[j] = _min_pool(ignore_weight(gi[:, 1:5], S)[None], S // M_grid)[0]
    les_p_all = outs["lesion_mask"][:, 0] > 0.5
    les_t_all = data["lesion"][indices] > 0
    les_p, les_t = les_p_all & (keep > 0), les_t_all & (keep > 0)
    liv_p = outs["liver_mask"][:, 0] > 0.5
    liv_t = data["liver"][indices] > 0
    has = les_t.reshape(len(indices), -1).any(1)
    per_frame = [M.dice(les_p[j], les_t[j]) for j in np.nonzero(has)[0]]
    inter = float(np.logical_and(les_p, les_t).sum())
    st_true = data["steatosis"][indices].astype(int)
    st_pred = outs["steatosis"].argmax(1)
    fb_true = data["fibrosis"][indices].astype(int)
    res: dict[str, Any] = {
        "n_frames": int(len(indices)),
        "n_lesion_instances": int(sum(len(f.gt_xyxy) for f in frames)),
        "iou_threshold": iou,
        "ap50": M.average_precision(frames, iou),
        "recall_at_fp": M.recall_at_fp_rate(frames, max_fp_per_frame, iou,
                                            size_bins_mm=SIZE_BINS_MM),
        "lesion_dice_pooled": 2 * inter / max(float(les_p.sum() + les_t.sum()), 1.0),
        "lesion_dice_mean": float(np.mean(per_frame)) if per_frame else float("nan"),
        "lesion_dice_pooled_all": 2 * float(np.logical_and(les_p_all, les_t_all).sum())
        / max(float(les_p_all.sum() + les_t_all.sum()), 1.0),
        "n_ignored_lesion_instances": int(sum(len(f.gt_xyxy) for f in frames_all)
                                          - sum(len(f.gt_xyxy) for f in frames)),
        "liver_dice_pooled": 2 * float(np.logical_and(liv_p, liv_t).sum())
        / max(float(liv_p.sum() + liv_t.sum()), 1.0),
        "steatosis_accuracy": M.accuracy(st_true, st_pred),
        "fibrosis_accuracy": M.accuracy(fb_true, outs["fibrosis"].argmax(1)),
        "steatosis_confusion": M.confusion_matrix(st_true, st_pred, 4).tolist(),
    }
    op = res["recall_at_fp"]["score_threshold"]
    res["all_lesions"] = {
        "note": "every labelled lesion, the ones nobody could see included; detections on "
                "them count as true positives and FP/frame is counted without ignoring",
        "score_threshold": op,
        "fp_per_frame": M.false_positives_per_frame(frames_all, op, iou),
        "recall": M.recall_by_size(frames_all, op, iou, SIZE_BINS_MM),
    }
    if threshold is not None:
        res["at_threshold"] = {
            "score_threshold": threshold,
            "fp_per_frame": M.false_positives_per_frame(frames, threshold, iou),
            "recall": M.recall_by_size(frames, threshold, iou, SIZE_BINS_MM),
            "all_lesions_recall": M.recall_by_size(frames_all, threshold, iou, SIZE_BINS_MM),
        }
    return res


def drop_on_ignored(pred_xyxy: np.ndarray, scores: np.ndarray, visible_xyxy: np.ndarray,
                    ignored_xyxy: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Remove detections that sit on an ignored (invisible) lesion, i.e. whose centre lies in
    its box grown by a quarter, unless they match a visible lesion at ``iou``."""
    pred = np.asarray(pred_xyxy, np.float32).reshape(-1, 4)
    s = np.asarray(scores, np.float32).reshape(-1)
    if not len(pred) or not len(ignored_xyxy):
        return pred, s
    cx, cy = (pred[:, 0] + pred[:, 2]) / 2, (pred[:, 1] + pred[:, 3]) / 2
    g = np.asarray(ignored_xyxy, np.float32).reshape(-1, 4)
    mx, my = 0.25 * (g[:, 2] - g[:, 0]) + 2, 0.25 * (g[:, 3] - g[:, 1]) + 2
    on = ((cx[:, None] >= g[None, :, 0] - mx) & (cx[:, None] <= g[None, :, 2] + mx)
          & (cy[:, None] >= g[None, :, 1] - my) & (cy[:, None] <= g[None, :, 3] + my)).any(1)
    if len(visible_xyxy):
        on &= M.box_iou(pred, np.asarray(visible_xyxy, np.float32).reshape(-1, 4)).max(1) < iou
    return pred[~on], s[~on]


# Issue 5's size bins: < 5 mm (reported, no target), 5-10 mm, >= 10 mm.
SIZE_BINS_MM = (("lt5mm", 0.0, 5.0), ("5to10mm", 5.0, 10.0), ("ge10mm", 10.0, math.inf))


def headline(res: dict[str, Any]) -> dict[str, float]:
    """The few numbers the card and the progress bar show."""
    r = res["recall_at_fp"]["recall"]
    return {"recall_ge10mm": r["ge10mm"]["recall"], "recall_5to10mm": r["5to10mm"]["recall"],
            "ap50": res["ap50"], "lesion_dice": res["lesion_dice_pooled"],
            "liver_dice": res["liver_dice_pooled"],
            "steatosis_accuracy": res["steatosis_accuracy"],
            "fibrosis_accuracy": res["fibrosis_accuracy"]}


def val_score(res: dict[str, Any]) -> float:
    """One number to pick the best epoch: mean of detection, Dice and steatosis terms."""
    h = headline(res)
    vals = [v for v in (h["ap50"], h["lesion_dice"], h["steatosis_accuracy"],
                        h["recall_ge10mm"]) if v == v]
    return float(np.mean(vals)) if vals else 0.0


# ------------------------------------------------------------------------------- card ----


def frame_card(cfg: dict[str, Any], precision: str, params: int, gflops: float,
               metrics: dict[str, Any], threshold: float, pruning_ratio: float = 0.0,
               checkpoint: str = "", model_id: str = "",
               threshold_hflip: float | None = None) -> ModelCard:
    """The frame model's card (see ``models_api``); ``model_id`` defaults to the config's.
    ``threshold_hflip``: the heatmap threshold of the ``"hflip"`` test-time augmentation
    (``thresholds["heatmap_hflip"]``), chosen the same way on the same validation seeds."""
    thresholds = {"heatmap": float(threshold), "mask": 0.5, "nms_iou": 0.5,
                  "max_detections": 20.0}
    if threshold_hflip is not None:
        thresholds[heatmap_threshold_key("hflip")] = float(threshold_hflip)
    m = cfg["model"]
    d = cfg["data"]
    return ModelCard(
        id=model_id or m["id"], task="frame", precision=precision,
        input=InputSpec(name="image", shape=[1, 1, 256, 256], normalisation=dict(m["normalisation"]),
                        resize="letterbox", pad_value=0),
        outputs={
            "heatmap": "(1, 1, 64, 64) lesion-centre probability, stride 4",
            "size": "(1, 2, 64, 64) box width, height in input pixels",
            "offset": "(1, 2, 64, 64) centre offset within the cell (x, y), in cells [0, 1)",
            "lesion_mask": "(1, 1, 128, 128) lesion probability, stride 2",
            "liver_mask": "(1, 1, 128, 128) liver probability, stride 2",
            "steatosis": "(1, 4) softmax over S0..S3 (synthetic-calibrated)",
            "fibrosis": "(1, 5) softmax over F0..F4 (synthetic texture labels)",
        },
        class_names={"steatosis": list(STEATOSIS_GRADES), "fibrosis": list(FIBROSIS_STAGES),
                     "detection": ["lesion"]},
        thresholds=thresholds,
        pruning_ratio=float(pruning_ratio), params=int(params), gflops=float(gflops),
        training={"data": "synthetic: sonoflow simulator (sonoflow.stream.sim), letterboxed "
                          "sector, randomised probe/gain/depth/UI",
                  "config_hash": config_hash(cfg),
                  "seeds": {k: d[f"{k}_seeds"] for k in ("train", "val", "heldout")},
                  "threshold_source": "heatmap thresholds (one per test-time augmentation "
                                      "mode): <= 0.1 FP/frame on the validation seeds (never "
                                      "the held-out ones)"},
        metrics=metrics, synthetic_only=True,
        extra={"checkpoint": checkpoint, "stride": STRIDE, "mask_stride": 2,
               "arch": ARCH_NAME},
    )


def count_gflops(model: torch.nn.Module, size: int = 256) -> float:
    """GFLOPs (2 x MACs, torch's flop counter) of one forward pass."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.zeros(1, 1, size, size))
    return fc.get_total_flops() / 1e9


# -------------------------------------------------------------------------------- run ----


def run(config_path: str | Path, out_dir: str | Path, resume: bool = False,
        progress: bool = True) -> dict[str, Any]:
    """``sonoflow train frame``: simulate/cached data, train, pick the validation threshold,
    evaluate the best checkpoint on the held-out seeds (``heldout.json``)."""
    config_path = Path(config_path)
    cfg = load_config(config_path)
    out = Path(out_dir)
    t = cfg["train"]
    torch.set_num_threads(int(t.get("threads", 2)))
    gen_seed = int(t["seed"])
    seed_everything(gen_seed)
    workers = int(cfg["data"].get("workers", 2))
    train = load_split(cfg, "train", workers)
    val = load_split(cfg, "val", workers)
    norm = dict(cfg["model"]["normalisation"])
    kwargs = {k: (tuple(v) if isinstance(v, list) else v)
              for k, v in cfg["model"].get("kwargs", {}).items()}
    model = FrameNet(**kwargs)
    arch = {"name": ARCH_NAME, "kwargs": cfg["model"].get("kwargs", {})}
    batches = FrameBatches(train, good_frames(train), int(t["batch_size"]), norm, True, gen_seed,
                           crop=int(t.get("crop", 0)), crop_fraction=float(t.get("crop_fraction", 0)))
    val_idx = good_frames(val)
    weights = cfg["loss"]
    # [train] bn_recalibration_frames = N > 0: before each validation the BatchNorm statistics
    # are recomputed on N full training frames (recalibrate_batchnorm), so the epoch chosen as
    # best.pt is chosen, and saved, with the statistics it would ship with. Training itself is
    # unaffected: in train mode BatchNorm normalises with the batch's own statistics.
    n_bn = int(t.get("bn_recalibration_frames", 0))
    bn_frames = batchnorm_frames(cfg, train, n_bn) if n_bn > 0 else None

    def validate(m: FrameNet) -> dict[str, float]:
        if bn_frames is not None:
            recalibrate_batchnorm(m, bn_frames)
            m.eval()
        res = evaluate(predict(torch_outputs(m), val, val_idx, norm), val, val_idx)
        return {**headline(res), "val_score": val_score(res)}

    spec = FitSpec(model=model, arch=arch, train_batches=batches.batches,
                   steps_per_epoch=len(batches),
                   loss=lambda m, b: frame_loss(m, b, weights), validate=validate,
                   monitor="val_score")
    summary = fit(spec, cfg, out, config_path.read_text(), resume, progress)
    summary["heldout"] = evaluate_checkpoint(out / "best.pt", cfg, workers)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def evaluate_checkpoint(ckpt_path: Path, cfg: dict[str, Any], workers: int = 2
                        ) -> dict[str, Any]:
    """Pick the heatmap threshold on validation, then evaluate on the held-out split with it.

    Writes ``heldout.json`` beside the checkpoint.
    """
    from sonoflow.models.runtime.torch_backend import model_from_checkpoint, read_checkpoint

    model = model_from_checkpoint(read_checkpoint(ckpt_path), str(ckpt_path))
    norm = dict(cfg["model"]["normalisation"])
    val = load_split(cfg, "val", workers)
    vi = good_frames(val)
    thr = float(evaluate(predict(torch_outputs(model), val, vi, norm), val, vi)
                ["recall_at_fp"]["score_threshold"])
    thr = float(np.clip(thr, 0.05, 0.95))
    held = load_split(cfg, "heldout", workers)
    res = {"backend": "torch", "heatmap_threshold": thr,
           "good_frames": evaluate(predict(torch_outputs(model), held, good_frames(held), norm),
                                   held, good_frames(held), thr)}
    (ckpt_path.parent / "heldout.json").write_text(json.dumps(res, indent=2, default=float))
    return res


# ----------------------------------------------------------------------------- export ----


def hflip_outputs(outputs_fn):
    """``outputs_fn`` with the ``"hflip"`` test-time augmentation (the infer stage's
    ``tta = "hflip"``): the batch and its lateral mirror, merged by
    :func:`sonoflow.models.postprocess.merge_hflip`."""

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        return merge_hflip(outputs_fn(x), outputs_fn(np.ascontiguousarray(x[..., ::-1])))
    return run


def ort_outputs(rt):
    """``x (N,1,S,S) -> outputs`` through a runtime (batch 1 per call, as exported)."""
    name = rt.card.input.name

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        parts = [rt.run({name: x[i:i + 1]}) for i in range(len(x))]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return run


def heldout_report(outputs_fn, held: dict[str, np.ndarray], norm: dict[str, float],
                   threshold: float) -> dict[str, Any]:
    """Held-out metrics on good frames and on all frames (faults included)."""
    good = good_frames(held)
    allf = np.arange(len(held["image"]))
    return {"good_frames": evaluate(predict(outputs_fn, held, good, norm), held, good, threshold),
            "all_frames": evaluate(predict(outputs_fn, held, allf, norm), held, allf, threshold)}


def card_metrics(rep: dict[str, Any]) -> dict[str, Any]:
    """The compact held-out metrics written into a card."""
    g = rep["good_frames"]
    at = g["at_threshold"]
    return {"split": "held-out simulator seeds (never used in training), good-quality frames",
            "n_frames": g["n_frames"], "n_lesion_instances": g["n_lesion_instances"],
            "iou_threshold": g["iou_threshold"],
            "n_ignored_lesion_instances": g["n_ignored_lesion_instances"],
            "ignored": "lesions with no echo around them or no contrast in that frame "
                       "(training/data/visibility.py); all_lesions_recall counts them",
            "at_shipped_threshold": {"fp_per_frame": at["fp_per_frame"],
                                     "recall": {k: v["recall"] for k, v in at["recall"].items()},
                                     "all_lesions_recall": {
                                         k: v["recall"]
                                         for k, v in at["all_lesions_recall"].items()}},
            "at_0.1_fp_per_frame": {k: v["recall"] for k, v in
                                    g["recall_at_fp"]["recall"].items()},
            "ap50": g["ap50"], "lesion_dice": g["lesion_dice_pooled"],
            "lesion_dice_all_lesions": g["lesion_dice_pooled_all"],
            "liver_dice": g["liver_dice_pooled"], "steatosis_accuracy": g["steatosis_accuracy"],
            "fibrosis_accuracy": g["fibrosis_accuracy"]}


def recalibrate_batchnorm(model: torch.nn.Module, frames: np.ndarray, batch_size: int = 32
                          ) -> int:
    """Recompute every BatchNorm layer's running mean and variance as the plain average over
    ``frames`` (normalised network inputs, ``(N, 1, S, S)``), leaving the weights untouched.

    Why: the running statistics are an exponential average of the last training batches (BN
    momentum 0.1), whatever the learning rate, and training mixes two input distributions:
    ``[train] crop_fraction`` of the batches are 128 x 128 windows inside the liver, the rest
    full letterboxed frames with their black borders, which is all the model ever sees at run
    time. Whichever kind the last few batches were sets the statistics. Session 5 found them
    skewed at the end of several runs: a stage-3 checkpoint scored 0.60 on 240 validation
    cases as saved (lesion Dice 0.34, liver Dice 0.63) and 0.73 after this recalibration on 512
    full training frames; the per-epoch validation Dice of that run swung 0.77 -> 0.45 -> 0.77
    -> 0.20 with nothing but these statistics to explain it.

    Returns:
        The number of BatchNorm layers recalibrated.
    """
    from torch.optim.swa_utils import update_bn

    batches = [torch.from_numpy(np.ascontiguousarray(frames[i:i + batch_size]))
               for i in range(0, len(frames), batch_size)]
    with torch.no_grad():
        update_bn(batches, model)  # resets, averages cumulatively, restores momentum and mode
    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def batchnorm_frames(cfg: dict[str, Any], train: dict[str, np.ndarray], n: int) -> np.ndarray:
    """The fixed set of ``n`` good-quality full training frames (normalised network inputs)
    that :func:`recalibrate_batchnorm` averages over: drawn once per config (``[train] seed``),
    so every validation and the export recalibrate on the same frames."""
    idx = good_frames(train)
    pick = np.random.default_rng(int(cfg["train"]["seed"]) + 7).choice(
        idx, min(int(n), len(idx)), replace=False)
    spec = InputSpec(name="image", shape=[1, 1, 256, 256],
                     normalisation=dict(cfg["model"]["normalisation"]))
    return normalise(train["image"][np.sort(pick)], spec)


def export_run(run_dir: str | Path, config_path: str | Path, out_dir: str | Path,
               prune: bool = True, int8: bool = True, progress: bool = True,
               checkpoint: str = "best") -> dict[str, Any]:
    """Export a trained run: fp32 ONNX, INT8 QDQ, pruned + fine-tuned fp32 and INT8, each with
    its card (held-out metrics measured through ONNX Runtime), plus the torch checkpoint.

    Writes ``<out>/<id>-{fp32,int8}.onnx``, ``<out>/<id>-pruned-{fp32,int8}.onnx`` (+ cards),
    ``<out>/<id>.pt`` and ``<run>/export_report.json``.

    ``checkpoint``: ``"best"`` (``best.pt``, the epoch validation chose) or ``"last"``
    (``last.pt``). ``[export] bn_recalibration_frames`` = N > 0 recomputes the BatchNorm
    statistics on N training frames (:func:`recalibrate_batchnorm`) before anything is
    measured or exported; 0 (the default) exports the statistics as trained.

    Returns:
        The report (per artifact: card metrics, params, GFLOPs, size).
    """
    import copy

    from sonoflow.models import runtime as rt_mod
    from sonoflow.models.runtime.torch_backend import model_from_checkpoint, read_checkpoint
    from sonoflow.training.checkpoint import save_checkpoint
    from sonoflow.training.export import embed_card, export_onnx
    from sonoflow.training.prune import prune_channels
    from sonoflow.training.quantize import quantize_int8

    run_dir, out = Path(run_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(config_path)
    ex = cfg["export"]
    # [export] threads overrides [train] threads (an export may share the machine with a run)
    torch.set_num_threads(int(ex.get("threads", cfg["train"].get("threads", 2))))
    workers = int(cfg["data"].get("workers", 2))
    norm = dict(cfg["model"]["normalisation"])
    if checkpoint not in ("best", "last"):
        raise ValueError(f"export: checkpoint {checkpoint!r}; expected 'best' or 'last'")
    ckpt_path = run_dir / f"{checkpoint}.pt"
    model = model_from_checkpoint(read_checkpoint(ckpt_path), str(ckpt_path))
    train, val, held = (load_split(cfg, s, workers) for s in ("train", "val", "heldout"))
    vi = good_frames(val)
    rng = np.random.default_rng(int(cfg["train"]["seed"]))
    calib_idx = rng.choice(good_frames(train), int(ex.get("calibration_frames", 128)),
                           replace=False)
    spec = InputSpec(name="image", shape=[1, 1, 256, 256], normalisation=norm)
    calibration = normalise(train["image"][calib_idx], spec)
    report: dict[str, Any] = {"artifacts": {}, "checkpoint": str(ckpt_path)}
    n_bn = int(ex.get("bn_recalibration_frames", 0))
    bn_frames = batchnorm_frames(cfg, train, n_bn) if n_bn > 0 else None
    if bn_frames is not None:
        layers = recalibrate_batchnorm(model, bn_frames)
        model.eval()
        report["bn_recalibration"] = {"frames": int(len(bn_frames)), "layers": layers}

    def threshold_on_val(outputs_fn) -> float:
        res = evaluate(predict(outputs_fn, val, vi, norm), val, vi)
        return float(np.clip(res["recall_at_fp"]["score_threshold"], 0.05, 0.95))

    def ship(m: FrameNet, model_id: str, ratio: float) -> None:
        params = sum(p.numel() for p in m.parameters())
        gflops = count_gflops(m)
        thr = threshold_on_val(torch_outputs(m))
        thr_hflip = threshold_on_val(hflip_outputs(torch_outputs(m)))
        ckpt_name = f"{model_id}.pt"
        card = frame_card(cfg, "fp32", params, gflops, {}, thr, ratio, ckpt_name, model_id,
                          threshold_hflip=thr_hflip)
        fp32 = out / f"{model_id}-fp32.onnx"
        export_onnx(m, card, fp32, int(ex.get("opset", 17)))
        variants = [("fp32", fp32, card)]
        if int8:
            best = None
            for reduce_range in (False, True):
                q = quantize_int8(fp32, out / f"{model_id}-int8.onnx",
                                  ModelCard.from_dict(card.to_dict()), calibration,
                                  per_channel=True, reduce_range=reduce_range)
                with rt_mod.load(out / f"{model_id}-int8.onnx", "ort-cpu", threads=2) as r:
                    score = val_score(evaluate(predict(ort_outputs(r), val, vi, norm), val, vi))
                report.setdefault("int8_choice", {})[f"{model_id} reduce_range={reduce_range}"] \
                    = score
                if best is None or score > best[0]:
                    best = (score, reduce_range)
            q = quantize_int8(fp32, out / f"{model_id}-int8.onnx",
                              ModelCard.from_dict(card.to_dict()), calibration,
                              per_channel=True, reduce_range=best[1])
            variants.append(("int8", out / f"{model_id}-int8.onnx", q))
        for precision, path, c in variants:
            with rt_mod.load(path, "ort-cpu", threads=2) as r:
                rep = heldout_report(ort_outputs(r), held, norm, thr)
                rep_hflip = heldout_report(hflip_outputs(ort_outputs(r)), held, norm, thr_hflip)
            c.metrics = {**card_metrics(rep), "tta_hflip": card_metrics(rep_hflip)}
            embed_card(path, c)
            report["artifacts"][f"{model_id}-{precision}"] = {
                "params": params, "gflops": gflops, "pruning_ratio": ratio,
                "bytes": path.stat().st_size, "heatmap_threshold": thr, "heldout": rep,
                "heatmap_threshold_hflip": thr_hflip, "heldout_hflip": rep_hflip}
        save_checkpoint(out / ckpt_name, m, arch=arch_of(m), config=cfg, epoch=0,
                        card=card.to_dict())

    def arch_of(m: FrameNet) -> dict[str, Any]:
        return {"name": ARCH_NAME, "kwargs": cfg["model"].get("kwargs", {})}

    ship(model, cfg["model"]["id"], 0.0)
    if prune:
        pruned = copy.deepcopy(model)
        keep = [pruned.hm, pruned.wh, pruned.off, pruned.mask_out, pruned.steatosis,
                pruned.fibrosis]
        ratio = float(ex.get("pruning_ratio", 0.3))
        report["pruning"] = prune_channels(pruned, ratio, torch.zeros(1, 1, 256, 256), keep)
        # the fine-tune starts from the pruned weights: never from the training run's `init`
        train_cfg = {k: v for k, v in cfg["train"].items() if k != "init"}
        ft_cfg = {**cfg, "train": {**train_cfg, "lr": float(ex.get("finetune_lr", 1e-3)),
                                   "max_minutes": float(ex.get("finetune_minutes", 5)),
                                   "epochs": int(ex.get("finetune_epochs", 3))}}
        t = ft_cfg["train"]
        batches = FrameBatches(train, good_frames(train), int(t["batch_size"]), norm, True,
                               int(t["seed"]) + 1, crop=int(t.get("crop", 0)),
                               crop_fraction=float(t.get("crop_fraction", 0)))

        def validate(m: FrameNet) -> dict[str, float]:
            if bn_frames is not None:  # select the epoch on the statistics it will ship with
                recalibrate_batchnorm(m, bn_frames)
                m.eval()
            res = evaluate(predict(torch_outputs(m), val, vi, norm), val, vi)
            return {**headline(res), "val_score": val_score(res)}

        fspec = FitSpec(model=pruned, arch=arch_of(pruned), train_batches=batches.batches,
                        steps_per_epoch=len(batches),
                        loss=lambda m, b: frame_loss(m, b, cfg["loss"]), validate=validate,
                        monitor="val_score")
        fit(fspec, ft_cfg, run_dir / "pruned", "", False, progress)
        pruned = model_from_checkpoint(read_checkpoint(run_dir / "pruned" / "best.pt"))
        if bn_frames is not None:  # the fine-tune leaves its own running statistics
            recalibrate_batchnorm(pruned, bn_frames)
            pruned.eval()
        ship(pruned, f"{cfg['model']['id']}-pruned", ratio)
    (run_dir / "export_report.json").write_text(json.dumps(report, indent=2, default=float))
    return report
