"""End to end on a tiny config: simulate, train one short epoch, resume, export (fp32, INT8,
pruned), and load the exported artifact through the registry and runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
SMOKE = Path(__file__).resolve().parents[1] / "training" / "configs" / "frame_smoke.toml"


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("frame_smoke")
    text = SMOKE.read_text().replace('cache_dir = "runs/cache/frame_smoke"',
                                     f'cache_dir = "{tmp / "cache"}"')
    path = tmp / "frame_smoke.toml"
    path.write_text(text)
    return path


def test_train_resume_export_load(config, tmp_path):
    torch = pytest.importorskip("torch")
    from sonoflow.models import registry, runtime
    from sonoflow.models.runtime.torch_backend import model_from_checkpoint, read_checkpoint
    from sonoflow.training.tasks import frame

    run = tmp_path / "run"
    summary = frame.run(config, run, progress=False)
    assert (run / "best.pt").exists() and (run / "config.toml").read_text() == config.read_text()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["epoch"] == 1 and np.isfinite(rows[-1]["train_loss"])
    held = json.loads((run / "heldout.json").read_text())
    assert held["good_frames"]["n_frames"] > 0 and summary["epochs"] == 1
    # resuming a finished run trains no further epoch and keeps the history
    frame.run(config, run, resume=True, progress=False)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == len(rows)
    # a fresh run in the same folder starts a new log instead of appending to the old one
    frame.run(config, run, progress=False)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == len(rows)

    # a second stage: `base` + `[train] init` grow from this run's weights, recorded by hash
    from sonoflow.models.card import file_sha256
    stage2 = config.parent / "stage2.toml"
    stage2.write_text(f'base = "{config.name}"\n[train]\ninit = "{run / "best.pt"}"\nlr = 0.0005\n'
                      'bn_recalibration_frames = 16\n[export]\nbn_recalibration_frames = 16\n')
    run2 = tmp_path / "run2"
    frame.run(stage2, run2, progress=False)
    # [train] bn_recalibration_frames: each validation recomputed the BatchNorm statistics on
    # the fixed frame set first, and the checkpoint was saved with them; the first stage,
    # without the option, saved its training-time running averages, which differ
    cfg2 = frame.load_config(stage2)
    bn_set = frame.batchnorm_frames(cfg2, frame.load_split(cfg2, "train", 1), 16)
    for ckpt, recalibrated in ((run2 / "best.pt", True), (run / "best.pt", False)):
        m = model_from_checkpoint(read_checkpoint(ckpt))
        saved = {k: v.clone() for k, v in m.state_dict().items() if "running_" in k}
        frame.recalibrate_batchnorm(m, bn_set)
        same = all(torch.allclose(m.state_dict()[k], v, atol=1e-5, rtol=1e-4)
                   for k, v in saved.items())
        assert same == recalibrated, ckpt
    prov = json.loads((run2 / "config.json").read_text())
    first = json.loads((run / "config.json").read_text())
    assert prov["init"]["sha256"] == file_sha256(run / "best.pt") and prov["init"]["epoch"] == 1
    assert prov["config"]["train"]["lr"] == 0.0005
    assert prov["config"]["model"] == first["config"]["model"] and prov["hash"] != first["hash"]
    frame.run(stage2, run2, resume=True, progress=False)  # resuming keeps the init record
    assert json.loads((run2 / "config.json").read_text())["init"] == prov["init"]
    # the second stage exports like the first (its pruned fine-tune ignores `init`)
    rep2 = frame.export_run(run2, stage2, tmp_path / "weights2", prune=True, int8=False,
                            progress=False, checkpoint="last")
    assert set(rep2["artifacts"]) == {"frame-smoke-fp32", "frame-smoke-pruned-fp32"}
    # the last checkpoint, its BatchNorm statistics recomputed on training frames
    assert rep2["checkpoint"].endswith("last.pt")
    bn = rep2["bn_recalibration"]  # at most 16: the smoke training set has fewer good frames
    assert 0 < bn["frames"] <= 16 and bn["layers"] > 0
    # weights of another architecture are refused, naming the file
    stage3 = config.parent / "stage3.toml"
    stage3.write_text(f'base = "{config.name}"\n[model.kwargs]\nfpn = 8\n'
                      f'[train]\ninit = "{run / "best.pt"}"\n')
    with pytest.raises(ValueError, match="best.pt: architecture"):
        frame.run(stage3, tmp_path / "run3", progress=False)

    out = tmp_path / "weights"
    report = frame.export_run(run, config, out, prune=True, int8=True, progress=False)
    assert set(report["artifacts"]) == {"frame-smoke-fp32", "frame-smoke-int8",
                                        "frame-smoke-pruned-fp32", "frame-smoke-pruned-int8"}
    pruned = report["artifacts"]["frame-smoke-pruned-fp32"]
    assert pruned["params"] < report["artifacts"]["frame-smoke-fp32"]["params"]
    _, pcard = registry.resolve("frame-smoke-pruned", "fp32", [out])
    assert pcard.id == "frame-smoke-pruned" and pcard.pruning_ratio == 0.25
    path, card = registry.resolve("frame-smoke", "int8", [out])
    assert card.precision == "int8" and card.extra["quantization"]["format"] == "QDQ"
    assert "ap50" in card.metrics and card.training["config_hash"]
    # one heatmap threshold per test-time augmentation mode, each with its held-out metrics
    assert 0.05 <= card.thresholds["heatmap_hflip"] <= 0.95
    assert "ap50" in card.metrics["tta_hflip"]
    assert report["artifacts"]["frame-smoke-int8"]["heldout_hflip"]["good_frames"]["n_frames"] > 0
    with runtime.load(path, "ort-cpu", "int8") as rt:
        outs = rt.run({"image": np.zeros((1, 1, 256, 256), np.float32)})
    assert outs["heatmap"].shape == (1, 1, 64, 64)


def test_config_base_merges_tables_and_refuses_cycles(tmp_path):
    pytest.importorskip("torch")
    from sonoflow.models.errors import ModelError
    from sonoflow.training.tasks.frame import load_config

    child = tmp_path / "child.toml"
    child.write_text(f'base = "{SMOKE}"\n[data]\ntrain_seeds = [0, 9]\n[train]\nlr = 0.1\n')
    cfg = load_config(child)
    parent = load_config(SMOKE)
    assert cfg["data"]["train_seeds"] == [0, 9] and cfg["train"]["lr"] == 0.1
    # untouched keys of a merged table and untouched tables come from the base
    assert cfg["data"]["val_seeds"] == parent["data"]["val_seeds"]
    assert cfg["model"] == parent["model"] and "base" not in cfg
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('base = "b.toml"\n')
    b.write_text('base = "a.toml"\n')
    with pytest.raises(ModelError, match="cycle"):
        load_config(a)


def test_hard_class_fraction_forces_classes_and_leaves_other_settings_alone():
    from dataclasses import replace

    from sonoflow.training.data.sim_frames import SimFrameSpec, _cache_spec, case_overrides

    base = SimFrameSpec(lesion_boost=1.0)
    hard = replace(base, hard_class_fraction=1.0, hard_classes=("hcc", "metastasis"))
    for seed in range(20):
        a, b = case_overrides(seed, base), case_overrides(seed, hard)
        n = b["n_lesions"]
        assert b.pop("lesion_classes") == [("hcc", "metastasis")[i % 2] for i in range(n)]
        assert a == b  # every other setting of the seed is unchanged
    # at the default the new fields stay out of the cache meta (older caches stay valid)
    assert "hard_class_fraction" not in _cache_spec(base)
    assert _cache_spec(hard)["hard_class_fraction"] == 1.0


def test_batchnorm_recalibration_undoes_skewed_running_statistics():
    torch = pytest.importorskip("torch")
    import importlib.util

    from sonoflow.models.arch.frame_net import FrameNet
    from sonoflow.training.tasks.frame import recalibrate_batchnorm

    spec = importlib.util.spec_from_file_location(
        "models_helpers", Path(__file__).with_name("test_models.py"))
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    torch.manual_seed(0)
    model = FrameNet(**helpers.TINY).eval()
    frames = np.random.default_rng(0).normal(0.3, 0.5, (48, 1, 128, 128)).astype(np.float32)
    x = torch.from_numpy(frames[:4])
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert recalibrate_batchnorm(model, frames, batch_size=16) == len(bns) > 0
    assert not model.training and all(m.momentum == 0.1 for m in bns)
    with torch.no_grad():
        good = model(x)[0].clone()
        for m in bns:  # what a few odd last training batches leave behind
            m.running_mean += 3.0
            m.running_var *= 50.0
        skewed = model(x)[0]
    assert not torch.allclose(skewed, good, atol=1e-3)
    recalibrate_batchnorm(model, frames, batch_size=16)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], good, atol=1e-5, rtol=1e-4)
