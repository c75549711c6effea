"""Capture sources on small files written here: content, order, timing, colour, dispatch."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import av
import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    MPEG4HP41,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from sonoflow.stream.errors import SourceError
from sonoflow.stream.sources import pixels
from sonoflow.stream.sources.camera import CameraSource
from sonoflow.stream.sources.dicom import DicomSource, calibration_from_regions
from sonoflow.stream.sources.images import ImageFolderSource, natural_key
from sonoflow.stream.sources.metaimage import MetaImageSource
from sonoflow.stream.sources.registry import open_source, source_kind
from sonoflow.stream.sources.video import VideoSource
from sonoflow.stream.sources.zmq_producer import ZmqSource

ROOT = Path(__file__).resolve().parents[1]


# --- writers --------------------------------------------------------------------------------


def ramp_frame(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Grey frame whose mean brightness encodes ``i`` (survives lossy coding)."""
    return np.full((h, w), 20 + 10 * i, np.uint8)


def write_video(path: Path, n: int, *, codec: str = "libx264", rgb: bool = False,
                fps: int = 25, faststart: bool = False, size=(48, 64)) -> None:
    h, w = size
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height = w, h
        s.pix_fmt = "yuvj420p" if codec == "mjpeg" else ("gray" if codec == "ffv1" and not rgb
                                                         else "yuv420p")
        for i in range(n):
            g = ramp_frame(i, h, w)
            img = np.stack([g, g // 2, 255 - g], -1) if rgb else np.stack([g] * 3, -1)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def write_mha(path: Path, frames: np.ndarray, *, etype: str = "MET_UCHAR",
              compressed: bool = False, timestamps=None, channels: int = 1,
              raw_file: bool = False, extra_header: str = "") -> None:
    """``frames``: (N, H, W[, C]) array already of the element type's dtype."""
    n, h, w = frames.shape[:3]
    data = np.ascontiguousarray(frames).astype(frames.dtype.newbyteorder("<")).tobytes()
    lines = ["ObjectType = Image", "NDims = 3", "BinaryData = True",
             "BinaryDataByteOrderMSB = False", f"CompressedData = {compressed}",
             f"DimSize = {w} {h} {n}", "ElementSpacing = 0.2 0.3 1", f"ElementType = {etype}",
             f"ElementNumberOfChannels = {channels}"]
    if compressed:
        data = zlib.compress(data)
        lines.append(f"CompressedDataSize = {len(data)}")
    for i, t in enumerate(timestamps or []):
        if t is not None:
            lines.append(f"Seq_Frame{i:04d}_Timestamp = {t}")
    if extra_header:
        lines.append(extra_header)
    if raw_file:
        raw = path.with_suffix(".raw")
        raw.write_bytes(data)
        lines.append(f"ElementDataFile = {raw.name}")
        path.write_text("\n".join(lines) + "\n")
    else:
        lines.append("ElementDataFile = LOCAL")
        path.write_bytes(("\n".join(lines) + "\n").encode() + data)


def dicom_dataset(rows: int, cols: int, n_frames: int, *, ts=ExplicitVRLittleEndian,
                  photometric: str = "MONOCHROME2", samples: int = 1) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.NumberOfFrames = n_frames
    return ds


def us_region(x0, y0, x1, y1, dx_cm=0.05, dy_cm=0.05, units=3) -> Dataset:
    r = Dataset()
    r.RegionSpatialFormat, r.RegionDataType = 1, 1
    r.RegionLocationMinX0, r.RegionLocationMinY0 = x0, y0
    r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x1, y1
    r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = units
    r.PhysicalDeltaX, r.PhysicalDeltaY = dx_cm, dy_cm
    return r


def read(src):
    try:
        return list(src.frames())
    finally:
        src.close()


# --- pixels ---------------------------------------------------------------------------------


def test_to_uint8_maps_declared_range_and_refuses_nan():
    a = np.array([[0, 32768, 65535]], np.uint16)
    assert pixels.to_uint8(a, path="x", frame_index=0).tolist() == [[0, 128, 255]]
    f = np.array([[0.0, 0.5, 1.0]], np.float32)
    assert pixels.to_uint8(f, path="x", frame_index=0).tolist() == [[0, 128, 255]]
    f2 = np.array([[0.0, 50.0, 100.0]], np.float64)
    out = pixels.to_uint8(f2, path="x", frame_index=0, value_range=(0, 100))
    assert out.tolist() == [[0, 128, 255]]
    with pytest.raises(SourceError, match=r"x: frame 7: .*1 NaN"):
        pixels.to_uint8(np.array([[np.nan, 0.2]]), path="x", frame_index=7)
    with pytest.raises(SourceError, match=r"frame 3: pixel values span \[0, 2\].*\[0, 1\]"):
        pixels.to_uint8(np.array([[0.0, 2.0]]), path="x", frame_index=3)
    clipped = pixels.to_uint8(np.array([[-1.0, 2.0]]), path="x", frame_index=3,
                              out_of_range="clip")
    assert clipped.tolist() == [[0, 255]]


def test_channels_grey_rgb_alpha_and_two_channel():
    g, fmt = pixels.to_grey_or_rgb(np.zeros((4, 5, 1), np.uint8), path="x", frame_index=0)
    assert g.shape == (4, 5) and fmt == "gray8"
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7
    rgb, fmt = pixels.to_grey_or_rgb(rgba, path="x", frame_index=0)
    assert rgb.shape == (4, 5, 3) and fmt == "rgb24" and rgb.flags.c_contiguous
    assert rgb[0, 0].tolist() == [200, 0, 0]
    with pytest.raises(SourceError, match="frame 2: 2 channels"):
        pixels.to_grey_or_rgb(np.zeros((4, 5, 2), np.uint8), path="x", frame_index=2)


def test_pts_guard_warns_or_raises():
    guard = pixels.PtsGuard("clip.mp4")
    assert guard.check(0, 0) is None and guard.check(10, 1) is None
    note = guard.check(10, 2)
    assert "frame 2" in note and "frame 1" in note and guard.count == 1
    strict = pixels.PtsGuard("clip.mp4", strict=True)
    strict.check(5, 0)
    with pytest.raises(SourceError, match="clip.mp4: frame 1: pts 4 is not after"):
        strict.check(4, 1)


# --- video ----------------------------------------------------------------------------------


def test_video_grey_content_order_and_timing(tmp_path):
    path = tmp_path / "ramp.mp4"
    write_video(path, 12, fps=25)
    src = open_source(str(path))
    assert isinstance(src, VideoSource) and src.frame_count == 12 and src.fps == 25.0
    frames = read(src)
    assert len(frames) == 12 and src.decoded == 12 and src.failed == 0
    # yuv420p H.264 is colour video: delivered as RGB even when grey in effect
    assert src.pixel_format == "rgb24" and frames[0].image.shape == (48, 64, 3)
    means = [float(f.image.mean()) for f in frames]
    assert means == sorted(means) and abs(means[5] - (20 + 50)) < 4
    secs = [f.pts * f.time_base[0] / f.time_base[1] for f in frames]
    assert secs == pytest.approx([i / 25 for i in range(12)], abs=1e-3)


def test_video_odd_width_frames_are_c_contiguous(tmp_path):
    path = tmp_path / "odd.mp4"
    write_video(path, 3, size=(50, 70))  # FFmpeg pads 70*3-byte lines
    frames = read(open_source(str(path)))
    assert all(f.image.shape == (50, 70, 3) and f.image.flags.c_contiguous for f in frames)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI (Debian ffmpeg)")
def test_video_edit_list_trim_is_not_a_count_mismatch(tmp_path):
    """A stream-copy cut keeps packets before the cut, hidden by an edit list: the container
    states 30 frames, 20 are shown, and that is not a truncation."""
    src_path, cut = tmp_path / "gop.mp4", tmp_path / "cut.mp4"
    with av.open(str(src_path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.gop_size = 30
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(np.stack([ramp_frame(i % 20)] * 3, -1),
                                               format="rgb24")
            frame.pts = i
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-ss", "0.4", "-i", str(src_path),
                    "-c", "copy", str(cut)], check=True, timeout=60)
    src = open_source(str(cut))
    frames = read(src)
    assert src.frame_count == 30 and src.discarded == 10 and len(frames) == 20
    assert abs(float(frames[0].image.mean()) - ramp_frame(10).mean()) < 4


def test_video_colour_is_rgb_order(tmp_path):
    path = tmp_path / "colour.mkv"
    write_video(path, 3, codec="mjpeg", rgb=True)
    f = read(open_source(str(path)))[2]
    r, g, b = (float(f.image[..., c].mean()) for c in range(3))
    g0 = 20 + 10 * 2
    assert abs(r - g0) < 6 and abs(g - g0 // 2) < 6 and abs(b - (255 - g0)) < 6


def test_video_true_grey_pixel_format(tmp_path):
    path = tmp_path / "grey.mkv"
    write_video(path, 4, codec="ffv1")
    src = open_source(str(path))
    frames = read(src)
    assert src.pixel_format == "gray8" and frames[0].image.shape == (48, 64)
    assert [int(f.image[0, 0]) for f in frames] == [20, 30, 40, 50]  # lossless


def test_video_bad_packet_is_one_failed_frame_and_stream_goes_on(tmp_path):
    path = tmp_path / "onebad.mkv"
    with av.open(str(path), "w") as out:
        s = out.add_stream("mjpeg", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuvj420p"
        for i in range(8):
            frame = av.VideoFrame.from_ndarray(np.stack([ramp_frame(i)] * 3, -1), format="rgb24")
            frame.pts = i
            for p in s.encode(frame):
                if i == 4:
                    bad = av.Packet(b"\xff\xd8" + b"\x00garbage" * 40)
                    bad.pts, bad.dts, bad.time_base, bad.stream = p.pts, p.dts, p.time_base, s
                    out.mux(bad)
                else:
                    out.mux(p)
    src = open_source(str(path))
    frames = read(src)
    assert [f.frame_index for f in frames] == list(range(8))
    assert [f.image is None for f in frames] == [i == 4 for i in range(8)]
    assert "failed to decode" in frames[4].error
    assert src.failed == 1 and src.decoded == 7
    assert abs(frames[5].image.mean() - 70) < 4  # the frame after the bad one is right


# --- DICOM ----------------------------------------------------------------------------------


def test_dicom_multiframe_frame_by_frame_with_timing_and_regions(tmp_path):
    ds = dicom_dataset(40, 50, 5)
    ds.FrameTime = 40.0
    ds.SequenceOfUltrasoundRegions = [us_region(2, 3, 47, 38, 0.02, 0.03)]
    stack = np.stack([ramp_frame(i, 40, 50) for i in range(5)])
    ds.PixelData = stack.tobytes()
    path = tmp_path / "cine.dcm"
    ds.save_as(path, enforce_file_format=True)
    src = open_source(str(path))
    assert isinstance(src, DicomSource) and src.frame_count == 5 and src.fps == 25.0
    assert src.calibration.source == "dicom-regions"
    assert src.calibration.mm_per_px == pytest.approx((0.2, 0.3))
    frames = read(src)
    assert [int(f.image[0, 0]) for f in frames] == [20, 30, 40, 50, 60]
    assert [f.pts for f in frames] == [0, 40000, 80000, 120000, 160000]
    assert frames[0].time_base == (1, 1_000_000) and src.pixel_format == "gray8"


def test_dicom_h264_cine_through_pyav(tmp_path):
    import io

    buf = io.BytesIO()
    with av.open(buf, "w", format="h264") as out:  # Annex-B elementary stream, as in DICOM
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.stack([ramp_frame(i)] * 3, -1),
                                               format="rgb24")
            frame.pts = i
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    data = buf.getvalue()
    ds = dicom_dataset(48, 64, 10, ts=MPEG4HP41, photometric="YBR_PARTIAL_420", samples=3)
    ds.FrameTime = 40
    half = len(data) // 2  # the stream may be split over fragments anywhere
    ds.PixelData = encapsulate([data[:half], data[half:]])
    ds["PixelData"].VR = "OB"
    path = tmp_path / "h264.dcm"
    ds.save_as(path, enforce_file_format=True)
    src = open_source(str(path))
    frames = read(src)
    assert len(frames) == 10 and src.pixel_format == "rgb24"
    assert [f.pts for f in frames] == [40000 * i for i in range(10)]
    means = [float(f.image.mean()) for f in frames]
    assert all(abs(m - (20 + 10 * i)) < 4 for i, m in enumerate(means))


def test_dicom_dispatch_by_magic_without_extension(tmp_path):
    ds = dicom_dataset(8, 8, 1)
    ds.PixelData = np.zeros((8, 8), np.uint8).tobytes()
    path = tmp_path / "IM0001"
    ds.save_as(path, enforce_file_format=True)
    assert source_kind(str(path)) == "dicom"
    assert len(read(open_source(str(path)))) == 1


def test_dicom_monochrome1_inverted_once(tmp_path):
    ds = dicom_dataset(4, 4, 1, photometric="MONOCHROME1")
    ds.PixelData = np.full((4, 4), 10, np.uint8).tobytes()
    path = tmp_path / "m1.dcm"
    ds.save_as(path, enforce_file_format=True)
    (f,) = read(open_source(str(path)))
    assert int(f.image[0, 0]) == 245


def test_dicom_corrupt_jpeg_frame_fails_alone(tmp_path):
    ds = dicom_dataset(32, 32, 3, ts=JPEGBaseline8Bit)
    ds.FrameTime = 50
    good = [cv2.imencode(".jpg", ramp_frame(i, 32, 32))[1].tobytes() for i in range(3)]
    ds.PixelData = encapsulate([good[0], b"\xff\xd8not a jpeg at all\xff\xd9", good[2]])
    ds["PixelData"].VR = "OB"
    path = tmp_path / "jpeg.dcm"
    ds.save_as(path, enforce_file_format=True)
    src = open_source(str(path))
    frames = read(src)
    assert [f.image is None for f in frames] == [False, True, False]
    assert "frame 1 failed to decode" in frames[1].error and "JPEG Baseline" in frames[1].error
    assert abs(float(frames[2].image.mean()) - 40) < 3


def test_dicom_fast_jpeg_path_falls_back_when_it_disagrees(tmp_path, monkeypatch, caplog):
    from sonoflow.stream.sources import dicom as dicom_mod

    ds = dicom_dataset(32, 32, 3, ts=JPEGBaseline8Bit)
    ds.PixelData = encapsulate([cv2.imencode(".jpg", ramp_frame(i, 32, 32))[1].tobytes()
                                for i in range(3)])
    ds["PixelData"].VR = "OB"
    path = tmp_path / "jpeg.dcm"
    ds.save_as(path, enforce_file_format=True)
    good = read(open_source(str(path)))
    real_imdecode = cv2.imdecode
    monkeypatch.setattr(dicom_mod.cv2, "imdecode", lambda buf, flags: 255 - real_imdecode(
        buf, flags))  # a decoder that gets the data wrong
    src = open_source(str(path))
    bad = read(src)
    assert src.decoder == "pydicom" and "disagree on frame 0" in caplog.text
    for a, b in zip(good, bad, strict=True):
        assert np.array_equal(a.image, b.image)


def test_calibration_refused_for_bad_units_and_disagreeing_regions():
    ds = dicom_dataset(100, 100, 1)
    ds.SequenceOfUltrasoundRegions = [us_region(0, 0, 99, 99, units=4)]
    cal = calibration_from_regions(ds)
    assert cal.mm_per_px is None and "units" in cal.note
    ds.SequenceOfUltrasoundRegions = [us_region(0, 0, 49, 99, 0.05, 0.05),
                                      us_region(50, 0, 99, 99, 0.08, 0.08)]
    cal = calibration_from_regions(ds)
    assert cal.mm_per_px is None and "disagree" in cal.note
    ds.SequenceOfUltrasoundRegions = [us_region(0, 0, 99, 99, -0.05, 0.05)]
    assert "not positive" in calibration_from_regions(ds).note


# --- MetaImage / PLUS -----------------------------------------------------------------------


@pytest.mark.parametrize("compressed,raw_file", [(False, False), (True, False), (False, True)])
def test_metaimage_sequence_with_timestamps(tmp_path, compressed, raw_file):
    stack = np.stack([ramp_frame(i, 30, 40) for i in range(6)])
    stamps = [10.0, 10.1, None, 10.3, 10.4, 10.5]
    path = tmp_path / ("seq.mhd" if raw_file else "seq.mha")
    write_mha(path, stack, compressed=compressed, timestamps=stamps, raw_file=raw_file)
    src = open_source(str(path))
    assert isinstance(src, MetaImageSource) and src.frame_count == 6
    frames = read(src)
    assert [int(f.image[0, 0]) for f in frames] == [20 + 10 * i for i in range(6)]
    assert [f.pts for f in frames] == [0, 100000, 200000, 300000, 400000, 500000]
    assert frames[2].extra["timestamp_interpolated"] is True
    assert src.fps == pytest.approx(10.0) and src.timing_source == "header"
    assert src.calibration.mm_per_px is None  # ElementSpacing not trusted by default


def test_mhd_raw_with_header_size(tmp_path):
    stack = np.stack([ramp_frame(i, 5, 6) for i in range(3)])
    (tmp_path / "s.raw").write_bytes(b"VENDORHDR" + stack.tobytes())
    (tmp_path / "s.mhd").write_text("NDims = 3\nDimSize = 6 5 3\nElementType = MET_UCHAR\n"
                                    "HeaderSize = 9\nElementDataFile = s.raw\n")
    frames = read(open_source(str(tmp_path / "s.mhd")))
    assert [int(f.image[0, 0]) for f in frames] == [20, 30, 40]


def test_metaimage_ushort_rgba_and_trusted_spacing(tmp_path):
    stack = np.zeros((2, 4, 5, 4), np.uint16)
    stack[..., 0] = 65535
    stack[..., 3] = 1234
    path = tmp_path / "rgba.mha"
    write_mha(path, stack, etype="MET_USHORT", channels=4)
    src = open_source(str(path), trust_spacing=True)
    frames = read(src)
    assert src.pixel_format == "rgb24" and frames[0].image.shape == (4, 5, 3)
    assert frames[0].image[0, 0].tolist() == [255, 0, 0]
    assert src.calibration.mm_per_px == (0.2, 0.3) and src.calibration.source == "user"
    assert frames[1].pts - frames[0].pts == pytest.approx(1e6 / 30, abs=1)  # assumed 30 fps


def test_metaimage_float_with_declared_range(tmp_path):
    stack = np.linspace(-10, 30, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    path = tmp_path / "f.mha"
    write_mha(path, stack, etype="MET_FLOAT", extra_header="ElementMin = -10\nElementMax = 30")
    frames = read(open_source(str(path)))
    assert int(frames[0].image[0, 0]) == 0 and int(frames[1].image[-1, -1]) == 255


# --- image folders --------------------------------------------------------------------------


def test_image_folder_natural_order_and_bgr_to_rgb(tmp_path):
    for i in (10, 2, 1):
        img = np.zeros((6, 8, 3), np.uint8)
        img[..., 2] = 10 * i  # BGR on disk: red channel
        cv2.imwrite(str(tmp_path / f"f{i}.png"), img)
    (tmp_path / "notes.txt").write_text("ignored")
    assert sorted(["f10", "f2", "f1"], key=natural_key) == ["f1", "f2", "f10"]
    src = open_source(str(tmp_path), fps=10)
    assert isinstance(src, ImageFolderSource) and src.frame_count == 3
    frames = read(src)
    assert [f.extra["file"] for f in frames] == ["f1.png", "f2.png", "f10.png"]
    assert [f.image[0, 0].tolist() for f in frames] == [[10, 0, 0], [20, 0, 0], [100, 0, 0]]
    assert [f.pts for f in frames] == [0, 100000, 200000]


def test_image_folder_16bit_grey(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.full((4, 4), 65535, np.uint16))
    (f,) = read(open_source(str(tmp_path)))
    assert f.image.dtype == np.uint8 and f.image.shape == (4, 4) and int(f.image[0, 0]) == 255


# --- camera (OpenCV VideoCapture, here on a file) -------------------------------------------


def test_camera_reads_rgb_then_reports_lost_device(tmp_path):
    path = tmp_path / "cam.mkv"
    write_video(path, 5, codec="mjpeg", rgb=True)
    src = CameraSource(str(path), max_read_failures=2, retry_delay_s=0.0)
    src.open()
    assert src.live and src.width_px == 64
    got = []
    with pytest.raises(SourceError, match="stopped delivering frames after 5 frame"):
        for f in src.frames():
            got.append(f)
    src.close()
    assert len(got) == 5 and got[0].image.shape == (48, 64, 3)
    r, _, b = (float(got[0].image[..., c].mean()) for c in range(3))
    assert r < 40 < 200 < b  # frame 0: R = 20, B = 235 - converted from BGR once
    assert all(b.pts > a.pts for a, b in zip(got, got[1:], strict=False))


# --- external ZeroMQ producer ---------------------------------------------------------------


def test_zmq_source_reads_the_plain_pyzmq_example_producer(tmp_path):
    endpoint = f"ipc://{tmp_path}/producer.sock"
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "zmq_producer_example.py"),
                             "--endpoint", endpoint, "--frames", "40", "--fast", "--rgb",
                             "--width", "32", "--height", "24", "--spacing-mm", "0.2", "0.25"])
    try:
        src = open_source(f"zmq:{endpoint}", idle_timeout_s=10)
        assert isinstance(src, ZmqSource) and src.live
        frames = read(src)
    finally:
        proc.wait(timeout=20)
    assert proc.returncode == 0 and src.end_reason == "eos"
    assert [f.frame_index for f in frames] == list(range(40))
    assert [int(f.image[0, 0, 0]) for f in frames] == list(range(40))
    assert frames[3].image.shape == (24, 32, 3) and src.pixel_format == "rgb24"
    assert frames[3].pts == 3 and frames[3].time_base == (1, 30)
    assert frames[3].extra["producer_seq"] == 3
    assert frames[3].extra["pixel_spacing_mm"] == [0.2, 0.25]


def test_zmq_source_ends_on_idle_timeout_and_counts_gaps(tmp_path):
    import zmq

    from sonoflow.stream import messages as m

    endpoint = f"ipc://{tmp_path}/p.sock"
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.setsockopt(zmq.SNDTIMEO, 5000)  # PUSH blocks until a peer is connected
    push.bind(endpoint)
    src = ZmqSource(endpoint, idle_timeout_s=0.3)
    src.open()
    try:
        for seq in (0, 1, 4):
            h = m.FrameHeader(stream_id="s", seq=seq, frame_index=seq, pts=seq,
                              time_base=(1, 10), capture_ns=0, pixel_format="gray8")
            push.send_multipart(m.encode(m.Packet(h, {"image": np.full((3, 4), seq,
                                                                        np.uint8)})))
        frames = read(src)
    finally:
        push.close()
        ctx.term()
    assert src.end_reason == "idle" and len(frames) == 3
    assert frames[2].extra["producer_gap"] == 2 and src.producer_gaps == 2
    assert src.pixel_format == "gray8" and frames[2].image.shape == (3, 4)


# --- registry -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec,kind", [
    ("sim:seed=1,frames=3", "sim"), ("pattern:frames=3", "pattern"),
    ("zmq:tcp://127.0.0.1:5555", "zmq"),
    ("camera:0", "camera"), ("/dev/video2", "camera"), ("a/b/clip.MP4", "video"),
    ("x.webm", "video"), ("x.m4v", "video"), ("seq.igs.mha", "metaimage"), ("v.mhd", "metaimage"),
    ("scan.DCM", "dicom"), ("rec.npz", "npz"),
])
def test_source_kind_dispatch(spec, kind):
    assert source_kind(spec) == kind


def test_open_source_rejects_unknown_options(tmp_path):
    path = tmp_path / "v.mp4"
    write_video(path, 2)
    with pytest.raises(SourceError, match="bad options.*no_such_option"):
        open_source(str(path), no_such_option=1)


def test_sim_spec_dispatches_to_the_simulator_source():
    pytest.importorskip("sonoflow.stream.sources.sim",
                        reason="the simulator source is written by another part of issue 2")
    src = open_source("sim:seed=3,frames=4,fps=30,width=96,height=64")
    frames = read(src)
    assert len(frames) == 4 and src.calibration.source == "simulator"
    assert frames[0].image.dtype == np.uint8


def test_pydicom_is_version_3():
    # the exactly-once YBR handling relies on pydicom 3 converting on decode
    assert int(pydicom.__version__.split(".")[0]) >= 3
