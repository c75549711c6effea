"""A small, generic training loop: seeded, resumable, time-boxed, with a tqdm bar.

A task supplies the model, the data loaders, ``loss(model, batch) -> (loss, parts)`` and
``validate(model) -> metrics`` (one scalar named by ``monitor`` decides the best checkpoint).
The loop writes into ``out_dir``:

* ``config.toml`` (the config file as given) and ``config.json`` (parsed, with its hash);
* ``last.pt`` after every epoch and ``best.pt`` on a better ``monitor`` value (versioned
  checkpoint dicts, see :mod:`sonoflow.training.checkpoint`);
* ``metrics.jsonl``: one line per epoch (train loss parts, validation metrics, time).

``resume=True`` continues from ``last.pt`` (model, optimizer, epoch, step, time spent, best
value), so the learning-rate schedule picks up where it stopped.

``[train] init = "PATH"`` starts a new run from another run's checkpoint (weights only: a fresh
optimizer and schedule), e.g. a second stage on more data; the file's sha256 is written to
``config.json`` beside the config hash, so the run says exactly which weights it grew from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sonoflow.models.card import file_sha256
from sonoflow.training.checkpoint import read_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


def config_hash(cfg: dict[str, Any]) -> str:
    """sha256[:16] of the config's canonical JSON (what the card records)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator for the data loaders."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass
class FitSpec:
    """What :func:`fit` needs from a task.

    Attributes:
        model: the torch module.
        arch: ``{"name", "kwargs"}`` for the checkpoint.
        train_batches: ``epoch -> iterable of batches``.
        steps_per_epoch: batches per epoch (for the bar and the LR schedule).
        loss: ``(model, batch) -> (loss tensor, {part: float})``.
        validate: ``model -> {metric: float}`` (model in eval mode, no grad).
        monitor: the metric that picks ``best.pt`` (higher is better).
    """

    model: torch.nn.Module
    arch: dict[str, Any]
    train_batches: Callable[[int], Iterable]
    steps_per_epoch: int
    loss: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]
    validate: Callable[[torch.nn.Module], dict[str, float]]
    monitor: str


def fit(spec: FitSpec, cfg: dict[str, Any], out_dir: str | Path, config_text: str = "",
        resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train ``spec.model`` per ``cfg["train"]`` (``epochs``, ``lr``, ``weight_decay``,
    ``max_minutes``, ``grad_clip``): AdamW, short warm-up then cosine decay over whichever is
    shorter, the epochs or the time box.

    Returns:
        ``{"best": {metric: value}, "epochs": n, "best_path": str, "minutes": m}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tcfg = cfg["train"]
    if config_text:
        (out / "config.toml").write_text(config_text)
    model = spec.model
    provenance: dict[str, Any] = {"config": cfg, "hash": config_hash(cfg)}
    resuming = resume and (out / "last.pt").exists()
    if not resuming:
        # a fresh run in a used folder: its per-epoch log starts empty (appending would mix
        # the rows of two runs; seen with the pruned fine-tune, re-run in place by an export)
        (out / "metrics.jsonl").unlink(missing_ok=True)
    if resuming and tcfg.get("init") and (out / "config.json").exists():
        # the weights this run grew from were recorded when it started: keep that record
        provenance["init"] = json.loads((out / "config.json").read_text()).get("init")
    if tcfg.get("init") and not resuming:
        init = Path(tcfg["init"])
        if not init.is_file():
            raise FileNotFoundError(f"{init}: [train] init checkpoint not found (train the "
                                    "first stage first)")
        ck = read_checkpoint(init)
        if ck.get("arch") != spec.arch:
            raise ValueError(f"{init}: architecture {ck.get('arch')} does not match the config's "
                             f"{spec.arch}")
        model.load_state_dict(ck["model"])
        provenance["init"] = {"path": str(init), "sha256": file_sha256(init),
                              "epoch": ck.get("epoch"), "metrics": ck.get("metrics")}
        log.info("initialised from %s (epoch %s)", init, ck.get("epoch"))
    (out / "config.json").write_text(json.dumps(provenance, indent=2, default=float))
    opt = torch.optim.AdamW(model.parameters(), lr=float(tcfg["lr"]),
                            weight_decay=float(tcfg.get("weight_decay", 1e-4)))
    epochs = int(tcfg["epochs"])
    base_lr = float(tcfg["lr"])
    budget_s = 60.0 * float(tcfg.get("max_minutes", 1e9))
    total_steps = epochs * spec.steps_per_epoch
    start, best, step, spent_s = 0, -float("inf"), 0, 0.0
    if resume and (out / "last.pt").exists():
        ck = read_checkpoint(out / "last.pt")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start, best = int(ck["epoch"]), float(ck.get("best", -float("inf")))
        step, spent_s = int(ck.get("step", 0)), float(ck.get("spent_s", 0.0))
        log.info("resumed %s at epoch %d (best %s=%.4f)", out, start, spec.monitor, best)
    t0 = time.monotonic() - spent_s

    def progress_fraction() -> float:
        # Whichever ends first, the step budget or the time box, drives the schedule, so a
        # time-boxed run still anneals its learning rate to the end.
        return min(1.0, max(step / total_steps, (time.monotonic() - t0) / budget_s))

    def set_lr() -> None:
        p = progress_fraction()
        warm = min(1.0, step / max(1, int(0.03 * total_steps)))
        lr = base_lr * warm * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * p)))
        for g in opt.param_groups:
            g["lr"] = lr
    metrics: dict[str, float] = {}
    best_metrics: dict[str, float] = {}
    epoch = start
    for epoch in range(start, epochs):
        model.train()
        sums: dict[str, float] = {}
        n = 0
        bar = tqdm(spec.train_batches(epoch), total=spec.steps_per_epoch, disable=not progress,
                   desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False)
        for batch in bar:
            set_lr()
            loss, parts = spec.loss(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(tcfg.get("grad_clip", 5.0)))
            opt.step()
            step += 1
            n += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{sums['loss'] / n:.3f}",
                            **{spec.monitor: f"{metrics.get(spec.monitor, float('nan')):.3f}"})
            if progress_fraction() >= 1.0:
                break
        model.eval()
        with torch.no_grad():
            metrics = spec.validate(model)
        row = {"epoch": epoch + 1, "minutes": (time.monotonic() - t0) / 60.0,
               "lr": opt.param_groups[0]["lr"], **{f"train_{k}": v / max(n, 1)
                                                   for k, v in sums.items()}, **metrics}
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        improved = metrics[spec.monitor] > best
        if improved:
            best, best_metrics = metrics[spec.monitor], dict(metrics)
        common = {"arch": spec.arch, "config": cfg, "metrics": metrics}
        save_checkpoint(out / "last.pt", model, epoch=epoch + 1, optimizer=opt, best=best,
                        step=step, spent_s=time.monotonic() - t0, **common)
        if improved:
            save_checkpoint(out / "best.pt", model, epoch=epoch + 1, **common)
        msg = " ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float))
        (tqdm.write if progress else log.info)(f"epoch {epoch + 1}: {msg}")
        if time.monotonic() - t0 >= budget_s:
            log.warning("time box of %s min reached after epoch %d of %d",
                        tcfg.get("max_minutes"), epoch + 1, epochs)
            break
    return {"best": best_metrics, "epochs": epoch + 1, "best_path": str(out / "best.pt"),
            "minutes": (time.monotonic() - t0) / 60.0}
