"""The ``infer`` stage without sockets, on simulator frames, with tiny random-weight models
exported with real cards (the shipped-model path, independent of trained weights)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from sonoflow.stream.errors import ModelError
from sonoflow.stream.messages import FrameHeader, Packet, PreprocessResult, QualityResult
from sonoflow.stream.stages.infer import InferStage

_spec = importlib.util.spec_from_file_location("models_helpers",
                                               Path(__file__).with_name("test_models.py"))
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    helpers.tiny_frame_artifact(folder)
    helpers.tiny_classifier_artifact(folder)
    return folder


@pytest.fixture(scope="module")
def sim_frame():
    from sonoflow.stream.sim import sample_case, simulate_clip

    case = sample_case(4242, n_lesions=2, ui=True, events=False)
    return next(iter(simulate_clip(case, n_frames=1, height=240, width=320)))


def packet(frame, preprocess: bool = True, keyframe: bool = True) -> Packet:
    h = FrameHeader(stream_id="s", seq=0, frame_index=0, pts=0, time_base=(1, 30),
                    capture_ns=0, pixel_format="gray8")
    arrays = {"image": frame.image}
    if preprocess:
        ys, xs = np.nonzero(frame.sector_mask)
        h.preprocess = PreprocessResult(sector_kind="convex", blanked=True, sector_xyxy_px=(
            int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
        mask = frame.sector_mask.astype(np.uint8) * 255
        arrays = {"image": frame.image & mask, "gray": frame.image & mask, "sector_mask": mask}
    h.quality = QualityResult(score=0.9, keyframe=keyframe)
    for a in arrays.values():
        a.flags.writeable = False  # as received from the wire
    return Packet(header=h, arrays=arrays)


def stage(weights, **cfg) -> InferStage:
    s = InferStage({"frame_model": "frame-test", "classifier_model": "cls-test",
                    "weights_dir": str(weights), "warmup": 1, **cfg})
    s.open()
    return s


@pytest.mark.parametrize("preprocess", [True, False])
def test_fills_infer_result_and_masks(weights, sim_frame, preprocess):
    # random weights: a tiny threshold makes the heatmap yield detections to classify
    s = stage(weights, heatmap_threshold=1e-4)
    out = s.process(packet(sim_frame, preprocess))
    s.close()
    res, H, W = out.header.infer, *sim_frame.image.shape
    assert out.header.status == "analysed"
    assert res.backend == "ort-cpu" and res.precision == "fp32"
    assert set(res.models) == {"frame-test", "cls-test"}
    assert all(len(v) == 12 for v in res.models.values())
    assert list(res.steatosis_probs) == ["S0", "S1", "S2", "S3"]
    assert sum(res.steatosis_probs.values()) == pytest.approx(1.0, abs=1e-3)
    assert list(res.fibrosis_probs) == ["F0", "F1", "F2", "F3", "F4"]
    assert 0.0 <= res.liver_fraction <= 1.0
    lm, lv = out.arrays["lesion_mask"], out.arrays["liver_mask"]
    assert lm.shape == lv.shape == (H, W) and lm.dtype == lv.dtype == np.uint8
    assert set(np.unique(lv)) <= {0, 1}
    assert 1 <= len(res.detections) <= 20
    for d in res.detections:
        x0, y0, x1, y1 = d.xyxy_px
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
        assert list(d.class_probs) == ["cyst", "hemangioma", "metastasis", "hcc", "other"]
        assert sum(d.class_probs.values()) == pytest.approx(1.0, abs=1e-3)
        assert d.label == max(d.class_probs, key=d.class_probs.get)
        assert 0.0 <= d.malignancy <= 1.0 and len(d.features) == 7
        if d.mask_id is not None:
            assert (lm == d.mask_id).any()
    ids = set(np.unique(lm)) - {0}
    assert ids == {d.mask_id for d in res.detections if d.mask_id is not None}


def plant(s: InferStage, pk: Packet, box_px, mask_px, steatosis: int | None = None) -> None:
    """Make the stage's frame network output one peak whose box is ``box_px`` and a lesion
    mask filling ``mask_px`` (both in original-frame pixels, mapped through the letterbox)."""
    x0, y0, x1, y1 = pk.header.preprocess.sector_xyxy_px
    scale = min(256 / (x1 - x0), 256 / (y1 - y0))
    pad = np.array([(256 - round((x1 - x0) * scale)) // 2,
                    (256 - round((y1 - y0) * scale)) // 2] * 2)
    origin = np.array([x0, y0, x0, y0])
    inp = (np.asarray(box_px) - origin) * scale + pad
    m = (((np.asarray(mask_px) - origin) * scale + pad) / 2).astype(int)
    cx, cy = (inp[0] + inp[2]) / 2 / 4, (inp[1] + inp[3]) / 2 / 4
    real = s._frame.run

    def planted(inputs):
        out = {k: np.zeros_like(v) for k, v in real(inputs).items()}
        ix, iy = int(cx), int(cy)
        out["heatmap"][0, 0, iy, ix] = 0.9
        out["size"][0, :, iy, ix] = (inp[2] - inp[0], inp[3] - inp[1])
        out["offset"][0, :, iy, ix] = (cx - ix, cy - iy)
        out["lesion_mask"][0, 0, m[1]:m[3], m[0]:m[2]] = 1.0
        if steatosis is not None:
            out["steatosis"][0, steatosis] = out["fibrosis"][0, 0] = 1.0
        return out

    s._frame.run = planted


def test_boxes_and_masks_map_back_to_original_pixels(weights, sim_frame):
    """A peak planted in the network's output lands at the matching frame pixels."""
    s = stage(weights, classifier_model="", tta="none")
    pk = packet(sim_frame)
    target = np.array([140.0, 120.0, 170.0, 150.0])  # frame pixels, inside the sector
    plant(s, pk, target, target, steatosis=2)
    res = s.process(pk).header.infer
    assert len(res.detections) == 1
    d = res.detections[0]
    np.testing.assert_allclose(d.xyxy_px, target, atol=1.0)
    assert d.label == "lesion" and d.class_probs == {} and d.malignancy is None
    assert d.mask_id == 1
    ys, xs = np.nonzero(pk.arrays["lesion_mask"] == 1)
    assert abs(xs.min() - 140) <= 4 and abs(xs.max() - 169) <= 4
    assert abs(ys.min() - 120) <= 4 and abs(ys.max() - 149) <= 4
    assert max(res.steatosis_probs, key=res.steatosis_probs.get) == "S2"


def test_non_key_frames_pass_untouched(weights, sim_frame):
    s = stage(weights)
    pk = packet(sim_frame, keyframe=False)
    out = s.process(pk)
    assert out.header.infer is None and "lesion_mask" not in out.arrays
    assert out.header.status == "pending"


def test_missing_classifier_fails_open_unless_disabled(weights):
    s = InferStage({"frame_model": "frame-test", "classifier_model": "lesion-cls-nope",
                    "weights_dir": str(weights)})
    with pytest.raises(ModelError, match='classifier_model = ""'):
        s.open()
    s.close()


def test_missing_frame_model_names_what_exists(weights):
    s = InferStage({"frame_model": "frame-v9", "weights_dir": str(weights)})
    with pytest.raises(ModelError, match="frame-test-fp32"):
        s.open()


def test_hflip_tta_runs_the_mirrored_frame_and_merges_back(weights, sim_frame):
    """The second pass sees the lateral mirror; its outputs are mirrored back and averaged, so
    a lesion both passes see lands once, at the same pixels, with the mean confidence."""
    s = stage(weights, classifier_model="", tta="hflip")
    calls: list[np.ndarray] = []
    iy, ix = 30, 20

    def plant(real):
        return lambda inputs: planted(real, inputs)

    def planted(real, inputs):
        (x,) = inputs.values()
        calls.append(x.copy())
        out = {k: np.zeros_like(v) for k, v in real(inputs).items()}
        first = len(calls) % 2 == 1
        col = ix if first else 63 - ix  # the mirrored pass sees the lesion on the other side
        out["heatmap"][0, 0, iy, col] = 0.9 if first else 0.7
        out["size"][0, :, iy, col] = (12.0, 12.0)
        out["offset"][0, :, iy, col] = (0.5, 0.5)
        out["steatosis"][0, 1 if first else 3] = 1.0
        return out

    real = s._frame.run
    s._frame.run = plant(real)
    res = s.process(packet(sim_frame)).header.infer
    assert len(calls) == 2
    np.testing.assert_array_equal(calls[1], calls[0][..., ::-1])
    assert res.tta == "hflip"
    assert len(res.detections) == 1
    assert res.detections[0].confidence == pytest.approx(0.8, abs=1e-4)
    assert res.steatosis_probs["S1"] == pytest.approx(0.5, abs=1e-3)
    assert res.steatosis_probs["S3"] == pytest.approx(0.5, abs=1e-3)
    s._frame.run = real
    s.close()

    one = stage(weights, classifier_model="", tta="none")
    calls.clear()
    one._frame.run = plant(one._frame.run)
    res = one.process(packet(sim_frame)).header.infer
    assert len(calls) == 1 and res.tta == "none"
    assert res.detections[0].confidence == pytest.approx(0.9, abs=1e-4)
    one.close()


def test_hflip_tta_needs_its_threshold_in_the_card(tmp_path):
    helpers.tiny_frame_artifact(tmp_path, "frame-old", hflip=False)
    s = InferStage({"frame_model": "frame-old", "classifier_model": "",
                    "weights_dir": str(tmp_path), "tta": "hflip"})
    with pytest.raises(ModelError, match="heatmap_hflip.*tta = \"none\""):
        s.open()
    s.close()
    for cfg in ({"tta": "none"}, {"tta": "hflip", "heatmap_threshold": 0.3}):
        ok = InferStage({"frame_model": "frame-old", "classifier_model": "",
                         "weights_dir": str(tmp_path), "warmup": 0, **cfg})
        ok.open()
        ok.close()


def test_unknown_tta_is_a_config_error():
    from sonoflow.stream.errors import ConfigError

    with pytest.raises(ConfigError, match="vflip"):
        InferStage({"tta": "vflip"})


@pytest.mark.parametrize("box_from_mask", [False, True])
def test_box_from_mask_replaces_an_undersized_box_by_the_masks_extent(weights, sim_frame,
                                                                      box_from_mask):
    """The network's box covers the middle half of a lesion its mask segments whole."""
    s = stage(weights, classifier_model="", box_from_mask=box_from_mask)
    pk = packet(sim_frame)
    lesion = np.array([130.0, 110.0, 190.0, 160.0])  # frame pixels, inside the sector
    box = np.array([145.0, 122.0, 175.0, 148.0])  # about half of it each way
    plant(s, pk, box, lesion)
    (d,) = s.process(pk).header.infer.detections
    expected = lesion if box_from_mask else box
    np.testing.assert_allclose(d.xyxy_px, expected, atol=4.0)
    ys, xs = np.nonzero(pk.arrays["lesion_mask"] == d.mask_id)
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], expected,
                               atol=4.0)
