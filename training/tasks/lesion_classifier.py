"""Train, evaluate and export the lesion crop classifier (``sonoflow train lesion-classifier``).

Pipeline (one config file, see ``training/configs/lesion_classifier.toml``):

1. **Crops** from simulator clips, cached once per seed range under ``data.cache_dir``
   (chunks of 25 seeds, so an interrupted build resumes): :func:`build_cropset`.
2. **Training**: seeded, resumable (``last.pt``), class-balanced sampling, on-the-fly
   augmentation, a tqdm bar with the loss and the validation accuracy, time-boxed; the config
   and per-epoch metrics are written beside the run (``config.toml``, ``metrics.jsonl``).
   Checkpoints are versioned dicts (:data:`CKPT_FORMAT`).
3. **Held-out evaluation** on seeds never used for training or model selection.
4. **Export**: ONNX fp32 (card embedded in ``metadata_props`` and as a sidecar), static INT8
   QDQ (per-channel, calibrated on training crops) with its accuracy cost and speed measured;
   INT8 is recommended only when it is faster and costs <= ``int8_max_accuracy_drop``.

Class balancing: lesion types are drawn with inverse-frequency weights (each type equally
likely per sample). Augmentation: lateral flip (never vertical: posterior enhancement points
down the beam), grey gain and gamma (gain / dynamic-range changes), small rotation, zoom and
shift (detector box error beyond the crop jitter), occasional blur and additive noise.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from sonoflow.stream.errors import ConfigError
from sonoflow.training.configfile import read_config
from sonoflow.training.data.sim_crops import (
    LESION_FEATURES,
    LESION_TYPES,
    CropSampling,
    CropSet,
    CropSpec,
    columns_to_cropset,
    crops_from_clip,
    jitter_box,
)

CKPT_FORMAT = "sonoflow.ckpt/1"
TASK = "lesion_classifier"
SIM_CLASSES = ("cyst", "hemangioma", "metastasis", "hcc", "fat_sparing")
CHUNK_SEEDS = 25
REQUIRED = {"model": ("id", "widths", "dropout"), "crop": ("margin", "size_px", "min_side_px"),
            "data": ("cache_dir", "height", "width", "n_frames", "frame_stride", "train_seeds",
                     "val_seeds", "test_seeds", "n_lesions"),
            "train": ("seed", "epochs", "batch_size", "lr", "weight_decay", "time_limit_min"),
            "augment": (), "sampling": (), "export": ()}


# ------------------------------------------------------------------------------ config -----


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and check a classifier config (TOML; ``base = "other.toml"`` inherits, see
    :mod:`sonoflow.training.configfile`).

    Raises:
        ConfigError: missing file, bad TOML, a missing section/key, or overlapping seed ranges.
    """
    path = Path(path)
    cfg = read_config(path, ConfigError)
    check_config(cfg, str(path))
    return cfg


def check_config(cfg: dict[str, Any], where: str = "config") -> None:
    """Check required keys and that train/val/test seed ranges are disjoint.

    Raises:
        ConfigError: what is missing or overlapping, and where.
    """
    for section, keys in REQUIRED.items():
        if section not in cfg:
            raise ConfigError(f"{where}: section [{section}] is missing")
        for k in keys:
            if k not in cfg[section]:
                raise ConfigError(f"{where}: [{section}] {k} is missing")
    ranges = {k: tuple(cfg["data"][k]) for k in ("train_seeds", "val_seeds", "test_seeds")}
    for k, (a, b) in ranges.items():
        if not (isinstance(a, int) and isinstance(b, int) and a < b):
            raise ConfigError(f"{where}: [data] {k} = {[a, b]}, expected [start, stop) ints")
    names = list(ranges)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            (a0, a1), (b0, b1) = ranges[names[i]], ranges[names[j]]
            if a0 < b1 and b0 < a1:
                raise ConfigError(f"{where}: seed ranges {names[i]} {[a0, a1]} and "
                                  f"{names[j]} {[b0, b1]} overlap; held-out seeds must never be "
                                  "trained on")


def config_hash(cfg: dict[str, Any], sections: tuple[str, ...] | None = None) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of ``cfg`` (or some sections)."""
    part = cfg if sections is None else {k: cfg.get(k) for k in sections}
    return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:16]


def crop_cache_key(cfg: dict[str, Any]) -> str:
    """The crop cache's settings hash: the crop, data and sampling sections without the three
    ``*_seeds`` ranges (see :func:`build_cropset`)."""
    data = {k: v for k, v in cfg["data"].items() if not k.endswith("_seeds")}
    return config_hash({"crop": cfg.get("crop"), "data": data, "sampling": cfg.get("sampling")})


def crop_spec(cfg: dict[str, Any]) -> CropSpec:
    c = cfg["crop"]
    return CropSpec(float(c["margin"]), int(c["size_px"]), int(c["min_side_px"]),
                    int(c.get("pad_value", 0)))


def _sampling(cfg: dict[str, Any]) -> CropSampling:
    s = dict(cfg.get("sampling", {}))
    for k in ("negative_side_mm", "skip_quality"):
        if k in s:
            s[k] = tuple(s[k])
    return CropSampling(**s)


def clip_overrides(seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """Per-clip ``sample_case`` overrides: a class-balanced lesion mix.

    Each clip gets 1..3 lesions whose classes are drawn uniformly from the five simulator
    classes (the simulator's own prior is skewed); a clip with fat sparing gets a fatty liver
    (S2/S3), the only liver the simulator renders it in. Everything else (probe, depth,
    frequency, gain, view, events) is sampled by the simulator from the seed.
    """
    d = cfg["data"]
    rng = np.random.default_rng([seed, 0xC1A55])
    lo, hi = d["n_lesions"]
    n = int(rng.integers(lo, hi + 1))
    classes = [str(c) for c in rng.choice(SIM_CLASSES, n, replace=True)]
    o: dict[str, Any] = {"n_lesions": n, "lesion_classes": classes, "ui": bool(d.get("ui", True)),
                         "events": bool(d.get("events", True))}
    if "fat_sparing" in classes:
        o["steatosis_grade"] = int(rng.choice(d.get("fat_sparing_steatosis", [2, 3])))
    return o


# ------------------------------------------------------------------------------- crops -----


def build_cropset(cfg: dict[str, Any], split: str, progress: bool = True) -> CropSet:
    """Crops for one split (``"train"``, ``"val"`` or ``"test"``), cached in chunks.

    The cache key covers the crop, data and sampling sections, so changing any of them
    regenerates, except the seed ranges: a chunk's file names its own seeds, and its crops
    depend on those seeds and the settings alone, so a larger training range reuses the
    chunks it shares with a smaller one. An interrupted build resumes at the first missing
    chunk.

    Raises:
        ConfigError: unknown split.
    """
    from tqdm import tqdm

    key = f"{split}_seeds"
    if key not in cfg["data"]:
        raise ConfigError(f"build_cropset: unknown split {split!r}; expected train/val/test")
    start, stop = cfg["data"][key]
    d = cfg["data"]
    spec, sampling = crop_spec(cfg), _sampling(cfg)
    h = crop_cache_key(cfg)
    cache = Path(d["cache_dir"])
    cache.mkdir(parents=True, exist_ok=True)
    sets = []
    chunks = list(range(start, stop, CHUNK_SEEDS))
    bar = tqdm(total=stop - start, desc=f"crops {split}", unit="clip", disable=not progress)
    for c0 in chunks:
        c1 = min(c0 + CHUNK_SEEDS, stop)
        path = cache / f"{split}_{c0}_{c1}_{h}.npz"
        if path.exists():
            sets.append(CropSet.load(path))
            bar.update(c1 - c0)
            continue
        cols: dict[str, list] = {}
        for seed in range(c0, c1):
            part = crops_from_clip(seed, int(d["n_frames"]), int(d["frame_stride"]), spec,
                                   sampling, int(d["height"]), int(d["width"]),
                                   clip_overrides(seed, cfg))
            for k, v in part.items():
                cols.setdefault(k, []).extend(v)
            bar.update(1)
        cs = columns_to_cropset(cols, spec, {"split": split, "seeds": [c0, c1], "hash": h})
        cs.save(path)
        sets.append(cs)
    bar.close()
    out = CropSet.concat(sets)
    out.meta = {"split": split, "seeds": [start, stop], "hash": h}
    return out


# ------------------------------------------------------------------------------ training ---


def _augment(x, cfg_aug: dict[str, Any], gen):
    """Augment a (B, 1, S, S) float batch in [0, 1] (torch, on the fly)."""
    import torch
    import torch.nn.functional as F

    b = x.shape[0]

    def u(lo, hi, shape=(b, 1, 1, 1)):
        return lo + (hi - lo) * torch.rand(shape, generator=gen)

    if cfg_aug.get("hflip", 0) > 0:
        flip = torch.rand(b, generator=gen) < cfg_aug["hflip"]
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    rot = math.radians(float(cfg_aug.get("rotate_deg", 0.0)))
    z0, z1 = cfg_aug.get("zoom", [1.0, 1.0])
    sh = float(cfg_aug.get("shift", 0.0))
    if rot > 0 or z0 != 1.0 or z1 != 1.0 or sh > 0:
        ang = u(-rot, rot, (b,))
        zoom = u(z0, z1, (b,))
        cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
        tx, ty = u(-2 * sh, 2 * sh, (b,)), u(-2 * sh, 2 * sh, (b,))
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    g0, g1 = cfg_aug.get("gamma", [1.0, 1.0])
    x = x.clamp(0, 1) ** u(g0, g1)
    a0, a1 = cfg_aug.get("gain", [1.0, 1.0])
    x = x * u(a0, a1)
    if cfg_aug.get("blur_p", 0) > 0:
        k = torch.tensor([0.25, 0.5, 0.25])
        kern = (k[:, None] * k[None, :])[None, None]
        blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kern)
        pick = torch.rand(b, generator=gen) < cfg_aug["blur_p"]
        x = torch.where(pick[:, None, None, None], blurred, x)
    if cfg_aug.get("noise_std", 0) > 0:
        x = x + cfg_aug["noise_std"] * torch.randn(x.shape, generator=gen)
    return x.clamp(0, 1)


def _to_input(crops_u8: np.ndarray, norm: dict[str, float]):
    import torch

    x = torch.from_numpy(crops_u8.astype(np.float32)[:, None] * np.float32(norm["scale"]))
    return x


def _normalise(x, norm: dict[str, float]):
    return (x - norm["mean"]) / norm["std"]


def torch_predict(model, crops_u8: np.ndarray, norm: dict[str, float],
                  batch: int = 256) -> dict[str, np.ndarray]:
    """Eager-torch probabilities for uint8 crops (same outputs as ``evaluate.predict_crops``)."""
    import torch

    from sonoflow.training.evaluate import sigmoid, softmax

    model.eval()
    tp, mp, fp = [], [], []
    with torch.no_grad():
        for i in range(0, len(crops_u8), batch):
            x = _normalise(_to_input(crops_u8[i:i + batch], norm), norm)
            a, b, c = model(x)
            tp.append(softmax(a.double().numpy()))
            mp.append(sigmoid(b.double().numpy()).reshape(-1))
            fp.append(sigmoid(c.double().numpy()))
    cat = np.concatenate
    return {"type_probs": cat(tp) if tp else np.zeros((0, len(LESION_TYPES))),
            "malignancy": cat(mp) if mp else np.zeros(0),
            "feature_probs": cat(fp) if fp else np.zeros((0, len(LESION_FEATURES)))}


def build_model(cfg: dict[str, Any]):
    """The :class:`LesionClassifier` described by ``[model]``."""
    from sonoflow.models.arch.lesion_classifier import LesionClassifier

    return LesionClassifier(tuple(cfg["model"]["widths"]), float(cfg["model"]["dropout"]))


def arch_entry(cfg: dict[str, Any]) -> dict[str, Any]:
    """``{"name", "kwargs"}`` for ``sonoflow.models.runtime.torch_backend`` to rebuild the net."""
    return {"name": "lesion_classifier",
            "kwargs": {"widths": [int(w) for w in cfg["model"]["widths"]],
                       "dropout": float(cfg["model"]["dropout"])}}


def save_checkpoint(path: Path, **state: Any) -> None:
    """Write a versioned checkpoint dict atomically (write then rename).

    The dict carries ``format`` (:data:`CKPT_FORMAT`), ``task``, and whatever is passed
    (``model`` state dict, ``optimizer``, ``scheduler``, ``epoch``, ``config``, ``arch``, ...);
    only plain types and tensors, so it loads with ``weights_only=True``.
    """
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save({"format": CKPT_FORMAT, "task": TASK, **state}, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        ConfigError: missing file, or a format/task tag that is not this task's.
    """
    import torch

    path = Path(path)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        raise ConfigError(f"{path}: cannot read checkpoint ({e})") from e
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT or ck.get("task") != TASK:
        got = (ck.get("format"), ck.get("task")) if isinstance(ck, dict) else type(ck).__name__
        raise ConfigError(f"{path}: checkpoint tag {got}, expected ({CKPT_FORMAT!r}, {TASK!r})")
    return ck


def train(cfg: dict[str, Any], out_dir: str | Path, resume: bool = False,
          progress: bool = True, config_text: str | None = None) -> dict[str, Any]:
    """Train the classifier; returns the run summary (also in ``out_dir/summary.json``).

    Args:
        cfg: a checked config (see :func:`load_config`).
        out_dir: run folder: ``config.toml``, ``metrics.jsonl``, ``last.pt``, ``best.pt``.
        resume: continue from ``out_dir/last.pt``.
        progress: show tqdm bars.
        config_text: the config file's text, saved verbatim beside the run.

    Raises:
        ConfigError: resume asked without a checkpoint, or a checkpoint from another config.
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from sonoflow.models.arch.lesion_classifier import count_gflops, count_params

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tcfg = cfg["train"]
    torch.set_num_threads(int(tcfg.get("threads", 2)))
    (out / "config.toml").write_text(config_text if config_text is not None
                                     else json.dumps(cfg, indent=2))
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    chash = config_hash(cfg)

    train_set = build_cropset(cfg, "train", progress)
    val_set = build_cropset(cfg, "val", progress)
    mean = float(train_set.crops.mean() / 255.0)
    std = float(train_set.crops.std() / 255.0) or 1.0
    norm = {"scale": 1.0 / 255.0, "mean": round(mean, 5), "std": round(std, 5)}

    torch.manual_seed(int(tcfg["seed"]))
    gen = torch.Generator().manual_seed(int(tcfg["seed"]))
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=float(tcfg["lr"]),
                            weight_decay=float(tcfg["weight_decay"]))
    epochs = int(tcfg["epochs"])
    steps_per_epoch = max(1, len(train_set) // int(tcfg["batch_size"]))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(tcfg["lr"]),
                                                total_steps=epochs * steps_per_epoch)
    start_epoch, best_acc, history = 0, -1.0, []
    if resume:
        last = out / "last.pt"
        if not last.exists():
            raise ConfigError(f"{last}: --resume given but no checkpoint there; run without "
                              "--resume to start")
        ck = load_checkpoint(last)
        if ck["config_hash"] != chash:
            raise ConfigError(f"{last}: checkpoint config hash {ck['config_hash']} differs from "
                              f"this config's {chash}; resume with the same config")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        gen.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])
        start_epoch, best_acc, history = ck["epoch"] + 1, ck["best_val_acc"], ck["history"]
        norm = ck["normalisation"]

    counts = np.bincount(train_set.type_idx, minlength=len(LESION_TYPES)).astype(np.float64)
    w_type = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)[train_set.type_idx]
    w_sample = torch.as_tensor(w_type / w_type.sum(), dtype=torch.float64)
    lw = tcfg.get("loss_weights", {"type": 1.0, "malignancy": 0.5, "features": 0.5})
    crops_t = torch.from_numpy(train_set.crops)
    y_type = torch.from_numpy(train_set.type_idx)
    y_mal = torch.from_numpy(train_set.malignant)
    y_feat = torch.from_numpy(train_set.features)
    deadline = time.monotonic() + 60.0 * float(tcfg["time_limit_min"])
    bs = int(tcfg["batch_size"])
    summary: dict[str, Any] = {}
    for epoch in range(start_epoch, epochs):
        model.train()
        if tcfg.get("balance", "type") == "type":
            idx = torch.multinomial(w_sample, steps_per_epoch * bs, replacement=True,
                                    generator=gen)
        else:
            idx = torch.randperm(len(train_set), generator=gen)[:steps_per_epoch * bs]
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}",
                   disable=not progress, leave=False)
        loss_sum = 0.0
        for step in bar:
            b = idx[step * bs:(step + 1) * bs]
            x = crops_t[b].float()[:, None] / 255.0
            x = _normalise(_augment(x, cfg.get("augment", {}), gen), norm)
            lt, lm, lf = model(x)
            loss = (lw["type"] * F.cross_entropy(lt, y_type[b])
                    + lw["malignancy"] * F.binary_cross_entropy_with_logits(lm[:, 0], y_mal[b])
                    + lw["features"] * F.binary_cross_entropy_with_logits(lf, y_feat[b]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach())
            bar.set_postfix(loss=f"{loss_sum / (step + 1):.3f}", val_acc=f"{best_acc:.3f}")
        probs = torch_predict(model, val_set.crops, norm)
        val_acc = float(np.mean(probs["type_probs"].argmax(1) == val_set.type_idx))
        row = {"epoch": epoch + 1, "loss": loss_sum / steps_per_epoch, "val_type_accuracy": val_acc,
               "lr": sched.get_last_lr()[0], "time": time.time()}
        history.append(row)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if progress:
            tqdm.write(f"epoch {epoch + 1}: loss {row['loss']:.4f} val type acc {val_acc:.4f}")
        state = dict(model=model.state_dict(), optimizer=opt.state_dict(),
                     scheduler=sched.state_dict(), generator=gen.get_state(),
                     torch_rng=torch.get_rng_state(), epoch=epoch, config=cfg,
                     arch=arch_entry(cfg),
                     config_hash=chash, normalisation=norm, history=history)
        if val_acc > best_acc:
            best_acc = val_acc
            save_checkpoint(out / "best.pt", **{**state, "best_val_acc": best_acc})
        save_checkpoint(out / "last.pt", **{**state, "best_val_acc": best_acc})
        if time.monotonic() > deadline:
            summary["stopped"] = f"time limit {tcfg['time_limit_min']} min after epoch {epoch + 1}"
            break
    summary.update({"task": TASK, "config_hash": chash, "best_val_type_accuracy": best_acc,
                    "epochs_run": len(history), "normalisation": norm,
                    "n_train": len(train_set), "n_val": len(val_set),
                    "params": count_params(model), "gflops": count_gflops(model),
                    "train_type_counts": dict(zip(LESION_TYPES, counts.astype(int).tolist(),
                                                  strict=True))})
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def run(config_path: str | Path, out_dir: str | Path, resume: bool = False,
        progress: bool = True) -> dict[str, Any]:
    """Entry point used by ``sonoflow train lesion-classifier``: train, evaluate the best
    checkpoint on the held-out seeds (``heldout.json``), then export fp32 + INT8 ONNX with
    their measured metrics into ``out_dir/export`` (:func:`ship`)."""
    config_path = Path(config_path)
    cfg = load_config(config_path)
    summary = train(cfg, out_dir, resume, progress, config_path.read_text())
    ck = load_checkpoint(Path(out_dir) / "best.pt")
    model = build_model(cfg)
    model.load_state_dict(ck["model"])
    test_set = build_cropset(cfg, "test", progress)
    from sonoflow.training.evaluate import classifier_report, write_json

    probs = torch_predict(model, test_set.crops, ck["normalisation"])
    rep = classifier_report(probs["type_probs"], probs["malignancy"], probs["feature_probs"],
                            test_set.type_idx, test_set.malignant, test_set.features,
                            test_set.size_mm, kind=test_set.kind)
    write_json(Path(out_dir) / "heldout.json", {"backend": "torch", **rep})
    summary["heldout_type_accuracy"] = rep["type"]["accuracy"]
    exported = ship(out_dir, progress=progress)
    summary["export"] = {"artifacts": exported["artifacts"], **exported["int8_vs_fp32"]}
    return summary


# ------------------------------------------------------------------------------- export -----


def make_card(cfg: dict[str, Any], precision: str, norm: dict[str, float], params: int,
              gflops: float, metrics: dict[str, Any]):
    """The classifier's :class:`~sonoflow.models.card.ModelCard` (sha256 left empty)."""
    from sonoflow.models.arch.lesion_classifier import INPUT_NAME
    from sonoflow.models.card import InputSpec, ModelCard

    spec = crop_spec(cfg)
    d = cfg["data"]
    return ModelCard(
        id=str(cfg["model"]["id"]), task=TASK, precision=precision,
        input=InputSpec(name=INPUT_NAME, shape=[-1, 1, spec.size_px, spec.size_px],
                        normalisation=dict(norm), resize="crop", crop_margin=spec.margin,
                        pad_value=spec.pad_value),
        outputs={"type_logits": "(N, 5) lesion-type logits, class_names.type order; softmax",
                 "malignancy_logit": "(N, 1) malignancy logit; sigmoid = P(malignant)",
                 "feature_logits": "(N, 7) B-mode feature logits, class_names.features order; "
                                   "independent sigmoids (multi-label)"},
        class_names={"type": list(LESION_TYPES), "malignancy": ["malignant"],
                     "features": list(LESION_FEATURES)},
        thresholds={"malignancy": 0.5, "feature": 0.5},
        params=int(params), gflops=round(float(gflops), 5),
        training={"data": "synthetic: sonoflow simulator crops at jittered ground-truth boxes "
                          "plus hard negatives (vessels, gallbladder, regenerative nodules, plain "
                          "liver) and focal fat sparing as 'other'",
                  "config_hash": config_hash(cfg),
                  "seeds": {"train": d["train_seeds"], "val": d["val_seeds"],
                            "heldout": d["test_seeds"]}},
        metrics=metrics, synthetic_only=True,
        extra={"crop": spec.to_card(),
               "labels": "features derived from simulator rendering parameters, see "
                         "docs/evaluation.md"})


def export_fp32(model, cfg: dict[str, Any], norm: dict[str, float], out_dir: str | Path,
                metrics: dict[str, Any]) -> Path:
    """Export ``<id>-fp32.onnx`` (dynamic batch, opset 17) with its card embedded + sidecar
    (through the shared :func:`sonoflow.training.export.embed_card`)."""
    import warnings

    import onnx
    import torch

    from sonoflow.models.arch.lesion_classifier import (
        INPUT_NAME,
        OUTPUT_NAMES,
        count_gflops,
        count_params,
    )
    from sonoflow.training.export import embed_card

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{cfg['model']['id']}-fp32.onnx"
    size = crop_spec(cfg).size_px
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (torch.zeros(1, 1, size, size),), str(path),
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes={INPUT_NAME: {0: "n"},
                                        **{k: {0: "n"} for k in OUTPUT_NAMES}},
                          opset_version=17, dynamo=False)
    onnx.checker.check_model(str(path))
    card = make_card(cfg, "fp32", norm, count_params(model), count_gflops(model, size), metrics)
    embed_card(path, card)
    return path


def export_int8(fp32_path: Path, calib_crops_u8: np.ndarray, norm: dict[str, float],
                metrics: dict[str, Any], reduce_range: bool = True,
                out_path: Path | None = None) -> Path:
    """Static INT8 QDQ quantization of an fp32 artifact through the shared
    :func:`sonoflow.training.quantize.quantize_int8` (per-channel int8 weights, uint8
    activations, MinMax calibration on ``calib_crops_u8``); card copied with precision int8.

    Args:
        fp32_path: the fp32 artifact.
        calib_crops_u8: (N, S, S) uint8 training crops.
        norm: the card's normalisation.
        metrics: held-out metrics for the int8 card.
        reduce_range: 7-bit weights (AVX2 without VNNI can saturate u8 x s8 at 8 bits).
        out_path: destination; default ``<id>-int8.onnx`` beside ``fp32_path``.
    """
    from sonoflow.models.card import read_card
    from sonoflow.training.quantize import quantize_int8

    card = read_card(fp32_path)
    x = calib_crops_u8.astype(np.float32)[:, None] * np.float32(norm["scale"])
    x = ((x - np.float32(norm["mean"])) / np.float32(norm["std"])).astype(np.float32)
    out = out_path or fp32_path.with_name(f"{card.id}-int8.onnx")
    card.metrics = metrics
    quantize_int8(fp32_path, out, card, x, per_channel=True, reduce_range=reduce_range)
    return out


# ------------------------------------------------------------------- real-data k-fold -----


def stratified_folds(labels: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold index per item, stratified by a 0/1 label (round-robin over shuffled classes).

    Args:
        labels: (N,) 0/1.
        k: number of folds (2 <= k <= N).
        seed: shuffle seed.

    Returns:
        (N,) int64 fold ids in [0, k).

    Raises:
        ConfigError: k out of range.
    """
    labels = np.asarray(labels).astype(int)
    if not 2 <= k <= len(labels):
        raise ConfigError(f"stratified_folds: k={k}, expected 2 <= k <= {len(labels)} items")
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(labels), np.int64)
    offset = 0
    for cls in (0, 1):
        idx = rng.permutation(np.nonzero(labels == cls)[0])
        fold[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)
    return fold


def kfold_real(cfg: dict[str, Any], checkpoint: str | Path, real_root: str | Path, k: int = 6,
               steps: int = 150, batch: int = 32, lr: float = 1e-3, seed: int = 0,
               n_boot: int = 2000, progress: bool = True) -> dict[str, Any]:
    """Fine-tune the synthetic classifier on real images, k-fold, for benign vs malignant.

    Per fold: start from ``checkpoint``; train the whole network for ``steps`` steps on the
    training images' lesions only (malignancy BCE; benign/malignant sampled equally; each
    sample a freshly jittered crop at the annotated box, augmented as in training); predict
    the held-out images' lesions at their annotated boxes. Out-of-fold probabilities give the
    AUC with a bootstrap 95 % CI, next to the synthetic-only model's AUC on the same lesions.

    Args:
        cfg: the classifier config (crop contract, augmentation).
        checkpoint: the synthetic-only ``best.pt``.
        real_root: a real-data folder (:func:`sonoflow.training.data.real.load_real_dataset`).
        k: folds (stratified by image label).
        steps: optimiser steps per fold.
        batch: crops per step.
        lr: AdamW learning rate.
        seed: folds, sampling and augmentation seed.
        n_boot: bootstrap resamples.
        progress: tqdm bar over folds.

    Returns:
        JSON-ready report (per-lesion out-of-fold and synthetic-only probabilities included).

    Raises:
        ConfigError: lesions without a benign/malignant label, or a bad checkpoint.
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from sonoflow.training.data.real import load_real_dataset
    from sonoflow.training.data.sim_crops import crop_box
    from sonoflow.training.evaluate import malignancy_auc_report

    items = load_real_dataset(real_root)
    lesions = [(i, les) for i, item in enumerate(items) for les in item.lesions]
    if any(les.malignant is None for _, les in lesions):
        raise ConfigError(f"{real_root}: some lesions have no benign/malignant label; k-fold "
                          "fine-tuning needs them all labelled")
    img_label = np.array([float(any(les.malignant for les in item.lesions)) for item in items])
    folds = stratified_folds(img_label, k, seed)
    ck = load_checkpoint(checkpoint)
    norm = ck["normalisation"]
    spec = crop_spec(cfg)
    sampling = _sampling(cfg)
    y = np.array([float(les.malignant) for _, les in lesions])
    gt_crops = np.stack([crop_box(items[i].image, les.xyxy_px, spec) for i, les in lesions])
    base = build_model(cfg)
    base.load_state_dict(ck["model"])
    synth = torch_predict(base, gt_crops, norm)["malignancy"]
    oof = np.full(len(lesions), np.nan)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for f in tqdm(range(k), desc="real k-fold", disable=not progress):
        train_idx = [j for j, (i, _) in enumerate(lesions) if folds[i] != f]
        test_idx = [j for j, (i, _) in enumerate(lesions) if folds[i] == f]
        model = build_model(cfg)
        model.load_state_dict(ck["model"])
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        by_cls = {c: [j for j in train_idx if y[j] == c] for c in (0.0, 1.0)}
        model.train()
        for _ in range(steps):
            crops, targets = [], []
            for b in range(batch):
                pool = by_cls[float(b % 2)] or train_idx
                j = pool[int(rng.integers(len(pool)))]
                i, les = lesions[j]
                box = jitter_box(rng, les.xyxy_px, sampling)
                crops.append(crop_box(items[i].image, box, spec))
                targets.append(y[j])
            x = torch.from_numpy(np.stack(crops)).float()[:, None] / 255.0
            x = _normalise(_augment(x, cfg.get("augment", {}), gen), norm)
            _, lm, _ = model(x)
            loss = F.binary_cross_entropy_with_logits(lm[:, 0], torch.tensor(targets).float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        oof[test_idx] = torch_predict(model, gt_crops[test_idx], norm)["malignancy"]
    return {
        "data": str(real_root), "k": k, "steps": steps, "batch": batch, "lr": lr, "seed": seed,
        "n_images": len(items), "n_lesions": len(lesions),
        "folds": folds.tolist(),
        "finetuned": malignancy_auc_report(y, oof, n_boot, seed),
        "synthetic_only": malignancy_auc_report(y, synth, n_boot, seed),
        "lesions": [{"image": items[i].path.name, "malignant": bool(les.malignant),
                     "fold": int(folds[i]), "p_finetuned": float(oof[j]),
                     "p_synthetic_only": float(synth[j])}
                    for j, (i, les) in enumerate(lesions)],
        "note": "fine-tuned on real images of the other folds (whole network, malignancy head "
                "loss only); synthetic-only = the shipped classifier's malignancy head, no "
                "real data. 18 images: the intervals are wide by construction.",
    }


# --------------------------------------------------------------------------------- ship -----


def latency_ms(rt, crops_u8: np.ndarray, batch: int = 1, repeats: int = 300,
               warmup: int = 20) -> dict[str, float]:
    """Wall-clock latency of ``rt.run`` on ``batch`` crops (ms): p50, p99, mean."""
    from sonoflow.models.preprocess import normalise

    x = normalise(crops_u8[:batch], rt.card.input)
    name = rt.card.input.name
    for _ in range(warmup):
        rt.run({name: x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        rt.run({name: x})
        times.append((time.perf_counter_ns() - t0) / 1e6)
    a = np.asarray(times)
    return {"batch": batch, "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "repeats": repeats}


def _headline(rep: dict[str, Any]) -> dict[str, Any]:
    """The held-out numbers that go into a card (the full report stays in the run folder)."""
    return {
        "heldout_crops": rep["n"],
        "type_accuracy": round(rep["type"]["accuracy"], 4),
        "type_accuracy_by_size": {k: {"accuracy": None if math.isnan(v["accuracy"])
                                      else round(v["accuracy"], 4), "n": v["n"]}
                                  for k, v in rep["type"]["accuracy_by_size"].items()},
        "type_recall": {k: round(v["recall"], 4) for k, v in rep["type"]["per_class"].items()
                        if not math.isnan(v["recall"])},
        "malignancy_auc": rep["malignancy"]["auc"],
        "feature_auc": {k: None if v["auc"] is None else round(v["auc"], 4)
                        for k, v in rep["features"].items()},
    }


def ship(run_dir: str | Path, out_dir: str | Path | None = None, calibration_crops: int = 512,
         progress: bool = True) -> dict[str, Any]:
    """Export the run's best checkpoint as fp32 and INT8 ONNX with measured held-out metrics.

    Both artifacts are evaluated through ONNX Runtime (CPU, 1 thread) on the held-out crops
    and timed side by side in this one process; each card carries its own held-out metrics,
    the INT8 accuracy cost, both latencies and ``extra.recommended_precision`` (INT8 only
    when it is faster *and* costs <= ``export.int8_max_accuracy_drop``).

    Args:
        run_dir: a training run folder (``config.json``, ``best.pt``).
        out_dir: where the artifacts go (default ``run_dir/export``); copy them into
            ``models/weights/`` to ship.
        calibration_crops: training crops used for INT8 calibration.
        progress: tqdm bars (crop cache).

    Returns:
        The export report (also ``out_dir/export.json``).
    """
    from sonoflow.models import runtime
    from sonoflow.models.card import read_card
    from sonoflow.training.evaluate import classifier_report, predict_crops, write_json
    from sonoflow.training.export import embed_card

    run_dir = Path(run_dir)
    # config.json is the config as the run resolved it (config.toml is the file verbatim, and
    # a `base` it names is relative to where that file was, not to the run folder)
    resolved = run_dir / "config.json"
    if not resolved.exists():
        raise ConfigError(f"{resolved}: missing; not a lesion-classifier training run folder")
    cfg = json.loads(resolved.read_text())
    check_config(cfg, str(resolved))
    out = Path(out_dir) if out_dir is not None else run_dir / "export"
    ck = load_checkpoint(run_dir / "best.pt")
    norm = ck["normalisation"]
    model = build_model(cfg)
    model.load_state_dict(ck["model"])
    model.eval()
    test_set = build_cropset(cfg, "test", progress)
    train_set = build_cropset(cfg, "train", progress)
    rng = np.random.default_rng(int(cfg["train"]["seed"]))
    calib = train_set.crops[rng.choice(len(train_set), min(calibration_crops, len(train_set)),
                                       replace=False)]
    fp32 = export_fp32(model, cfg, norm, out, {})
    reduce_range = bool(cfg.get("export", {}).get("int8_reduce_range", True))
    int8 = export_int8(fp32, calib, norm, {}, reduce_range=reduce_range)

    reports, speed = {}, {}
    for prec, path in (("fp32", fp32), ("int8", int8)):
        with runtime.load(path, "ort-cpu", prec, threads=1) as rt:
            probs = predict_crops(rt, test_set.crops)
            reports[prec] = classifier_report(probs["type_probs"], probs["malignancy"],
                                              probs["feature_probs"], test_set.type_idx,
                                              test_set.malignant, test_set.features,
                                              test_set.size_mm, kind=test_set.kind)
            speed[prec] = {"batch1": latency_ms(rt, test_set.crops, 1),
                           "batch8": latency_ms(rt, test_set.crops, 8, repeats=150)}
    drop = reports["fp32"]["type"]["accuracy"] - reports["int8"]["type"]["accuracy"]
    max_drop = float(cfg.get("export", {}).get("int8_max_accuracy_drop", 0.01))
    faster = speed["int8"]["batch1"]["p50"] < speed["fp32"]["batch1"]["p50"]
    recommended = "int8" if (faster and drop <= max_drop) else "fp32"
    comparison = {"type_accuracy_drop": round(drop, 4), "max_drop": max_drop,
                  "int8_faster": faster,
                  "speedup_batch1_p50": round(speed["fp32"]["batch1"]["p50"]
                                              / speed["int8"]["batch1"]["p50"], 3),
                  "recommended_precision": recommended,
                  "int8_reduce_range": reduce_range,
                  "measured": "ONNX Runtime CPU, 1 thread, one process, same held-out crops"}
    for prec, path in (("fp32", fp32), ("int8", int8)):
        card = read_card(path)
        card.metrics = {**_headline(reports[prec]),
                        "latency_ms_ort_cpu_1thread": speed[prec],
                        "int8_vs_fp32": comparison,
                        "heldout_seeds": cfg["data"]["test_seeds"],
                        "note": "synthetic held-out crops at ground-truth boxes; not clinical"}
        card.extra = {**card.extra, "recommended_precision": recommended}
        embed_card(path, card)
    report = {"fp32": reports["fp32"], "int8": reports["int8"], "latency_ms": speed,
              "int8_vs_fp32": comparison, "artifacts": [str(fp32), str(int8)],
              "checkpoint_epoch": int(ck["epoch"]) + 1, "config_hash": config_hash(cfg)}
    write_json(out / "export.json", report)
    return report
