"""Renderer, render stage and window view: pure functions over copies, layers, scaling."""

from __future__ import annotations

import copy

import cv2
import msgspec
import numpy as np
import pytest

from sonoflow.stream.errors import ConfigError, StageError
from sonoflow.stream.messages import (
    Detection,
    EosHeader,
    FrameHeader,
    InferResult,
    LesionSummary,
    Packet,
    QualityResult,
    Stamp,
)
from sonoflow.stream.render.annotate import DEFAULT_LAYERS, LAYERS, annotate, parse_layers
from sonoflow.stream.render.layers import (
    HudStats,
    case_lines,
    detection_lines,
    hud_lines,
    lirads_text,
    quality_lines,
)
from sonoflow.stream.render.palette import CLASS_COLOURS, class_colour
from sonoflow.stream.render.stream_stats import StreamStats
from sonoflow.stream.render.style import Style, text_block_size
from sonoflow.stream.render.window import LAYER_KEYS, WindowView, gui_available
from sonoflow.stream.stages.render import RenderStage

H, W = 480, 640
CYST_CENTRE, CYST_AXES = (200, 260), (40, 28)


def _frame(h: int = H, w: int = W, seed: int = 0):
    """A speckle-like grey frame with one anechoic 'cyst' (mask id 1) and its header."""
    rng = np.random.default_rng(seed)
    image = rng.integers(60, 200, (h, w), dtype=np.uint8)
    s = h / H
    centre = (int(CYST_CENTRE[0] * s), int(CYST_CENTRE[1] * s))
    axes = (int(CYST_AXES[0] * s), int(CYST_AXES[1] * s))
    lesion_mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(lesion_mask, centre, axes, 0, 0, 360, 1, -1)
    image[lesion_mask == 1] = 5
    ys, xs = np.nonzero(lesion_mask)
    box = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
    det = Detection(box, 0.91, "cyst", {"cyst": 0.91, "hcc": 0.02}, 0.04,
                    {"anechoic": 0.97, "posterior_enhancement": 0.81, "mosaic": 0.1}, 7, 1)
    les = LesionSummary(7, 0, 12, 5, box, 18.4, 12.0, "cyst", {"cyst": 0.9}, 0.04, {}, 12)
    header = FrameHeader(stream_id="s0", seq=12, frame_index=12, pts=12, time_base=(1, 30),
                         capture_ns=1_000_000_000, pixel_format="gray8", status="analysed",
                         quality=QualityResult(0.83), infer=InferResult([det]),
                         lesions=[les], extra={"lirads": {"category": "US-2", "provisional": True}},
                         stamps=[Stamp("quality", 0, 2_000_000), Stamp("infer", 0, 9_500_000)])
    liver = np.zeros((h, w), np.uint8)
    liver[h // 8:h - h // 8, w // 8:w - w // 8] = 1
    return image, header, {"image": image, "lesion_mask": lesion_mask, "liver_mask": liver}


def _read_only(arrays):
    out = {}
    for k, a in arrays.items():
        b = a.copy()
        b.flags.writeable = False
        out[k] = b
    return out


def test_annotate_draws_on_a_copy_and_leaves_inputs_alone():
    image, header, arrays = _frame()
    arrays = _read_only(arrays)  # as received from the wire: writing would raise
    before = {k: a.copy() for k, a in arrays.items()}
    header_before = msgspec.to_builtins(header)
    out = annotate(arrays["image"], header, arrays, LAYERS, stats=HudStats(2_000_000_000, 30.0))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    assert not np.shares_memory(out, arrays["image"])
    for k, a in arrays.items():
        np.testing.assert_array_equal(a, before[k])
    assert msgspec.to_builtins(header) == header_before
    assert (out != cv2.cvtColor(before["image"], cv2.COLOR_GRAY2RGB)).any()


@pytest.mark.parametrize("spec, expected", [
    (None, DEFAULT_LAYERS), ("default", DEFAULT_LAYERS), ("all", frozenset(LAYERS)),
    ("none", frozenset()), ("", frozenset()), ("boxes, masks", frozenset({"boxes", "masks"})),
    (["hud"], frozenset({"hud"})),
])
def test_parse_layers(spec, expected):
    assert parse_layers(spec) == expected


@pytest.mark.parametrize("spec", ["boxes,fills", ["heatmap"]])
def test_parse_layers_rejects_unknown_names(spec):
    with pytest.raises(ConfigError, match="unknown overlay layer"):
        parse_layers(spec)


def test_no_layers_is_the_plain_image_in_rgb():
    image, header, arrays = _frame()
    out = annotate(image, header, arrays, "none")
    np.testing.assert_array_equal(out, cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))


def test_rgb_input_and_bad_input():
    image, header, arrays = _frame()
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    np.testing.assert_array_equal(annotate(rgb, header, arrays, "none"), rgb)
    with pytest.raises(ConfigError, match="uint8 HxW or HxWx3"):
        annotate(image.astype(np.float32), header, arrays)


def _pixels_of(out, colour):
    return np.all(out == np.array(colour, np.uint8), axis=-1)


def test_mask_is_an_outline_in_the_class_colour_not_a_filled_blob():
    image, header, arrays = _frame()
    out = annotate(image, header, arrays, ["masks"])
    colour = _pixels_of(out, class_colour("cyst"))
    mask = arrays["lesion_mask"] == 1
    edge = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert colour[edge].mean() > 0.5  # the boundary is traced
    inner = cv2.erode(mask.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    assert inner.sum() > 500
    np.testing.assert_array_equal(out[inner], cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)[inner])


def test_boxes_are_full_without_mask_and_brackets_with_it():
    image, header, arrays = _frame()
    det = header.infer.detections[0]
    det.xyxy_px = (det.xyxy_px[0] - 6, det.xyxy_px[1] - 6, det.xyxy_px[2] + 6, det.xyxy_px[3] + 6)
    x0, y0, x1, y1 = (int(v) for v in det.xyxy_px)
    mid_top = (y0, (x0 + x1) // 2)
    no_mask = {k: v for k, v in arrays.items() if k != "lesion_mask"}
    full = annotate(image, header, no_mask, ["boxes"])
    bracket = annotate(image, header, arrays, ["boxes", "masks"])
    colour = np.array(class_colour("cyst"), np.uint8)
    assert (full[mid_top] == colour).all()       # whole edge drawn
    assert not (bracket[mid_top] == colour).all()  # middle of the edge left free
    assert (bracket[y0, x0 + 1] == colour).all()  # corner drawn


def test_each_layer_toggles_its_own_pixels():
    image, header, arrays = _frame()
    stats = HudStats(now_ns=1_020_000_000, fps=29.8, drops=2)
    full = annotate(image, header, arrays, LAYERS, stats=stats)
    for layer in LAYERS:
        without = annotate(image, header, arrays, set(LAYERS) - {layer}, stats=stats)
        assert (without != full).any(), f"turning off {layer!r} changed nothing"


@pytest.mark.parametrize("status, quality, expect", [
    ("analysed", QualityResult(0.9), ["quality 0.90"]),
    ("rejected", QualityResult(0.2, ["motion_blur"], keyframe=False, reason="motion blur"),
     ["quality 0.20", "REJECTED: motion blur"]),
    ("pending", QualityResult(0.6, ["dark"], keyframe=False, reason="score below 0.65"),
     ["quality 0.60", "not analysed: score below 0.65"]),
    ("dropped", QualityResult(0.8, keyframe=False, reason="policy: every 3rd frame"),
     ["quality 0.80"]),
    ("pending", QualityResult(0.5, ["low_contrast"]), ["quality 0.50", "low contrast"]),
    ("failed", None, ["FAILED: decode error"]),
    ("pending", None, []),
])
def test_quality_lines_say_why(status, quality, expect):
    _, header, _ = _frame()
    header.status, header.quality, header.error = status, quality, "decode error"
    assert [ln.text for ln in quality_lines(header)[1]] == expect


def test_hud_shows_latency_fps_drops_and_slowest_stage():
    _, header, _ = _frame()
    texts = [ln.text for ln in hud_lines(header, HudStats(now_ns=1_012_500_000, fps=29.97,
                                                          drops=3))]
    assert texts[0] == "frame 12  30.0 fps"
    assert texts[1] == "e2e 12.5 ms  drops 3"
    assert texts[2] == "slowest infer 9.5 ms"
    # the spine pipeline: only image and stamps; no stats -> frame number and stage times
    header.infer = None
    assert [ln.text for ln in hud_lines(header, None)] == ["frame 12", "slowest infer 9.5 ms"]
    header.stamps = [Stamp("capture", 5, 5)]  # an instant: no "slowest" line
    assert [ln.text for ln in hud_lines(header, None)] == ["frame 12"]


def test_case_panel_lists_lesions_sizes_and_lirads():
    _, header, _ = _frame()
    texts = [ln.text for ln in case_lines(header)]
    assert texts[0] == "LI-RADS US-2 prov.   lesions 1"
    assert texts[1] == "#7 cyst 18 mm"
    header.lesions = [LesionSummary(i, 0, 1, 0, (0, 0, 1, 1), None if i == 3 else 5.0 + i, None,
                                    "hcc", {}, None, {}, confirmed=i != 2) for i in range(1, 9)]
    header.extra = {"lirads": "US-3"}
    texts = [ln.text for ln in case_lines(header)]
    assert texts[0] == "LI-RADS US-3   lesions 7"  # the unconfirmed one is not listed
    assert "#3 hcc size n/a" in texts and "+2 more" in texts
    bare = FrameHeader("s", 0, 0, 0, (1, 30), 0, "gray8")
    assert lirads_text(bare) is None
    bare.extra = {"lirads": {"category": None, "provisional": True}}  # the aggregator abstains
    assert lirads_text(bare) == "pending"


def test_detection_label_has_id_class_confidence_top_features():
    _, header, _ = _frame()
    lines = detection_lines(header.infer.detections[0])
    assert lines[0].text == "#7 cyst 0.91"
    assert lines[0].colour == CLASS_COLOURS["cyst"]
    assert lines[1].text == "anechoic, post. enhancement"  # malignancy 0.04: not shown
    det = header.infer.detections[0]
    det.malignancy, det.features = 0.62, {"halo_target": 0.7, "hypoechoic": 0.9, "mosaic": 0.2}
    assert detection_lines(det)[1].text == "hypoechoic, target/halo, malig 0.62"


def test_fonts_and_lines_scale_with_the_frame():
    small, big = Style.for_shape(480, 640), Style.for_shape(1080, 1920)
    assert big.font_scale / small.font_scale == pytest.approx(1080 / 480)
    assert big.line_px > small.line_px and big.text_px > small.text_px
    _, header, _ = _frame()
    lines = detection_lines(header.infer.detections[0])
    (w0, h0), (w1, h1) = text_block_size(lines, small), text_block_size(lines, big)
    assert 1.8 < w1 / w0 < 2.7 and 1.8 < h1 / h0 < 2.7
    image, header, arrays = _frame(1080, 1920)
    out = annotate(image, header, arrays, LAYERS, stats=HudStats(1_020_000_000, 30.0))
    assert out.shape == (1080, 1920, 3)


def test_stream_stats_counts_seq_gaps_and_fps():
    stats = StreamStats()
    _, header, _ = _frame()
    t = 0
    for seq in (0, 1, 2, 5, 6, 6, 4, 10):
        header.seq = seq
        hud = stats.update(header, t)
        t += 33_333_333
    assert hud.drops == 2 + 3  # 3,4 missing then 7,8,9; a repeat or a late one is no drop
    assert hud.fps == pytest.approx(30.0, rel=1e-6)


def test_render_stage_adds_overlay_and_keeps_inputs():
    image, header, arrays = _frame()
    arrays = _read_only(arrays)
    stage = RenderStage({"layers": "all"})
    packet = Packet(header, dict(arrays))
    out = stage.process(packet)
    assert set(out.arrays) == set(arrays) | {"overlay"}
    assert set(packet.arrays) == set(arrays)  # the input packet's dict is not touched
    ov = out.arrays["overlay"]
    assert ov.dtype == np.uint8 and ov.shape == (H, W, 3) and ov.flags.c_contiguous
    assert out.header.extra["render"]["layers"] == sorted(LAYERS)
    assert out.header.extra["render"]["ms"] > 0
    eos = Packet(EosHeader("s0", 12, 13))
    assert stage.process(eos) is eos


def test_render_stage_errors():
    with pytest.raises(ConfigError, match="unknown config key"):
        RenderStage({"colour": "red"})
    with pytest.raises(ConfigError, match="unknown overlay layer"):
        RenderStage({"layers": "boxes,glow"})
    _, header, _ = _frame()
    with pytest.raises(StageError, match="no 'image' array"):
        RenderStage().process(Packet(header, {}))


class FakeGui:
    """Stands in for cv2's highgui: records frames, returns scripted keys."""

    def __init__(self, keys):
        self.keys = list(keys)
        self.shown = []
        self.destroyed = False

    def namedWindow(self, title, flags):  # noqa: N802 - cv2's name
        self.title = title

    def imshow(self, title, bgr):
        self.shown.append(bgr.copy())

    def waitKey(self, ms):  # noqa: N802 - cv2's name
        return self.keys.pop(0) if self.keys else -1

    def destroyWindow(self, title):  # noqa: N802 - cv2's name
        self.destroyed = True


def test_window_keys_toggle_pause_snapshot_quit(tmp_path):
    image, header, arrays = _frame()
    quits = []
    keys = [ord("b"), ord(" "), -1, ord("s"), ord(" "), ord("a"), ord("q"), ord("x")]
    gui = FakeGui(keys)
    view = WindowView(gui=gui, snapshot_dir=tmp_path, on_quit=lambda: quits.append(1))
    overlay = RenderStage().process(Packet(header, dict(arrays)))
    actions = []
    for i in range(len(keys)):
        h = msgspec.structs.replace(header, seq=header.seq + i)
        pk = Packet(h, dict(overlay.arrays)) if i == 0 else Packet(h, dict(arrays))
        actions.append(view.show(pk))
    assert actions == ["toggle:boxes", "pause", None, "snapshot", "resume", "defaults", "quit",
                       None]
    assert quits == [1]
    # first frame: the render stage's overlay used as is (same layers as the window's)
    np.testing.assert_array_equal(gui.shown[0], cv2.cvtColor(overlay.arrays["overlay"],
                                                             cv2.COLOR_RGB2BGR))
    # paused after frame 1: frames 2 and 3 repeat frame 1's picture
    np.testing.assert_array_equal(gui.shown[2], gui.shown[1])
    np.testing.assert_array_equal(gui.shown[3], gui.shown[1])
    assert view.snapshots == [tmp_path / "frame-000013.png"]
    snap = cv2.imread(str(view.snapshots[0]))
    np.testing.assert_array_equal(snap, gui.shown[1])
    # frame 1 was redrawn by the window without boxes: the box corner is gone
    x0, y0 = (int(v) for v in header.infer.detections[0].xyxy_px[:2])
    bgr = np.array(class_colour("cyst")[::-1], np.uint8)
    assert (gui.shown[0][y0, x0 + 1] == bgr).all()
    assert not (gui.shown[1][y0, x0 + 1] == bgr).all()
    assert view.layers == set(DEFAULT_LAYERS)
    view.close()
    assert gui.destroyed


def test_window_layer_keys_cover_every_layer():
    assert set(LAYER_KEYS.values()) == set(LAYERS)


@pytest.mark.skipif(gui_available(), reason="this OpenCV build has a GUI")
def test_window_needs_a_gui_build():
    with pytest.raises(StageError, match="opencv-python-headless"):
        WindowView().open()


def test_truth_frames_from_the_simulator():
    sim = pytest.importorskip("sonoflow.stream.sim")
    if not hasattr(sim, "simulate_clip"):
        pytest.skip("sonoflow.stream.sim.simulate_clip is not built yet")
    from sonoflow.stream.render.truth_frames import truth_packets

    packets = list(truth_packets(3, 6, n_lesions=2, events=False))
    assert [p.header.seq for p in packets] == list(range(6))
    last = packets[-1]
    dets = last.header.infer.detections
    assert dets and all(d.mask_id and (last.arrays["lesion_mask"] == d.mask_id).any()
                        for d in dets)
    assert {les.lesion_id for les in last.header.lesions} >= {d.track_id for d in dets}
    out = annotate(last.arrays["image"], last.header, last.arrays, LAYERS,
                   stats=HudStats(last.header.capture_ns, 30.0))
    assert "ground truth (simulator)" in [ln.text for ln in hud_lines(last.header, None)]
    assert out.shape == (*last.arrays["image"].shape[:2], 3)


def test_copy_of_header_renders_identically():
    image, header, arrays = _frame()
    stats = HudStats(1_020_000_000, 30.0, 1)
    a = annotate(image, header, arrays, LAYERS, stats=stats)
    b = annotate(image.copy(), copy.deepcopy(header), {k: v.copy() for k, v in arrays.items()},
                 LAYERS, stats=stats)
    np.testing.assert_array_equal(a, b)


def test_labels_avoid_panels_other_boxes_and_each_other():
    from sonoflow.stream.render.layers import _overlaps, draw_labels

    img = np.zeros((H, W, 3), np.uint8)
    style = Style.for_shape(H, W)
    dets = [Detection((100.0, 60.0, 160.0, 110.0), 0.8, "cyst", track_id=1),
            Detection((120.0, 30.0, 200.0, 58.0), 0.7, "hcc", track_id=2),
            Detection((110.0, 114.0, 170.0, 150.0), 0.6, "metastasis", track_id=3)]
    panel = (0, 0, 90, 40)
    chips = draw_labels(img, dets, style, occupied=[panel])
    assert len(chips) == 3
    boxes = [tuple(int(v) for v in d.xyxy_px) for d in dets]
    for i, c in enumerate(chips):
        assert not _overlaps(c, panel)
        assert not any(_overlaps(c, o) for j, o in enumerate(chips) if j != i)
        assert not any(_overlaps(c, b) for j, b in enumerate(boxes) if j != i)


@pytest.mark.parametrize("status, dt_ms, hold_ms, held", [
    ("dropped", 33, 250, True),     # every-N skip right after an analysed frame: boxes held
    ("dropped", 400, 250, False),   # too old
    ("dropped", 33, 0, False),      # holding turned off
    ("rejected", 33, 250, False),   # bad quality: never show stale boxes
])
def test_render_holds_detections_over_policy_skipped_frames(status, dt_ms, hold_ms, held):
    image, header, arrays = _frame()
    stage = RenderStage({"hold_ms": hold_ms, "layers": "boxes"})
    stage.process(Packet(header, dict(arrays)))
    skipped = msgspec.structs.replace(header, seq=13, capture_ns=header.capture_ns
                                      + dt_ms * 1_000_000, status=status, infer=None, extra={})
    plain = {"image": arrays["image"]}
    out = stage.process(Packet(skipped, dict(plain)))
    assert skipped.infer is None and set(plain) == {"image"}  # inputs untouched
    has_boxes = (out.arrays["overlay"] != cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)).any()
    assert has_boxes == held
    assert ("held_age_ms" in out.header.extra["render"]) == held
