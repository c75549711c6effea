"""Static INT8 quantization (ONNX Runtime QDQ), calibrated on simulator frames.

Weights are int8 (per-channel by default), activations uint8, in QDQ format, so the same file
runs on ONNX Runtime CPU and can be built into a TensorRT int8 engine (explicit
quantization). ``reduce_range`` quantizes weights to 7 bits, which avoids the u8 x s8
saturation of AVX2 (non-VNNI) ``vpmaddubsw`` at the cost of one bit of weight resolution.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from sonoflow.models.card import ModelCard
from sonoflow.training.export import embed_card

CALIBRATION_METHODS = {"minmax": CalibrationMethod.MinMax,
                       "percentile": CalibrationMethod.Percentile,
                       "entropy": CalibrationMethod.Entropy}


class ArrayReader(CalibrationDataReader):
    """Feeds calibration inputs one at a time (batch 1, as exported)."""

    def __init__(self, input_name: str, inputs: np.ndarray):
        self._it = iter([{input_name: inputs[i:i + 1]} for i in range(len(inputs))])

    def get_next(self):
        return next(self._it, None)


def quantize_int8(fp32_path: str | Path, out_path: str | Path, card: ModelCard,
                  calibration: np.ndarray, per_channel: bool = True,
                  reduce_range: bool = False, method: str = "minmax") -> ModelCard:
    """Quantize ``fp32_path`` to an INT8 QDQ model at ``out_path`` and embed ``card``.

    Args:
        fp32_path: the fp32 ONNX.
        out_path: destination ``<id>-int8.onnx``.
        card: the card to embed (its precision is set to ``"int8"``).
        calibration: (N, 1, H, W) float32 normalised inputs.
        per_channel: per-output-channel weight scales.
        reduce_range: 7-bit weights (see the module docstring).
        method: ``"minmax"`` | ``"percentile"`` | ``"entropy"``.

    Returns:
        The embedded card with its sha256.
    """
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out_path), ArrayReader(card.input.name, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method=CALIBRATION_METHODS[method])
    card.precision = "int8"
    card.extra = {**card.extra, "quantization": {
        "format": "QDQ", "weights": "int8 per-channel" if per_channel else "int8 per-tensor",
        "activations": "uint8", "reduce_range": reduce_range, "calibration": method,
        "calibration_frames": int(len(calibration)),
        "tool": "onnxruntime.quantization.quantize_static"}}
    return embed_card(out_path, card)
