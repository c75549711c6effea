"""``sonoflow eval`` building blocks: reports from known predictions, plots, real-data
classifier evaluation through the ONNX runtime, k-fold folds and the command's model choice."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pytest

from sonoflow.stream.errors import ConfigError
from sonoflow.training import command_eval, evaluate

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


def test_classifier_report_perfect_and_unknown_features():
    t = np.array([0, 1, 2, 3, 4, 4])
    probs = np.eye(5)[t] * 0.9 + 0.02
    mal = np.isin(t, [2, 3]).astype(float)
    feats = np.zeros((6, 7))
    feats[0, 0] = 1
    feats[3, 3] = np.nan  # unknown label: excluded from that feature's metrics
    fprob = np.nan_to_num(feats, nan=0.5)
    rep = evaluate.classifier_report(probs, mal * 0.8 + 0.1, fprob, t, mal, feats,
                                     np.array([5, 12, 20, 30, np.nan, np.nan]), n_boot=50)
    assert rep["type"]["accuracy"] == 1.0
    assert rep["type"]["accuracy_by_size"]["lt10mm"] == {"accuracy": 1.0, "n": 1}
    assert rep["malignancy"]["auc"]["value"] == 1.0
    assert rep["features"]["anechoic"]["auc"] == 1.0
    assert rep["features"]["halo_target"]["n"] == 5
    assert rep["features"]["mosaic"]["auc"] is None  # no positives: undefined, not invented


def test_classifier_report_counts_mistakes():
    t = np.array([0, 0, 1, 1])
    probs = np.eye(5)[[0, 1, 1, 1]]
    rep = evaluate.classifier_report(probs, np.zeros(4), np.zeros((4, 7)), t, np.zeros(4),
                                     np.zeros((4, 7)), n_boot=20)
    assert rep["type"]["accuracy"] == 0.75
    assert rep["type"]["confusion_matrix"][0][:2] == [1, 1]
    assert rep["malignancy"]["auc"]["value"] is None


def test_plots_are_written(tmp_path):
    t = np.array([0, 1, 2, 3, 4] * 4)
    rng = np.random.default_rng(0)
    probs = evaluate.softmax(np.eye(5)[t] * 2 + rng.normal(size=(20, 5)))
    mal = np.isin(t, [2, 3]).astype(float)
    pm = np.clip(mal * 0.7 + rng.uniform(0, 0.3, 20), 0, 1)
    rep = evaluate.classifier_report(probs, pm, np.zeros((20, 7)), t, mal, np.zeros((20, 7)),
                                     n_boot=20)
    paths = evaluate.classifier_plots(rep, {"type_probs": probs, "malignancy": pm}, t, mal,
                                      tmp_path, "x", "test")
    for p in paths:
        img = cv2.imread(str(p))
        assert img is not None and img.shape[0] > 200 and img.std() > 5


def test_write_json_turns_nan_into_null(tmp_path):
    import json

    p = evaluate.write_json(tmp_path / "a.json", {"a": float("nan"), "b": np.int64(3),
                                                  "c": np.array([1.5, np.inf])})
    assert json.loads(p.read_text()) == {"a": None, "b": 3, "c": [1.5, None]}


def _real_folder(root: Path, n: int = 6) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        img = rng.integers(60, 120, (120, 160), dtype=np.uint8)
        mask = np.zeros((120, 160, 3), np.uint8)
        malignant = i % 2 == 1
        cv2.circle(img, (80, 60), 15, 30 if malignant else 200, -1)
        cv2.circle(mask, (80, 60), 15, (0, 0, 255) if malignant else (0, 255, 0), -1)
        cv2.imwrite(str(root / "images" / f"{i}.png"), img)
        cv2.imwrite(str(root / "masks" / f"{i}.png"), mask)


def test_classifier_on_real_through_onnx(tmp_path):
    torch = pytest.importorskip("torch")
    from sonoflow.models import runtime
    from sonoflow.training.data.real import load_real_dataset
    from sonoflow.training.tasks import lesion_classifier as task

    cfg = task.load_config(CONFIGS / "lesion_classifier_smoke.toml")
    torch.manual_seed(0)
    path = task.export_fp32(task.build_model(cfg), cfg, {"scale": 1 / 255, "mean": 0.3,
                                                        "std": 0.2}, tmp_path / "w", {})
    _real_folder(tmp_path / "real")
    items = load_real_dataset(tmp_path / "real")
    with runtime.load(path, "ort-cpu", "fp32") as rt:
        probs = evaluate.classifier_on_real(rt, items)
    assert probs["type_probs"].shape == (6, 5)
    assert probs["malignant"].tolist() == [0, 1, 0, 1, 0, 1]
    rep = evaluate.malignancy_auc_report(probs["malignant"], probs["malignancy"], n_boot=50)
    assert rep["n_malignant"] == 3 and rep["n_benign"] == 3
    assert 0.0 <= rep["auc"]["value"] <= 1.0


def test_stratified_folds():
    pytest.importorskip("torch")
    from sonoflow.training.tasks.lesion_classifier import stratified_folds

    y = np.array([0] * 10 + [1] * 8)
    f = stratified_folds(y, 6, seed=0)
    for k in range(6):
        assert (f == k).sum() == 3
        assert 1 <= y[f == k].sum() <= 2
    with pytest.raises(ConfigError, match="expected 2 <= k"):
        stratified_folds(y, 1)


@pytest.mark.slow
def test_kfold_real_smoke(tmp_path):
    torch = pytest.importorskip("torch")
    from sonoflow.training.tasks import lesion_classifier as task

    cfg = task.load_config(CONFIGS / "lesion_classifier_smoke.toml")
    torch.manual_seed(0)
    model = task.build_model(cfg)
    task.save_checkpoint(tmp_path / "best.pt", model=model.state_dict(),
                         normalisation={"scale": 1 / 255, "mean": 0.3, "std": 0.2})
    _real_folder(tmp_path / "real")
    rep = task.kfold_real(cfg, tmp_path / "best.pt", tmp_path / "real", k=3, steps=3, batch=4,
                          n_boot=30, progress=False)
    assert rep["n_lesions"] == 6 and len(rep["lesions"]) == 6
    assert all(0 <= r["p_finetuned"] <= 1 for r in rep["lesions"])
    assert rep["synthetic_only"]["n_malignant"] == 3


def test_pick_models_rejects_unknown_and_duplicates():
    with pytest.raises(ConfigError, match="at most one"):
        command_eval._pick_models(["lesion-cls-v1", "lesion-cls-v2"], "fp32")
    with pytest.raises(ConfigError, match="at most one"):
        command_eval._pick_models(["resnet"], "fp32")
    assert command_eval._pick_models(["frame-v9"], "fp32") == (None, "frame-v9")


def test_eval_command_missing_data(tmp_path):
    p = argparse.ArgumentParser()
    command_eval.add_arguments(p)
    args = p.parse_args(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    with pytest.raises(ConfigError, match="no such file"):
        command_eval.run(args)


@pytest.mark.slow
def test_evaluate_sim_folder_classifier(tmp_path):
    """A simulated npz clip with truth, evaluated by a (random) exported classifier."""
    torch = pytest.importorskip("torch")
    import json

    from sonoflow.stream.sim.export import write_clip
    from sonoflow.training.tasks import lesion_classifier as task

    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips, 4242, 3, fmt="npz", height=240, width=320, events=False, n_lesions=3,
               lesion_classes=["cyst", "hcc", "metastasis"], lesion_diameters_mm=[25.0])
    cfg = task.load_config(CONFIGS / "lesion_classifier_smoke.toml")
    torch.manual_seed(0)
    task.export_fp32(task.build_model(cfg), cfg, {"scale": 1 / 255, "mean": 0.3, "std": 0.2},
                     tmp_path / "w", {})
    rep = evaluate.evaluate_sim_folder(clips, tmp_path / "out", "lesion-cls-smoke", None,
                                       n_boot=20, search=[tmp_path / "w"])
    truth = json.loads((clips / "sim_4242.gt.json").read_text())
    n_visible = sum(len(f["lesions"]) for f in truth["frames"])
    assert rep["classifier"]["n"] == n_visible > 0
    assert (tmp_path / "out" / "eval.json").exists()
    assert (tmp_path / "out" / "classifier_confusion.png").stat().st_size > 1000
    n_hcc = sum(les["class"] == "hcc" for f in truth["frames"] for les in f["lesions"])
    # an HCC's halo is not in the JSON truth: those rows are excluded, not guessed
    assert rep["classifier"]["features"]["halo_target"]["n"] == n_visible - n_hcc
    assert rep["classifier"]["features"]["anechoic"]["n"] == n_visible
