"""``torch`` backend: the eager model rebuilt from a checkpoint (for benchmarks and debugging).

Checkpoints are versioned dicts (``"format": "sonoflow.ckpt/1"``) holding ``model`` (state
dict), ``arch`` (``{"name": ..., "kwargs": {...}}``) and optionally ``card`` (the card as a
dict). A pruned model's layer widths are read back from the state dict's shapes, so the same
checkpoint format serves pruned and unpruned models. torch is imported here lazily (inside
functions), never by ``sonoflow.models.runtime`` at import time.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np

from sonoflow.models.card import ModelCard, read_card
from sonoflow.models.errors import BackendUnavailable, CardError, ModelError
from sonoflow.models.runtime.base import Runtime

CKPT_FORMAT = "sonoflow.ckpt/1"
# arch name (as stored in checkpoints and configs) -> "module:Class"
ARCHS: dict[str, str] = {
    "frame_net": "sonoflow.models.arch.frame_net:FrameNet",
    "lesion_classifier": "sonoflow.models.arch.lesion_classifier:LesionClassifier",
}


def import_torch():
    """Import torch or raise :class:`BackendUnavailable` saying how to get it."""
    try:
        import torch
    except ImportError as e:
        raise BackendUnavailable(f"backend 'torch' needs PyTorch ({e}); pip install "
                                 f"'sonoflow[train]', or use --backend ort-cpu") from e
    return torch


def arch_class(name: str):
    """The torch module class registered under ``name``.

    Raises:
        ModelError: unknown arch name.
    """
    if name not in ARCHS:
        raise ModelError(f"unknown arch {name!r}; registered: {sorted(ARCHS)}")
    module, _, cls = ARCHS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def read_checkpoint(path: str | Path) -> dict:
    """Load a versioned checkpoint dict (``weights_only``: no arbitrary pickled objects).

    Raises:
        ModelError: missing file, wrong format tag.
    """
    torch = import_torch()
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: checkpoint not found")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        fmt = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ModelError(f"{path}: checkpoint format {fmt!r}, expected {CKPT_FORMAT!r}")
    return ckpt


def model_from_checkpoint(ckpt: dict, where: str = "checkpoint"):
    """Rebuild the eager model (eval mode) from a checkpoint dict; pruned widths included.

    Raises:
        ModelError: no ``arch`` entry or the state dict does not fit.
    """
    from sonoflow.models.arch.blocks import conform_to_state_dict

    arch = ckpt.get("arch")
    if not isinstance(arch, dict) or "name" not in arch:
        raise ModelError(f"{where}: no 'arch' entry ({{'name', 'kwargs'}}) to rebuild the model")
    model = arch_class(arch["name"])(**arch.get("kwargs", {}))
    state = ckpt["model"]
    conform_to_state_dict(model, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ModelError(f"{where}: state dict does not fit arch {arch['name']!r}: {e}") from e
    return model.eval()


class TorchRuntime(Runtime):
    """Eager PyTorch on CPU, fp32 only.

    Args:
        path: a checkpoint (``.pt``), or an ONNX artifact with a checkpoint beside it named
            in ``card.extra["checkpoint"]``.
        precision: ``"fp32"`` or None.
        threads: ``torch.set_num_threads`` value.

    Raises:
        BackendUnavailable: torch missing, or a precision other than fp32.
        ModelError: checkpoint missing or not matching.
    """

    backend = "torch"

    def __init__(self, path: str | Path, precision: str | None = None, threads: int = 1,
                 card: ModelCard | None = None):
        self._torch = torch = import_torch()
        if precision not in (None, "fp32"):
            raise BackendUnavailable(f"backend 'torch' runs fp32 only on CPU; {precision} was "
                                     f"asked for (use ort-cpu for int8, tensorrt for fp16)")
        path = Path(path)
        if path.suffix == ".onnx":
            card = card or read_card(path)
            name = card.extra.get("checkpoint")
            if not name:
                raise ModelError(f"{path}: card has no extra.checkpoint naming the torch "
                                 f"checkpoint; pass the .pt file to the torch backend")
            path = path.with_name(name)
        ckpt = read_checkpoint(path)
        if card is None:
            if "card" not in ckpt:
                raise CardError(f"{path}: checkpoint carries no card; pass card=...")
            card = ModelCard.from_dict(dict(ckpt["card"]), f"{path} [card]")
        torch.set_num_threads(int(threads))
        self._model = model_from_checkpoint(ckpt, str(path))
        names = list(getattr(self._model, "output_names", None)
                     or getattr(sys.modules[type(self._model).__module__], "OUTPUT_NAMES", ()))
        if not names:
            raise ModelError(f"{path}: the model class defines no output_names (nor its module "
                             f"OUTPUT_NAMES)")
        super().__init__(card, "fp32", [card.input.name], names)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Eager forward under ``inference_mode``. See :meth:`Runtime.run`."""
        self.check_inputs(inputs)
        torch = self._torch
        with torch.inference_mode():
            outs = self._model(torch.from_numpy(np.ascontiguousarray(inputs[self.input_names[0]])))
        if not isinstance(outs, (tuple, list)):
            outs = (outs,)
        return {n: o.numpy() for n, o in zip(self.output_names, outs, strict=True)}

    def close(self) -> None:
        self._model = None
