"""sonoflow.models.runtime: inference backends behind one protocol. Never imports torch at module level.

    from sonoflow.models.registry import resolve
    from sonoflow.models import runtime

    path, card = resolve("frame-v1", "fp32")
    with runtime.load(path, backend="ort-cpu", precision="fp32", threads=1) as rt:
        outputs = rt.run({card.input.name: x})   # dict[str, np.ndarray]

Backends (the words used in config, CLI and logs): ``ort-cpu`` (default), ``ort-cuda``,
``ort-tensorrt`` (ONNX Runtime execution providers), ``tensorrt`` (native engine),
``torch`` (eager, from a checkpoint). Nothing falls back silently: a backend or precision that
cannot run here raises :class:`~sonoflow.models.errors.BackendUnavailable`.
"""

from __future__ import annotations

from pathlib import Path

from sonoflow.models.card import ModelCard
from sonoflow.models.errors import BackendUnavailable
from sonoflow.models.runtime.base import BACKENDS, Runtime

__all__ = ["BACKENDS", "Runtime", "load"]


def load(onnx_path: str | Path, backend: str = "ort-cpu", precision: str | None = None,
         threads: int = 1, card: ModelCard | None = None, **options) -> Runtime:
    """Load one model artifact on one backend.

    Args:
        onnx_path: the ``.onnx`` artifact (the ``torch`` backend also takes a ``.pt``
            checkpoint).
        backend: one of :data:`BACKENDS`.
        precision: ``"fp32"`` | ``"fp16"`` | ``"int8"``, or None for the artifact's own.
            ONNX Runtime and torch run the artifact's precision only; ``tensorrt`` builds an
            engine at the precision asked for.
        threads: CPU threads (intra-op).
        card: the card, when already read (skips reading it again).
        **options: backend-specific (``tensorrt``: ``cache_dir``, ``calibration``).

    Returns:
        A :class:`Runtime`.

    Raises:
        BackendUnavailable: unknown backend, or it/the precision cannot run here (the reason
            is in the message).
        ModelError: the artifact or its card is missing or malformed.
    """
    if backend in ("ort-cpu", "ort-cuda", "ort-tensorrt"):
        from sonoflow.models.runtime.ort import OrtRuntime

        if options:
            raise BackendUnavailable(f"backend {backend!r} takes no options, got {sorted(options)}")
        return OrtRuntime(onnx_path, backend=backend, precision=precision, threads=threads,
                          card=card)
    if backend == "tensorrt":
        from sonoflow.models.runtime.trt import TrtRuntime

        return TrtRuntime(onnx_path, precision=precision, threads=threads, card=card, **options)
    if backend == "torch":
        from sonoflow.models.runtime.torch_backend import TorchRuntime

        return TorchRuntime(onnx_path, precision=precision, threads=threads, card=card)
    raise BackendUnavailable(f"unknown backend {backend!r}; expected one of {BACKENDS}")
