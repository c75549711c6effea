"""Lesion classifier: architecture budget, crop contract, labels, checkpoints, ONNX export with
an embedded card, INT8 export, and the runtime reading it back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sonoflow.models.arch.lesion_classifier import (  # noqa: E402
    LESION_FEATURES,
    LESION_TYPES,
    OUTPUT_NAMES,
    LesionClassifier,
    count_gflops,
    count_params,
)
from sonoflow.stream.errors import ConfigError  # noqa: E402
from sonoflow.training.data import sim_crops  # noqa: E402
from sonoflow.training.tasks import lesion_classifier as task  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


def test_shapes_and_budget():
    m = LesionClassifier().eval()
    a, b, c = m(torch.zeros(3, 1, 64, 64))
    assert a.shape == (3, len(LESION_TYPES)) and b.shape == (3, 1)
    assert c.shape == (3, len(LESION_FEATURES))
    g = count_gflops(m)
    assert 0.01 < g <= 0.1, f"classifier costs {g} GFLOPs per crop, budget 0.1"
    assert count_params(m) < 1_000_000


def test_gflops_counts_a_known_layer():
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Flatten(),
                            torch.nn.Linear(4 * 64 * 64, 2))
    expected = 2 * (4 * 64 * 64 * 9 + 2 * 4 * 64 * 64) / 1e9
    assert count_gflops(m) == pytest.approx(expected)


@pytest.mark.parametrize("box,expect_pad", [
    ((20, 20, 40, 40), False),   # inside: 30 px window from 15 to 45
    ((0, 0, 10, 30), True),      # at the corner: part of the window lies outside
])
def test_crop_contract(box, expect_pad):
    img = np.full((100, 120), 200, np.uint8)
    crop = sim_crops.crop_box(img, box, sim_crops.CropSpec(margin=1.5, size_px=64))
    assert crop.shape == (64, 64) and crop.dtype == np.uint8
    assert bool((crop == 0).any()) is expect_pad


def test_crop_is_centred_on_the_box():
    img = np.zeros((200, 200), np.uint8)
    img[90:110, 60:80] = 255  # a 20 px bright square
    crop = sim_crops.crop_box(img, (60, 90, 80, 110), sim_crops.CropSpec(margin=2.0, size_px=64))
    ys, xs = np.nonzero(crop > 128)
    assert abs(xs.mean() - 31.5) < 1.0 and abs(ys.mean() - 31.5) < 1.0
    assert 30 <= xs.max() - xs.min() + 1 <= 34  # 20 px of a 40 px window -> half of 64


@pytest.mark.parametrize("cls,subtype,levels,on", [
    ("cyst", "simple", {}, {"anechoic", "posterior_enhancement", "well_defined"}),
    ("hemangioma", "hyperechoic", {}, {"hyperechoic", "well_defined"}),
    ("hemangioma", "rim", {}, {"well_defined"}),
    ("metastasis", "target", {}, {"halo_target"}),
    ("metastasis", "hypoechoic", {}, {"hypoechoic"}),
    ("metastasis", "hyperechoic", {}, {"hyperechoic", "halo_target"}),
    ("hcc", "nodular", {"halo": 1.0, "level_db": -6.0},
     {"posterior_enhancement", "halo_target", "hypoechoic"}),
    ("hcc", "nodular", {"halo": 0.0, "level_db": 1.0}, {"posterior_enhancement"}),
    ("hcc", "mosaic", {"halo": 0.0, "level_db": -6.0}, {"posterior_enhancement", "mosaic"}),
    ("fat_sparing", "geographic", {}, {"hypoechoic"}),
])
def test_feature_derivation(cls, subtype, levels, on):
    feats = sim_crops.lesion_features(cls, subtype, levels)
    assert {k for k, v in feats.items() if v} == on
    assert list(feats) == list(LESION_FEATURES)


def test_unknown_class_raises():
    with pytest.raises(ConfigError, match="unknown simulator lesion class"):
        sim_crops.lesion_features("abscess", "", {})


def test_config_checks(tmp_path):
    cfg = task.load_config(CONFIGS / "lesion_classifier.toml")
    assert task.config_hash(cfg) == task.config_hash(dict(cfg))
    bad = dict(cfg, data=dict(cfg["data"], test_seeds=list(cfg["data"]["train_seeds"])))
    with pytest.raises(ConfigError, match="overlap"):
        task.check_config(bad)
    (tmp_path / "x.toml").write_text("[model]\nid = 'x'\n")
    with pytest.raises(ConfigError, match="missing"):
        task.load_config(tmp_path / "x.toml")


def test_config_base_and_crop_cache_key(tmp_path):
    parent = task.load_config(CONFIGS / "lesion_classifier.toml")
    child = tmp_path / "child.toml"
    child.write_text(f'base = "{CONFIGS / "lesion_classifier.toml"}"\n'
                     '[data]\ntrain_seeds = [100000, 100500]\n[train]\nepochs = 3\n')
    cfg = task.load_config(child)
    assert cfg["data"]["train_seeds"] == [100000, 100500] and cfg["train"]["epochs"] == 3
    assert {k: v for k, v in cfg["data"].items() if k != "train_seeds"} == \
        {k: v for k, v in parent["data"].items() if k != "train_seeds"}
    assert cfg["train"]["lr"] == parent["train"]["lr"] and "base" not in cfg
    # a different seed range reuses the cached chunks; any crop-making setting does not
    assert task.crop_cache_key(cfg) == task.crop_cache_key(parent)
    other = dict(cfg, data=dict(cfg["data"], n_frames=cfg["data"]["n_frames"] + 1))
    assert task.crop_cache_key(other) != task.crop_cache_key(cfg)
    other = dict(cfg, sampling=dict(cfg["sampling"], negatives_per_frame=2))
    assert task.crop_cache_key(other) != task.crop_cache_key(cfg)
    # the overlap check runs on the merged config
    child.write_text(f'base = "{CONFIGS / "lesion_classifier.toml"}"\n'
                     '[data]\ntest_seeds = [100100, 100200]\n')
    with pytest.raises(ConfigError, match="overlap"):
        task.load_config(child)
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('base = "b.toml"\n')
    b.write_text('base = "a.toml"\n')
    with pytest.raises(ConfigError, match="cycle"):
        task.load_config(a)


def test_clip_overrides_are_seeded_and_valid():
    cfg = task.load_config(CONFIGS / "lesion_classifier.toml")
    a = task.clip_overrides(123, cfg)
    assert a == task.clip_overrides(123, cfg)
    seen = set()
    for s in range(200):
        o = task.clip_overrides(s, cfg)
        assert 1 <= o["n_lesions"] <= 3 and len(o["lesion_classes"]) == o["n_lesions"]
        if "fat_sparing" in o["lesion_classes"]:
            assert o["steatosis_grade"] in (2, 3)
        seen |= set(o["lesion_classes"])
    assert seen == set(task.SIM_CLASSES)


def test_cropset_roundtrip(tmp_path):
    n = 4
    cs = sim_crops.CropSet(np.arange(n * 64 * 64, dtype=np.uint8).reshape(n, 64, 64),
                           np.array([0, 1, 2, 4]), np.array([0, 0, 1, 0], np.float32),
                           np.zeros((n, 7), np.float32), np.arange(n), np.arange(n),
                           np.array(["cyst", "hemangioma", "metastasis", "vessel"]),
                           np.array([5, 12, 20, np.nan], np.float32), {"k": 1})
    back = sim_crops.CropSet.load(cs.save(tmp_path / "c.npz"))
    np.testing.assert_array_equal(back.crops, cs.crops)
    assert back.kind.tolist() == cs.kind.tolist() and back.meta == {"k": 1}
    assert len(sim_crops.CropSet.concat([cs, back.subset(np.array([1, 2]))])) == 6


def test_checkpoint_tag_is_checked(tmp_path):
    torch.save({"format": "other"}, tmp_path / "x.pt")
    with pytest.raises(ConfigError, match="checkpoint tag"):
        task.load_checkpoint(tmp_path / "x.pt")
    task.save_checkpoint(tmp_path / "ok.pt", model={}, epoch=3)
    assert task.load_checkpoint(tmp_path / "ok.pt")["epoch"] == 3


def test_export_onnx_card_and_runtime(tmp_path):
    from sonoflow.models import runtime
    from sonoflow.models.card import read_card
    from sonoflow.models.registry import resolve
    from sonoflow.training.evaluate import predict_crops

    cfg = task.load_config(CONFIGS / "lesion_classifier_smoke.toml")
    torch.manual_seed(0)
    model = task.build_model(cfg).eval()
    norm = {"scale": 1 / 255, "mean": 0.3, "std": 0.2}
    path = task.export_fp32(model, cfg, norm, tmp_path, {"heldout_type_accuracy": 0.5})
    card = read_card(path)
    assert card.task == "lesion_classifier" and card.input.resize == "crop"
    assert card.input.crop_margin == 1.5 and card.sha256
    assert set(card.outputs) == set(OUTPUT_NAMES)
    assert card.class_names["type"] == list(LESION_TYPES)
    p2, c2 = resolve(card.id, "fp32", search=[tmp_path])
    assert p2 == path and c2.extra["crop"]["size_px"] == 64
    crops = np.random.default_rng(0).integers(0, 255, (5, 64, 64), dtype=np.uint8)
    with runtime.load(path, "ort-cpu", "fp32", threads=1) as rt:
        onnx_out = predict_crops(rt, crops)
    torch_out = task.torch_predict(model, crops, norm)
    for k in ("type_probs", "malignancy", "feature_probs"):
        np.testing.assert_allclose(onnx_out[k], torch_out[k], atol=1e-4)
    q = task.export_int8(path, crops, norm, {"note": "test"})
    qcard = read_card(q)
    assert qcard.precision == "int8" and qcard.sha256 != card.sha256
    with runtime.load(q, "ort-cpu", "int8", threads=1) as rt:
        qout = predict_crops(rt, crops)
    assert qout["type_probs"].shape == (5, 5)
    np.testing.assert_allclose(qout["type_probs"].sum(1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_train_resume_and_ship_smoke(tmp_path, monkeypatch):
    """A few simulator clips end to end: crops, one epoch, resume, held-out, fp32 + INT8."""
    import json

    monkeypatch.chdir(tmp_path)  # the smoke config caches crops under runs/ (relative)
    # through a `base` config in another folder: the export must read the run's resolved
    # config.json, since the verbatim config.toml names its base relative to where it was
    cfg_path = tmp_path / "smoke_child.toml"
    cfg_path.write_text(f'base = "{CONFIGS / "lesion_classifier_smoke.toml"}"\n'
                        '[model]\nid = "lesion-cls-smoke"\n')
    summary = task.run(cfg_path, tmp_path / "run", progress=False)
    assert summary["epochs_run"] == 1 and summary["n_train"] > 0
    assert (tmp_path / "run" / "config.toml").read_text() == cfg_path.read_text()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["epoch"] == 1 and 0.0 <= rows[0]["val_type_accuracy"] <= 1.0
    heldout = json.loads((tmp_path / "run" / "heldout.json").read_text())
    assert heldout["n"] > 0 and len(heldout["type"]["confusion_matrix"]) == 5
    exported = json.loads((tmp_path / "run" / "export" / "export.json").read_text())
    assert exported["int8_vs_fp32"]["recommended_precision"] in ("fp32", "int8")
    from sonoflow.models.card import read_card

    card = read_card(tmp_path / "run" / "export" / "lesion-cls-smoke-int8.onnx")
    assert card.metrics["heldout_crops"] == heldout["n"]
    # resume: the finished run has nothing left; a config change is refused
    cfg = task.load_config(cfg_path)
    again = task.train(cfg, tmp_path / "run", resume=True, progress=False)
    assert again["epochs_run"] == 1
    cfg["train"]["lr"] = 0.1
    with pytest.raises(ConfigError, match="config hash"):
        task.train(cfg, tmp_path / "run", resume=True, progress=False)
