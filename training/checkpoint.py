"""Versioned checkpoint dicts: ``{"format": "sonoflow.ckpt/1", "model", "optimizer", "epoch",
"config", "arch", ...}``. Loaded with ``weights_only=True`` (no arbitrary pickled objects)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from sonoflow.models.runtime.torch_backend import CKPT_FORMAT, read_checkpoint

__all__ = ["CKPT_FORMAT", "read_checkpoint", "save_checkpoint"]


def save_checkpoint(path: str | Path, model: torch.nn.Module, arch: dict[str, Any],
                    config: dict[str, Any], epoch: int,
                    optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, metrics: dict[str, Any] | None = None,
                    card: dict[str, Any] | None = None, **extra: Any) -> Path:
    """Write a checkpoint atomically (temp file + rename) and return its path.

    Args:
        path: destination ``.pt``.
        model: the module (its ``state_dict`` is saved).
        arch: ``{"name": ..., "kwargs": {...}}`` to rebuild it (see ``torch_backend.ARCHS``).
        config: the run's config (plain dict).
        epoch: number of completed epochs.
        optimizer: saved for resuming when given.
        scheduler: LR scheduler, saved for resuming when given.
        metrics: last validation metrics.
        card: a model card dict, so the torch backend can run the checkpoint alone.
        **extra: more plain entries (e.g. ``pruning``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt: dict[str, Any] = {"format": CKPT_FORMAT, "model": model.state_dict(), "arch": arch,
                            "config": config, "epoch": int(epoch), "metrics": metrics or {}}
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        ckpt["scheduler"] = scheduler.state_dict()
    if card is not None:
        ckpt["card"] = card
    ckpt.update(extra)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path
