"""Native TensorRT backend (``tensorrt``): an engine built from the same ONNX artifact.

fp32 / fp16 engines are built from the fp32 ONNX; int8 engines either from the INT8 QDQ ONNX
(explicit quantization: the scales come from the ONNX) or from the fp32 ONNX with an entropy
calibrator fed by calibration batches, whose table is kept in a calibration cache file so a
rebuild needs no data. Engines are cached beside the cache dir keyed by the ONNX sha256, the
precision and the TensorRT version.

Needs an NVIDIA GPU, the ``tensorrt`` Python package and ``pycuda`` (``pip install
'sonoflow[tensorrt]'``). Where they are missing, :class:`TrtRuntime` raises
:class:`~sonoflow.models.errors.BackendUnavailable` naming what is missing, before touching
anything else. This module imports neither at module level.

Not run on a GPU in this repository's CI (no GPU on the build machine): see docs/models.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from sonoflow.models.card import ModelCard, read_card
from sonoflow.models.errors import BackendUnavailable, ModelError
from sonoflow.models.runtime.base import Runtime

log = logging.getLogger(__name__)

TRT_PRECISIONS = ("fp32", "fp16", "int8")


def import_tensorrt():
    """Import ``tensorrt`` and ``pycuda.driver`` or say exactly what is missing.

    Returns:
        ``(tensorrt module, pycuda.driver module)``.

    Raises:
        BackendUnavailable: a package is not installed, or CUDA has no device.
    """
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailable(
            "backend 'tensorrt' needs the TensorRT Python package and an NVIDIA GPU; "
            f"`import tensorrt` failed ({e}). Install it with pip install 'sonoflow[tensorrt]' "
            "on a GPU machine, or use --backend ort-cpu") from e
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise BackendUnavailable(
            f"backend 'tensorrt' needs pycuda for device buffers; `import pycuda.driver` "
            f"failed ({e}). pip install 'sonoflow[tensorrt]'") from e
    try:
        cuda.init()
        n = cuda.Device.count()
    except cuda.Error as e:
        raise BackendUnavailable(f"backend 'tensorrt': CUDA did not initialise ({e}); is an "
                                 f"NVIDIA driver installed?") from e
    if n == 0:
        raise BackendUnavailable("backend 'tensorrt': CUDA reports no GPU")
    return trt, cuda


def engine_path(cache_dir: Path, card: ModelCard, precision: str, trt_version: str) -> Path:
    """Where the engine for this artifact/precision/TensorRT version is cached."""
    return cache_dir / f"{card.id}-{card.sha256[:12]}-{precision}-trt{trt_version}.engine"


def _make_calibrator(trt, cuda, batches: Iterable[np.ndarray] | None, cache_file: Path):
    """An ``IInt8EntropyCalibrator2`` over ``batches`` (float32 NCHW) with a cache file."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self._batches = iter(batches or [])
            self._device = None
            self._batch_size = 1

        def get_batch_size(self):
            return self._batch_size

        def get_batch(self, names):
            try:
                batch = np.ascontiguousarray(next(self._batches), dtype=np.float32)
            except StopIteration:
                return None
            self._batch_size = batch.shape[0]
            if self._device is None or self._device_nbytes < batch.nbytes:
                self._device = cuda.mem_alloc(batch.nbytes)
                self._device_nbytes = batch.nbytes
            cuda.memcpy_htod(self._device, batch)
            return [int(self._device)]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.exists() else None

        def write_calibration_cache(self, cache):
            cache_file.write_bytes(bytes(cache))

    return EntropyCalibrator()


def build_engine(onnx_path: Path, card: ModelCard, precision: str, cache_dir: Path,
                 calibration: Iterable[np.ndarray] | None = None,
                 workspace_bytes: int = 1 << 30) -> bytes:
    """Build (or load from ``cache_dir``) a serialized TensorRT engine.

    Args:
        onnx_path: the ONNX artifact (fp32, or int8 QDQ for explicit int8).
        card: its card.
        precision: ``"fp32"`` | ``"fp16"`` | ``"int8"``.
        cache_dir: where engines and calibration caches are kept.
        calibration: float32 NCHW batches for implicit int8 from an fp32 ONNX (unused when
            the calibration cache exists or the ONNX is already QDQ).
        workspace_bytes: builder workspace limit.

    Returns:
        The serialized engine.

    Raises:
        BackendUnavailable: TensorRT/pycuda/GPU missing; int8 without calibration data or
            cache; the builder failed.
        ModelError: the ONNX parser rejected the file.
    """
    trt, cuda = import_tensorrt()
    if precision not in TRT_PRECISIONS:
        raise BackendUnavailable(f"tensorrt precision {precision!r}; expected {TRT_PRECISIONS}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = engine_path(cache_dir, card, precision, trt.__version__)
    if out.exists():
        return out.read_bytes()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        if card.precision != "int8":  # fp32 graph: implicit quantization, needs a calibrator
            cache_file = cache_dir / f"{card.id}-{card.sha256[:12]}.calib"
            if calibration is None and not cache_file.exists():
                raise BackendUnavailable(
                    f"{onnx_path}: int8 from an fp32 ONNX needs calibration batches or the "
                    f"calibration cache {cache_file}; pass calibration=..., or load the "
                    f"{card.id}-int8.onnx (QDQ) artifact instead")
            config.int8_calibrator = _make_calibrator(trt, cuda, calibration, cache_file)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailable(f"{onnx_path}: TensorRT could not build a {precision} engine "
                                 f"(see the TensorRT log above)")
    data = bytes(serialized)
    out.write_bytes(data)
    return data


class TrtRuntime(Runtime):
    """A TensorRT engine with device buffers, run synchronously on one CUDA stream.

    Args:
        onnx_path: the ONNX artifact the engine is built from.
        precision: engine precision (default: the artifact's).
        cache_dir: engine cache (default ``$SONOFLOW_CACHE`` or ``~/.cache/sonoflow/trt``).
        calibration: batches for int8 calibration from an fp32 ONNX.
        card: the card, when the caller already read it.

    Raises:
        BackendUnavailable: no TensorRT, pycuda or GPU (raised first, before reading files).
    """

    backend = "tensorrt"

    def __init__(self, onnx_path: str | Path, precision: str | None = None,
                 cache_dir: str | Path | None = None,
                 calibration: Iterable[np.ndarray] | None = None, threads: int = 1,
                 card: ModelCard | None = None):
        trt, cuda = import_tensorrt()
        onnx_path = Path(onnx_path)
        card = card or read_card(onnx_path)
        precision = precision or card.precision
        default_cache = Path(os.environ.get("SONOFLOW_CACHE", Path.home() / ".cache" / "sonoflow"))
        cache_dir = Path(cache_dir) if cache_dir else default_cache / "trt"
        self._cuda = cuda
        self._ctx = cuda.Device(0).make_context()
        try:
            data = build_engine(onnx_path, card, precision, cache_dir, calibration)
            self._engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(data)
            self._context = self._engine.create_execution_context()
            self._stream = cuda.Stream()
        except BaseException:
            self._ctx.pop()
            raise
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        self._trt = trt
        self._buffers: dict[str, tuple] = {}
        super().__init__(card, precision, inputs, outputs)
        self._ctx.pop()

    def _device(self, name: str, nbytes: int):
        buf = self._buffers.get(name)
        if buf is None or buf[1] < nbytes:
            buf = (self._cuda.mem_alloc(nbytes), nbytes)
            self._buffers[name] = buf
        return buf[0]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy inputs to the device, execute, copy outputs back. See :meth:`Runtime.run`."""
        self.check_inputs(inputs)
        cuda, trt = self._cuda, self._trt
        self._ctx.push()
        try:
            for name in self.input_names:
                host = np.ascontiguousarray(inputs[name], dtype=np.float32)
                self._context.set_input_shape(name, host.shape)
                dev = self._device(name, host.nbytes)
                cuda.memcpy_htod_async(dev, host, self._stream)
                self._context.set_tensor_address(name, int(dev))
            hosts = {}
            for name in self.output_names:
                shape = tuple(self._context.get_tensor_shape(name))
                dtype = trt.nptype(self._engine.get_tensor_dtype(name))
                hosts[name] = cuda.pagelocked_empty(shape, dtype)
                dev = self._device(name, hosts[name].nbytes)
                self._context.set_tensor_address(name, int(dev))
            if not self._context.execute_async_v3(self._stream.handle):
                raise ModelError(f"{self.card.id}: TensorRT execute_async_v3 failed")
            for name in self.output_names:
                cuda.memcpy_dtoh_async(hosts[name], self._buffers[name][0], self._stream)
            self._stream.synchronize()
        finally:
            self._ctx.pop()
        return {k: np.array(v, dtype=np.float32) for k, v in hosts.items()}

    def close(self) -> None:
        if getattr(self, "_ctx", None) is not None:
            self._buffers = {}
            self._context = None
            self._engine = None
            self._ctx.detach()
            self._ctx = None
