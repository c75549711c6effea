"""Model cards, registry, preprocessing, postprocessing and the frame network's shape/budget.

Also holds the tiny-model builders the runtime and infer tests load (``tiny_frame_artifact``,
``tiny_classifier_artifact``): random-weight networks exported with real cards, so the code
paths are the shipped ones without depending on trained weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sonoflow.models.card import (
    CARD_KEY,
    InputSpec,
    ModelCard,
    read_card,
    sidecar_path,
)
from sonoflow.models.errors import CardError, InputContractError, ModelError
from sonoflow.models.postprocess import decode_detections, heatmap_peaks, instance_mask, nms
from sonoflow.models.preprocess import crop_square, letterbox, normalise
from sonoflow.models.registry import available, resolve

NORM = {"scale": 1 / 255, "mean": 0.2, "std": 0.25}
TINY = {"widths": (8, 8, 16, 16, 24), "depths": (1, 1, 1, 1), "expand": 2.0, "fpn": 16,
        "head": 16}


def frame_card(model_id: str = "frame-test", precision: str = "fp32", hflip: bool = True,
               **kw) -> ModelCard:
    from sonoflow.training.tasks.frame import frame_card as make

    cfg = {"model": {"id": model_id, "normalisation": NORM, "kwargs": {}},
           "data": {"train_seeds": [0, 1], "val_seeds": [2, 3], "heldout_seeds": [4, 5]}}
    card = make(cfg, precision, 1, 0.01, {}, 0.3, checkpoint=f"{model_id}.pt",
                threshold_hflip=0.28 if hflip else None)
    for k, v in kw.items():
        setattr(card, k, v)
    return card


def tiny_frame_artifact(folder: Path, model_id: str = "frame-test", seed: int = 0,
                        hflip: bool = True):
    """Export a random-weight tiny FrameNet as ``<id>-fp32.onnx`` + card + ``<id>.pt``
    (``hflip``: the card carries a threshold for the hflip test-time augmentation)."""
    import torch

    from sonoflow.models.arch.frame_net import FrameNet
    from sonoflow.training.checkpoint import save_checkpoint
    from sonoflow.training.export import export_onnx

    torch.manual_seed(seed)
    model = FrameNet(**TINY).eval()
    card = export_onnx(model, frame_card(model_id, hflip=hflip), folder / f"{model_id}-fp32.onnx")
    save_checkpoint(folder / f"{model_id}.pt", model, {"name": "frame_net", "kwargs": TINY},
                    {}, 0, card=card.to_dict())
    return folder / f"{model_id}-fp32.onnx", card, model


def tiny_classifier_artifact(folder: Path, model_id: str = "cls-test"):
    """A random-weight lesion classifier with a card shaped like the shipped one."""
    import torch

    from sonoflow.models.arch.lesion_classifier import (
        INPUT_NAME,
        LESION_FEATURES,
        LESION_TYPES,
        LesionClassifier,
    )
    from sonoflow.training.export import export_onnx

    torch.manual_seed(1)
    model = LesionClassifier(widths=(8, 8, 8, 8, 8)).eval()
    model.output_names = ("type_logits", "malignancy_logit", "feature_logits")
    card = ModelCard(id=model_id, task="lesion_classifier", precision="fp32",
                     input=InputSpec(name=INPUT_NAME, shape=[-1, 1, 64, 64], normalisation=NORM,
                                     resize="crop", crop_margin=1.5),
                     outputs={"type_logits": "(N, 5)", "malignancy_logit": "(N, 1)",
                              "feature_logits": "(N, 7)"},
                     class_names={"type": list(LESION_TYPES), "features": list(LESION_FEATURES)},
                     extra={"crop": {"min_side_px": 12, "size_px": 64}})
    export_onnx(model, card, folder / f"{model_id}-fp32.onnx")
    return folder / f"{model_id}-fp32.onnx", card


# ------------------------------------------------------------------------------ cards ----


def test_card_round_trip_and_sidecar(tmp_path):
    card = frame_card()
    again = ModelCard.from_json(card.to_json())
    assert again == card
    path = card.save(tmp_path / "x.card.json")
    assert ModelCard.load(path).input.normalisation == NORM
    assert sidecar_path(tmp_path / "frame-v1-int8.onnx").name == "frame-v1-int8.card.json"


@pytest.mark.parametrize("field, value, needle", [
    ("task", "segmentation", "task"),
    ("precision", "int4", "precision"),
    ("outputs", {}, "outputs"),
])
def test_card_rejects_bad_values(field, value, needle):
    data = frame_card().to_dict()
    data[field] = value
    with pytest.raises(CardError, match=needle):
        ModelCard.from_dict(data)


def test_card_rejects_unknown_keys_and_channel_mismatch():
    data = frame_card().to_dict()
    data["colour"] = "blue"
    with pytest.raises(CardError, match="unknown card key"):
        ModelCard.from_dict(data)
    data = frame_card().to_dict()
    data["input"]["channels"] = 3
    with pytest.raises(CardError, match="channels"):
        ModelCard.from_dict(data)


def test_registry_resolves_and_lists_what_exists(tmp_path):
    path, card, _ = tiny_frame_artifact(tmp_path)
    got_path, got = resolve("frame-test", "fp32", [tmp_path])
    assert got_path == path and got.sha256 == card.sha256 and len(card.sha256) == 64
    assert ("frame-test", "fp32", path) in available([tmp_path])
    with pytest.raises(ModelError, match=r"available: \['frame-test-fp32'\]"):
        resolve("frame-test", "int8", [tmp_path])


def test_card_embedded_and_sha_checked(tmp_path):
    import onnx

    path, card, _ = tiny_frame_artifact(tmp_path)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    embedded = ModelCard.from_json(meta[CARD_KEY])
    assert embedded.id == "frame-test" and embedded.sha256 == ""
    sidecar_path(path).unlink()  # the embedded copy alone is enough
    assert read_card(path).sha256 == card.sha256
    bad = card.to_dict()
    bad["sha256"] = "0" * 64
    sidecar_path(path).write_text(json.dumps(bad))
    with pytest.raises(CardError, match="does not match"):
        read_card(path)


# ------------------------------------------------------------------------- preprocess ----


@pytest.mark.parametrize("frame_hw, box", [
    ((480, 640), (100, 40, 540, 420)),   # wide sector box
    ((480, 640), (250, 0, 390, 480)),    # tall box
    ((300, 400), None),                  # whole frame
])
def test_letterbox_maps_boxes_both_ways(frame_hw, box):
    img = np.zeros(frame_hw, np.uint8)
    img[150:190, 300:330] = 200
    canvas, lb = letterbox(img, box, (256, 256))
    assert canvas.shape == (256, 256) and canvas.dtype == np.uint8
    orig = np.array([[300, 150, 330, 190]], np.float32)
    inp = lb.to_input_xyxy(orig)
    np.testing.assert_allclose(lb.to_original_xyxy(inp), orig, atol=1e-3)
    if box is None or (box[0] <= 300 and box[2] >= 330):
        x0, y0, x1, y1 = np.round(inp[0]).astype(int)
        inside = canvas[y0 + 2:y1 - 2, x0 + 2:x1 - 2]
        assert inside.size and inside.min() > 150  # the bright block landed where mapped


def test_letterbox_blanks_outside_valid_mask_and_rejects_empty_box():
    img = np.full((100, 100), 90, np.uint8)
    mask = np.zeros((100, 100), bool)
    mask[:, :50] = True
    canvas, lb = letterbox(img, None, (64, 64), valid_mask=mask)
    assert canvas[:, :30].max() == 90 and canvas[:, 34:].max() == 0
    with pytest.raises(InputContractError, match="empty"):
        letterbox(img, (50, 50, 50, 80), (64, 64))


def test_warp_to_original_lands_on_the_right_pixels():
    img = np.zeros((480, 640), np.uint8)
    _, lb = letterbox(img, (100, 40, 540, 420), (256, 256))
    plane = np.zeros((128, 128), np.float32)  # the mask grid (stride 2)
    box = lb.to_input_xyxy(np.array([[300, 200, 360, 260]], np.float32))[0] / 2
    x0, y0, x1, y1 = np.round(box).astype(int)
    plane[y0:y1, x0:x1] = 1.0
    back = lb.warp_to_original(plane, (480, 640)) > 0.5
    ys, xs = np.nonzero(back)
    assert abs(xs.min() - 300) <= 3 and abs(xs.max() - 359) <= 3
    assert abs(ys.min() - 200) <= 3 and abs(ys.max() - 259) <= 3


def test_crop_square_matches_the_classifier_training_crop():
    from sonoflow.training.data.sim_crops import CropSpec, crop_box

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (240, 320), dtype=np.uint8)
    for box in [(10, 20, 40, 35), (300, 200, 330, 240), (-5, -5, 8, 8), (100, 100, 103, 104)]:
        ours = crop_square(img, box, margin=1.5, size_px=64, min_side_px=12)
        theirs = crop_box(img, box, CropSpec(margin=1.5, size_px=64, min_side_px=12))
        np.testing.assert_array_equal(ours, theirs)


def test_normalise_follows_the_card():
    spec = InputSpec(name="image", shape=[1, 1, 4, 4], normalisation=NORM)
    x = normalise(np.full((4, 4), 255, np.uint8), spec)
    assert x.shape == (1, 1, 4, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x, (1.0 - 0.2) / 0.25, rtol=1e-6)


# ------------------------------------------------------------------------ postprocess ----


def test_decode_detections_recovers_boxes():
    hm = np.zeros((64, 64), np.float32)
    size = np.zeros((2, 64, 64), np.float32)
    off = np.zeros((2, 64, 64), np.float32)
    truth = [(100.0, 60.0, 30.0, 20.0, 0.9), (40.0, 200.0, 8.0, 8.0, 0.6)]  # cx, cy, w, h, p
    for cx, cy, w, h, p in truth:
        ix, iy = int(cx // 4), int(cy // 4)
        hm[iy, ix] = p
        hm[iy, ix + 1] = p * 0.5  # a shoulder the max-pool NMS must suppress
        size[:, iy, ix] = (w, h)
        off[:, iy, ix] = (cx / 4 - ix, cy / 4 - iy)
    det = decode_detections(hm, size, off, 4.0, threshold=0.3)
    assert len(det) == 2
    np.testing.assert_allclose(det.confidence, [0.9, 0.6])
    np.testing.assert_allclose(det.xyxy_px[0], [85, 50, 115, 70], atol=1e-4)
    np.testing.assert_allclose(det.center_px[1], [40, 200], atol=1e-4)
    assert len(decode_detections(hm, size, off, 4.0, threshold=0.95)) == 0


def test_peaks_and_nms():
    hm = np.zeros((8, 8), np.float32)
    hm[2, 2], hm[2, 3], hm[6, 6] = 0.8, 0.7, 0.5
    ys, xs, s = heatmap_peaks(hm, 0.1, 10)
    assert list(zip(ys, xs, strict=True)) == [(2, 2), (6, 6)]
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    assert list(nms(boxes, np.array([0.9, 0.8, 0.7]), 0.5)) == [0, 2]


def test_instance_mask_assigns_ids_by_box_order():
    lesion = np.zeros((20, 20), bool)
    lesion[2:8, 2:8] = lesion[12:18, 12:18] = True
    ids = instance_mask(lesion, np.array([[10, 10, 20, 20], [0, 0, 10, 10]], np.float32))
    assert set(np.unique(ids[12:18, 12:18])) == {1} and set(np.unique(ids[2:8, 2:8])) == {2}
    assert ids[0, 0] == 0


# ------------------------------------------------------------------------------ arch ----


def test_frame_net_shapes_and_budget():
    import torch

    from sonoflow.models.arch.frame_net import OUTPUT_NAMES, FrameNet
    from sonoflow.training.tasks.frame import count_gflops

    model = FrameNet().eval()
    outs = model(torch.zeros(1, 1, 256, 256))
    shapes = {n: tuple(o.shape) for n, o in zip(OUTPUT_NAMES, outs, strict=True)}
    assert shapes == {"heatmap": (1, 1, 64, 64), "size": (1, 2, 64, 64),
                      "offset": (1, 2, 64, 64), "lesion_mask": (1, 1, 128, 128),
                      "liver_mask": (1, 1, 128, 128), "steatosis": (1, 4), "fibrosis": (1, 5)}
    assert float(outs[5].detach().sum()) == pytest.approx(1.0, abs=1e-5)
    assert count_gflops(model) <= 0.5  # issue 5's budget


def test_pruned_model_rebuilds_from_its_state_dict():
    import torch

    from sonoflow.models.arch.blocks import conform_to_state_dict
    from sonoflow.models.arch.frame_net import FrameNet
    from sonoflow.training.prune import prune_channels

    torch.manual_seed(0)
    model = FrameNet(**TINY).eval()
    keep = [model.hm, model.wh, model.off, model.mask_out, model.steatosis, model.fibrosis]
    stats = prune_channels(model, 0.5, torch.zeros(1, 1, 256, 256), keep)
    assert stats["params_after"] < stats["params_before"]
    again = conform_to_state_dict(FrameNet(**TINY), model.state_dict())
    again.load_state_dict(model.state_dict())
    x = torch.randn(1, 1, 256, 256)
    for a, b in zip(model(x), again.eval()(x), strict=True):
        torch.testing.assert_close(a, b)


def test_merge_hflip_mirrors_maps_back_and_keeps_the_plain_offsets():
    from sonoflow.models.postprocess import heatmap_threshold_key, merge_hflip

    rng = np.random.default_rng(0)
    plain = {"heatmap": rng.random((1, 1, 8, 8)), "size": rng.random((1, 2, 8, 8)),
             "offset": rng.random((1, 2, 8, 8)), "lesion_mask": rng.random((1, 1, 16, 16)),
             "liver_mask": rng.random((1, 1, 16, 16)), "steatosis": np.array([[1.0, 0, 0, 0]]),
             "fibrosis": np.array([[0, 1.0, 0, 0, 0]])}
    # a network that sees the mirror and answers with the mirror of its plain answer
    mirrored = {k: (v[..., ::-1] if v.ndim == 4 else v) for k, v in plain.items()}
    mirrored["steatosis"] = np.array([[0, 0, 1.0, 0]])
    out = merge_hflip(plain, mirrored)
    for k in ("heatmap", "size", "lesion_mask", "liver_mask"):
        np.testing.assert_allclose(out[k], plain[k])
    np.testing.assert_array_equal(out["offset"], plain["offset"])
    np.testing.assert_allclose(out["steatosis"], [[0.5, 0, 0.5, 0]])
    assert heatmap_threshold_key("none") == "heatmap"
    assert heatmap_threshold_key("hflip") == "heatmap_hflip"
    with pytest.raises(ValueError, match="vflip"):
        heatmap_threshold_key("vflip")
