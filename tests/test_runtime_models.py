"""The model runtime protocol: ONNX Runtime CPU against torch eager, precision and backend
refusals (never a silent fallback), the input contract, and the GPU backends up to their
import boundary (no GPU on the build machine)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sonoflow.models import runtime
from sonoflow.models.errors import BackendUnavailable, InputContractError

_spec = importlib.util.spec_from_file_location("models_helpers",
                                               Path(__file__).with_name("test_models.py"))
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return helpers.tiny_frame_artifact(tmp_path_factory.mktemp("weights"))


def test_ort_cpu_matches_torch_eager(artifact):
    import torch

    path, card, model = artifact
    x = np.random.default_rng(0).normal(size=(1, 1, 256, 256)).astype(np.float32)
    with runtime.load(path, backend="ort-cpu", precision="fp32", threads=1) as rt:
        assert rt.backend == "ort-cpu" and rt.precision == "fp32"
        assert rt.card.id == "frame-test" and rt.input_names == ["image"]
        got = rt.run({"image": x})
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    for name, r in zip(model.output_names, ref, strict=True):
        np.testing.assert_allclose(got[name], r.numpy(), rtol=1e-3, atol=1e-4)


def test_torch_backend_runs_the_checkpoint_beside_the_onnx(artifact):
    path, card, _ = artifact
    x = np.zeros((1, 1, 256, 256), np.float32)
    with runtime.load(path, backend="torch", threads=1) as t, \
            runtime.load(path, backend="ort-cpu") as o:
        a, b = t.run({"image": x}), o.run({"image": x})
    assert set(a) == set(b)
    np.testing.assert_allclose(a["heatmap"], b["heatmap"], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("backend, precision, needle", [
    ("ort-cpu", "int8", "runs the artifact's own precision"),
    ("torch", "fp16", "fp32 only"),
    ("onnx-magic", "fp32", "unknown backend"),
])
def test_refuses_instead_of_falling_back(artifact, backend, precision, needle):
    path, _, _ = artifact
    with pytest.raises(BackendUnavailable, match=needle):
        runtime.load(path, backend=backend, precision=precision)


@pytest.mark.skipif("CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(),
                    reason="CUDA provider present: the refusal path cannot be exercised")
def test_ort_cuda_unavailable_says_why(artifact):
    path, _, _ = artifact
    with pytest.raises(BackendUnavailable, match="CUDAExecutionProvider"):
        runtime.load(path, backend="ort-cuda")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="TensorRT installed: see the gpu-marked test")
def test_tensorrt_unavailable_stops_at_the_import_boundary(artifact):
    path, _, _ = artifact
    with pytest.raises(BackendUnavailable, match="TensorRT Python package"):
        runtime.load(path, backend="tensorrt", precision="fp16")


@pytest.mark.gpu
def test_tensorrt_engine_matches_ort(artifact, tmp_path):
    pytest.importorskip("tensorrt", reason="needs TensorRT and an NVIDIA GPU")
    path, _, _ = artifact
    x = np.zeros((1, 1, 256, 256), np.float32)
    with runtime.load(path, backend="tensorrt", precision="fp32", cache_dir=tmp_path) as t, \
            runtime.load(path, backend="ort-cpu") as o:
        np.testing.assert_allclose(t.run({"image": x})["heatmap"], o.run({"image": x})["heatmap"],
                                   rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("inputs, needle", [
    ({"image": np.zeros((1, 1, 128, 128), np.float32)}, "shape"),
    ({"image": np.zeros((1, 1, 256, 256), np.float64)}, "dtype"),
    ({"pixels": np.zeros((1, 1, 256, 256), np.float32)}, "inputs"),
])
def test_input_contract_is_checked(artifact, inputs, needle):
    path, _, _ = artifact
    with runtime.load(path) as rt, pytest.raises(InputContractError, match=needle):
        rt.run(inputs)


def test_runtime_import_pulls_no_torch():
    code = ("import sys, sonoflow.models.runtime, sonoflow.models.runtime.ort, "
            "sonoflow.models.runtime.trt, sonoflow.models.runtime.torch_backend, "
            "sonoflow.models.registry, sonoflow.models.preprocess, sonoflow.models.postprocess;"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
