"""Every real clip, DICOM file and PLUS sequence reads completely, in order, with the frame
count of its manifest (skips cleanly when ``../shared/data/real`` is absent)."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from sonoflow.stream.sources.registry import open_source

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def _manifest(folder: str, name: str) -> dict:
    path = REAL / folder / name
    if not path.is_file():
        pytest.skip(f"real data not present: {path} (a fresh clone has no ../shared)")
    return json.loads(path.read_text())


def _names(folder: str, name: str) -> list[str]:
    path = REAL / folder / name
    return sorted(json.loads(path.read_text())) if path.is_file() else ["<absent>"]


def _read_all(spec: Path):
    src = open_source(str(spec))
    try:
        frames = list(src.frames())
    finally:
        src.close()
    return src, frames


def _check_order(frames) -> None:
    assert [f.frame_index for f in frames] == list(range(len(frames)))
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in pairwise(pts)), "pts must increase strictly"
    for f in frames:
        assert f.error is None and f.image is not None
        assert f.image.dtype == np.uint8 and f.image.flags.c_contiguous
        assert "pts_warning" not in f.extra


@pytest.mark.parametrize("name", _names("cine", "manifest.json"))
def test_real_cine_clip(name):
    entry = _manifest("cine", "manifest.json")[name]
    src, frames = _read_all(REAL / "cine" / name)
    assert len(frames) == entry["frames_decoded"]
    _check_order(frames)
    assert frames[0].image.shape == (entry["height"], entry["width"], 3)
    assert src.pixel_format == "rgb24"
    assert src.fps == pytest.approx(entry["fps"], rel=0.01)
    # consecutive frames of a real clip are not all identical (decoder really advanced)
    assert any(not np.array_equal(a.image, b.image) for a, b in pairwise(frames))


@pytest.mark.parametrize("name", _names("dicom", "manifest.json"))
def test_real_dicom_file(name):
    entry = _manifest("dicom", "manifest.json")[name]
    src, frames = _read_all(REAL / "dicom" / name)
    assert len(frames) == entry["frames"] == src.frame_count
    _check_order(frames)
    assert frames[0].error is None
    h, w = frames[0].image.shape[:2]
    assert (h, w) == (entry["rows"], entry["cols"])
    grey = entry["photometric"].startswith("MONOCHROME")
    assert src.pixel_format == ("gray8" if grey else "rgb24")
    assert frames[0].image.ndim == (2 if grey else 3)
    if entry["frame_time_ms"]:
        assert src.fps == pytest.approx(1000.0 / float(entry["frame_time_ms"]), rel=1e-3)
        assert src.timing_source == "header"


@pytest.mark.parametrize("name", _names("dicom", "manifest.json"))
def test_real_dicom_calibration(name):
    entry = _manifest("dicom", "manifest.json")[name]
    src = open_source(str(REAL / "dicom" / name))
    src.close()
    tissue = [r for r in entry["us_regions"] if r["spatial_format"] == 1 and r["data_type"] == 1]
    inside = [r for r in tissue
              if r["xyxy"][2] <= entry["cols"] and r["xyxy"][3] <= entry["rows"]]
    cal = src.calibration
    if inside:
        assert cal.source == "dicom-regions"
        assert cal.mm_per_px == pytest.approx((inside[0]["mm_per_px_x"],
                                               inside[0]["mm_per_px_y"]), rel=1e-6)
    else:
        assert cal.mm_per_px is None and cal.source == "none"
        assert cal.note, "a refused calibration must say why"
        if tissue:
            assert "outside" in cal.note


def test_real_ybr_cine_is_converted_to_rgb_exactly_once():
    """B-mode is grey: after one YBR->RGB conversion most pixels have R~G~B; a second
    conversion (or none) would tint nearly all of them."""
    _manifest("dicom", "manifest.json")
    src = open_source(str(REAL / "dicom" / "color3d_jpeg_baseline.dcm"))
    try:
        it = iter(src.frames())
        img = next(it).image.astype(int)
    finally:
        src.close()
    grey = (np.abs(img[..., 0] - img[..., 1]) < 8) & (np.abs(img[..., 1] - img[..., 2]) < 8)
    assert grey.mean() > 0.9


@pytest.mark.parametrize("name", _names("plus", "frames_manifest.json"))
def test_real_plus_sequence(name):
    entry = _manifest("plus", "frames_manifest.json")[name]
    src, frames = _read_all(REAL / "plus" / name)
    assert len(frames) == len(entry["frames"]) == src.frame_count
    _check_order(frames)
    assert frames[0].image.shape == tuple(entry["shape"][-2:])
    for f, meta in zip(frames, entry["frames"], strict=True):
        if "Timestamp" in meta:
            assert f.extra["timestamp_s"] == pytest.approx(float(meta["Timestamp"]))
            assert "timestamp_interpolated" not in f.extra
        else:
            assert f.extra["timestamp_interpolated"] is True
    t0 = frames[0].extra["timestamp_s"]
    for f in frames:
        assert f.pts * f.time_base[0] / f.time_base[1] == pytest.approx(
            f.extra["timestamp_s"] - t0, abs=1e-6)


def test_real_jpeg_cine_fast_path_matches_pydicom():
    """The OpenCV JPEG path gives pydicom's pixels (to decoder rounding) on every frame."""
    _manifest("dicom", "manifest.json")
    path = str(REAL / "dicom" / "examples_ybr_color.dcm")
    fast, ref = open_source(path), open_source(path, decoder="pydicom")
    a, b = [f.image for f in fast.frames()], [f.image for f in ref.frames()]
    assert fast.decoder == "opencv" and ref.decoder == "pydicom"
    assert len(a) == len(b) == 30
    for x, y in zip(a, b, strict=True):
        diff = np.abs(x.astype(np.int16) - y)
        assert diff.mean() < 0.1 and diff.max() <= 8
