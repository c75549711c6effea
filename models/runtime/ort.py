"""ONNX Runtime backends: ``ort-cpu`` (default), ``ort-cuda``, ``ort-tensorrt``.

The CUDA and TensorRT execution providers are used only when onnxruntime reports them *and*
the created session really uses them: ONNX Runtime otherwise drops to the CPU provider with a
warning, which would be a silent fallback, so that case raises
:class:`~sonoflow.models.errors.BackendUnavailable`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _state

from sonoflow.models.card import ModelCard, read_card
from sonoflow.models.errors import BackendUnavailable, CardError, ModelError
from sonoflow.models.runtime.base import Runtime, require_precision

# What onnxruntime raises when a model cannot be loaded (its exceptions are plain Exception
# subclasses, not RuntimeError).
ORT_ERRORS = (_state.Fail, _state.InvalidGraph, _state.InvalidProtobuf, _state.NoSuchFile,
              _state.InvalidArgument, _state.RuntimeException, _state.NotImplemented)

_PROVIDERS = {
    "ort-cpu": "CPUExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-tensorrt": "TensorrtExecutionProvider",
}


def read_metadata(onnx_path: str | Path) -> dict[str, str]:
    """The ONNX file's ``metadata_props`` as a dict (through onnxruntime; no onnx package).

    Raises:
        CardError: the file cannot be opened as an ONNX model.
    """
    try:
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except ORT_ERRORS as e:
        raise CardError(f"{onnx_path}: cannot open as ONNX ({e})") from e
    return dict(sess.get_modelmeta().custom_metadata_map)


def session_options(threads: int) -> ort.SessionOptions:
    """Sequential execution on ``threads`` intra-op threads, all graph optimisations on."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


class OrtRuntime(Runtime):
    """An ONNX Runtime session on one execution provider.

    Args:
        onnx_path: the artifact.
        backend: ``"ort-cpu"`` | ``"ort-cuda"`` | ``"ort-tensorrt"``.
        precision: must equal the artifact's precision (or None = the artifact's).
        threads: intra-op threads (1 for the latency budget).
        card: the card, when the caller already read it.

    Raises:
        BackendUnavailable: the provider is not installed or did not initialise; or the
            precision differs from the artifact's.
        ModelError: the file cannot be loaded.
    """

    def __init__(self, onnx_path: str | Path, backend: str = "ort-cpu",
                 precision: str | None = None, threads: int = 1,
                 card: ModelCard | None = None):
        onnx_path = Path(onnx_path)
        if backend not in _PROVIDERS:
            raise BackendUnavailable(f"{backend!r} is not an ONNX Runtime backend; expected "
                                     f"one of {sorted(_PROVIDERS)}")
        provider = _PROVIDERS[backend]
        available = ort.get_available_providers()
        if provider not in available:
            raise BackendUnavailable(
                f"backend {backend!r} needs onnxruntime's {provider}, which this install does "
                f"not have (available: {available}). Install onnxruntime-gpu "
                f"(pip install 'sonoflow[gpu]') on a machine with an NVIDIA GPU, or use "
                f"--backend ort-cpu")
        if not onnx_path.exists():
            raise ModelError(f"{onnx_path}: model file not found")
        card = card or read_card(onnx_path)
        run_precision = require_precision(card, precision, backend, str(onnx_path))
        providers: list = [provider]
        if provider == "TensorrtExecutionProvider":
            providers = [(provider, {"trt_fp16_enable": run_precision == "fp16",
                                     "trt_int8_enable": run_precision == "int8"})]
        if provider != "CPUExecutionProvider":
            providers.append("CPUExecutionProvider")  # for ops the GPU provider lacks
        try:
            self._session = ort.InferenceSession(str(onnx_path), session_options(threads),
                                                 providers=providers)
        except ORT_ERRORS as e:
            raise ModelError(f"{onnx_path}: onnxruntime cannot load it ({e})") from e
        if provider not in self._session.get_providers():
            raise BackendUnavailable(
                f"{onnx_path}: {provider} is installed but did not initialise (session uses "
                f"{self._session.get_providers()}); check the CUDA/TensorRT libraries and the "
                f"driver, or use --backend ort-cpu")
        self.backend = backend
        self.threads = int(threads)
        super().__init__(card, run_precision,
                         [i.name for i in self._session.get_inputs()],
                         [o.name for o in self._session.get_outputs()])

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the session. See :meth:`Runtime.run`.

        Raises:
            InputContractError: inputs do not match the card.
        """
        self.check_inputs(inputs)
        outs = self._session.run(self.output_names, inputs)
        return dict(zip(self.output_names, outs, strict=True))

    def close(self) -> None:
        self._session = None
