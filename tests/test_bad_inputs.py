"""Every bad input of issue 2 gives a SourceError naming the file and the problem; frames
decoded before a fault are delivered first. All bad files are made here in ``tmp_path``."""

from __future__ import annotations

import os
import zlib
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import cv2
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    MPEG4HP41,
    UID,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from sonoflow.stream.errors import SonoflowError, SourceError
from sonoflow.stream.sources import dicom as dicom_mod
from sonoflow.stream.sources.camera import CameraSource
from sonoflow.stream.sources.registry import open_source
from sonoflow.stream.sources.zmq_producer import ZmqSource


def read_until_error(spec: str | Path, **options):
    """Open and read ``spec``; returns ``(frames_before_error, error)``."""
    got = []
    src = open_source(str(spec), **options)
    try:
        with pytest.raises(SourceError) as info:
            for f in src.frames():
                got.append(f)
    finally:
        src.close()
    return got, info.value


def open_error(spec: str | Path, **options) -> SourceError:
    with pytest.raises(SourceError) as info:
        open_source(str(spec), **options)
    return info.value


def encode_mp4(path: Path, n: int, *, faststart: bool) -> None:
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(0)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(
                rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), format="rgb24")
            frame.pts = i
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def dicom(rows=16, cols=16, frames=1, ts=ExplicitVRLittleEndian) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    return ds


def write_mha(path: Path, body: bytes, header: dict) -> None:
    base = {"ObjectType": "Image", "NDims": "3", "BinaryData": "True",
            "BinaryDataByteOrderMSB": "False", "CompressedData": "False"}
    base.update(header)
    text = "".join(f"{k} = {v}\n" for k, v in base.items()) + "ElementDataFile = LOCAL\n"
    path.write_bytes(text.encode() + body)


# --- source strings -------------------------------------------------------------------------


def test_unknown_source_string_lists_what_is_accepted():
    err = open_error("rtsp-ish:thing")
    assert err.path == "rtsp-ish:thing"
    assert "Accepted:" in err.problem and "zmq:tcp://" in err.problem and "mp4" in err.problem
    assert isinstance(err, SonoflowError)


def test_unknown_extension_of_an_existing_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    err = open_error(path)
    assert "unrecognised source" in err.problem and str(path) in str(err)


# --- video ----------------------------------------------------------------------------------


def test_missing_video(tmp_path):
    err = open_error(tmp_path / "nope.mp4")
    assert err.path.endswith("nope.mp4") and err.problem == "file not found"


def test_empty_video(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    assert "empty" in open_error(path).problem


@pytest.mark.parametrize("content", [b"this is a text file, not a video\n" * 20,
                                     bytes(np.random.default_rng(1).integers(0, 256, 50000,
                                                                             dtype=np.uint8))])
def test_corrupt_or_text_video(tmp_path, content):
    path = tmp_path / "corrupt.mov"
    path.write_bytes(content)
    err = open_error(path)
    assert err.path == str(path) and "cannot open as a video" in err.problem


def test_truncated_mp4_without_index_cannot_open(tmp_path):
    good = tmp_path / "good.mp4"
    encode_mp4(good, 30, faststart=False)  # index (moov) written at the end
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    err = open_error(cut)
    assert err.path == str(cut) and "truncated, corrupt or not a video" in err.problem


def test_truncated_mp4_with_index_delivers_frames_then_errors(tmp_path):
    good = tmp_path / "good.mp4"
    encode_mp4(good, 30, faststart=True)  # index first: the cut loses frames, not the index
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: int(good.stat().st_size * 0.6)])
    frames, err = read_until_error(cut)
    assert 0 < len(frames) < 30
    assert all(f.image is not None for f in frames)
    assert err.path == str(cut)
    assert "states 30 frames" in err.problem or "reading stopped" in err.problem


def test_video_resolution_change_mid_stream(tmp_path):
    path = tmp_path / "resize.mkv"
    with av.open(str(path), "w") as out:
        s = out.add_stream("mjpeg", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuvj420p"
        small = av.CodecContext.create("mjpeg", "w")
        small.width, small.height, small.pix_fmt = 32, 24, "yuvj420p"
        small.time_base = Fraction(1, 25)
        for i in range(6):
            shape = (48, 64, 3) if i < 3 else (24, 32, 3)
            frame = av.VideoFrame.from_ndarray(np.full(shape, 100, np.uint8), format="rgb24")
            frame.pts = i
            for p in (s.encode(frame) if i < 3 else small.encode(frame)):
                p.stream, p.pts, p.dts, p.time_base = s, i, i, Fraction(1, 25)
                out.mux(p)
    frames, err = read_until_error(path)
    assert len(frames) == 3
    assert "frame 3: resolution/format changed mid-stream from 64x48" in err.problem
    assert "32x24" in err.problem


def test_video_non_monotonic_pts_reported(tmp_path):
    path = tmp_path / "pts.mkv"
    with av.open(str(path), "w") as out:
        s = out.add_stream("mjpeg", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuvj420p"
        for i, pts in enumerate([0, 1, 2, 5, 4, 6]):  # frame 4 goes back in time
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * i, np.uint8),
                                               format="rgb24")
            frame.pts = i
            for p in s.encode(frame):
                p.pts, p.dts = pts, i
                out.mux(p)
    src = open_source(str(path))
    frames = list(src.frames())
    src.close()
    assert len(frames) == 6 and src.pts_guard.count == 1
    assert [("pts_warning" in f.extra) for f in frames] == [i == 4 for i in range(6)]
    assert "frame 4: pts 160 is not after frame 3's pts 200" in frames[4].extra["pts_warning"]
    frames, err = read_until_error(path, strict_pts=True)
    assert len(frames) == 4 and "non-monotonic timestamps" in err.problem


# --- DICOM ----------------------------------------------------------------------------------


def test_text_file_named_dcm(tmp_path):
    path = tmp_path / "report.dcm"
    path.write_text("Patient report: nothing to see\n" * 10)
    err = open_error(path)
    assert err.path == str(path) and "not a DICOM file" in err.problem


def test_empty_dcm(tmp_path):
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    assert "empty" in open_error(path).problem


def test_dicom_without_pixel_data(tmp_path):
    path = tmp_path / "nopix.dcm"
    dicom().save_as(path, enforce_file_format=True)
    err = open_error(path)
    assert err.path == str(path) and "no Pixel Data (7FE0,0010)" in err.problem


def test_dicom_with_a_transfer_syntax_nobody_decodes(tmp_path):
    path = tmp_path / "jpip.dcm"
    ds = dicom(frames=2, ts=UID("1.2.840.10008.1.2.4.94"))  # JPIP Referenced
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    err = open_error(path)
    assert "JPIP Referenced (1.2.840.10008.1.2.4.94)" in err.problem
    assert "no pixel decoder" in err.problem and "Transcode" in err.problem


def test_dicom_h264_with_a_broken_stream(tmp_path):
    path = tmp_path / "h264.dcm"
    ds = dicom(frames=2, ts=MPEG4HP41)
    ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = \
        "YBR_PARTIAL_420", 3, 0
    ds.PixelData = encapsulate([b"\x00\x00\x00\x01" + b"\x07garbage" * 8])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    frames, err = read_until_error(path)
    assert all(f.image is None for f in frames)
    assert err.path == str(path) and "MPEG-4 AVC/H.264" in err.problem


def test_dicom_with_a_private_transfer_syntax(tmp_path):
    path = tmp_path / "private.dcm"
    ds = dicom(ts=UID("1.2.826.0.1.3680043.9.9999.1"))
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
    err = open_error(path)
    assert "1.2.826.0.1.3680043.9.9999.1" in err.problem and "private or unknown" in err.problem


def test_dicom_decoder_plugin_missing_names_the_package(tmp_path, monkeypatch):
    """When the plugin for a syntax is not installed, the message names what to install."""
    path = tmp_path / "jls.dcm"
    ds = dicom(ts=JPEGLSLossless)
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    missing = SimpleNamespace(is_available=False, missing_dependencies=[
        "pyjpegls - requires numpy and pyjpegls>=1.2"])
    monkeypatch.setattr(dicom_mod, "get_decoder", lambda uid: missing)
    err = open_error(path)
    assert "JPEG-LS Lossless" in err.problem and "pyjpegls>=1.2" in err.problem
    assert "not installed" in err.problem


def test_truncated_dicom(tmp_path):
    path = tmp_path / "cut.dcm"
    ds = dicom(64, 64, 4)
    ds.PixelData = np.arange(4 * 64 * 64, dtype=np.uint32).astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 64 * 64 - 100])  # frame 2 incomplete, frame 3 gone
    frames, err = read_until_error(path)
    assert len(frames) == 2 and all(f.image is not None for f in frames)
    assert err.path == str(path)
    assert "frame 2: the pixel data ends before this frame is complete" in err.problem
    assert "2 of 4 frame(s) were delivered" in err.problem
    path.write_bytes(data[:300])  # cut inside the header
    assert "truncated before its pixel data" in open_error(path).problem


# --- image folders --------------------------------------------------------------------------


def test_folder_whose_images_change_size(tmp_path):
    for i, shape in enumerate([(20, 30), (20, 30), (24, 30), (20, 30)]):
        cv2.imwrite(str(tmp_path / f"img{i:02d}.png"), np.full(shape, 50 * i, np.uint8))
    frames, err = read_until_error(tmp_path)
    assert len(frames) == 2
    assert err.path.endswith("img02.png")
    assert "frame 2: resolution/format changed mid-stream from 30x20 gray8" in err.problem


def test_folder_with_a_corrupt_image(tmp_path):
    cv2.imwrite(str(tmp_path / "a1.png"), np.zeros((8, 8), np.uint8))
    (tmp_path / "a2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"broken" * 10)
    frames, err = read_until_error(tmp_path)
    assert len(frames) == 1 and err.path.endswith("a2.png")
    assert "frame 1: image cannot be read" in err.problem


def test_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("no images")
    assert "no image files" in open_error(tmp_path).problem


# --- MetaImage ------------------------------------------------------------------------------


def test_float_mha_with_nan_names_the_frame(tmp_path):
    stack = np.full((3, 4, 5), 0.5, np.float32)
    stack[1, 2, 3] = np.nan
    stack[1, 0, 0] = np.inf
    path = tmp_path / "nan.mha"
    write_mha(path, stack.tobytes(), {"DimSize": "5 4 3", "ElementType": "MET_FLOAT"})
    frames, err = read_until_error(path)
    assert len(frames) == 1
    assert err.path == str(path)
    assert "frame 1: float pixel data holds 1 NaN and 1 inf" in err.problem


def test_float_mha_out_of_range_is_explicit(tmp_path):
    stack = np.zeros((2, 4, 5), np.float32)
    stack[1] = 3.0
    path = tmp_path / "range.mha"
    write_mha(path, stack.tobytes(), {"DimSize": "5 4 2", "ElementType": "MET_FLOAT"})
    frames, err = read_until_error(path)
    assert len(frames) == 1 and "frame 1: pixel values span [3, 3]" in err.problem
    assert "value_range" in err.problem
    src = open_source(str(path), out_of_range="clip")
    assert [int(f.image.max()) for f in src.frames()] == [0, 255]
    src = open_source(str(path), value_range=(0.0, 6.0))
    assert [int(f.image.max()) for f in src.frames()] == [0, 128]


def test_truncated_mha(tmp_path):
    path = tmp_path / "cut.mha"
    write_mha(path, bytes(4 * 5 * 2 + 7), {"DimSize": "5 4 3", "ElementType": "MET_UCHAR"})
    err = open_error(path)
    assert "truncated" in err.problem and "2 whole frames" in err.problem


def test_corrupt_compressed_mha(tmp_path):
    data = zlib.compress(np.arange(3 * 64 * 64, dtype=np.uint32).astype(np.uint8).tobytes())
    broken = data[:40] + bytes(len(data) - 40)
    path = tmp_path / "z.mha"
    write_mha(path, broken, {"DimSize": "64 64 3", "ElementType": "MET_UCHAR",
                             "CompressedData": "True", "CompressedDataSize": str(len(broken))})
    _, err = read_until_error(path)
    assert err.path == str(path)
    assert "corrupt (zlib" in err.problem or "truncated" in err.problem


def test_two_channel_mha(tmp_path):
    path = tmp_path / "two.mha"
    write_mha(path, bytes(2 * 3 * 4 * 2), {"DimSize": "3 4 2", "ElementType": "MET_UCHAR",
                                           "ElementNumberOfChannels": "2"})
    assert "ElementNumberOfChannels=2" in open_error(path).problem


def test_text_file_named_mha(tmp_path):
    path = tmp_path / "notes.mha"
    path.write_text("just some notes\nwithout a header\n")
    assert "not 'Key = Value'" in open_error(path).problem


def test_mhd_whose_raw_file_is_missing(tmp_path):
    path = tmp_path / "seq.mhd"
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 4 2\nElementType = MET_UCHAR\n"
                    "ElementDataFile = seq.raw\n")
    err = open_error(path)
    assert "seq.raw" in err.problem and "missing" in err.problem


def test_unsupported_element_type(tmp_path):
    path = tmp_path / "c.mha"
    write_mha(path, bytes(32), {"DimSize": "4 4 1", "ElementType": "MET_COMPLEX"})
    assert "ElementType 'MET_COMPLEX' is not supported" in open_error(path).problem


# --- devices and producers ------------------------------------------------------------------


def test_missing_camera():
    n = next(i for i in range(60, 100) if not os.path.exists(f"/dev/video{i}"))
    err = open_error(f"camera:{n}")
    assert err.path == f"camera:{n}" and f"/dev/video{n}" in err.problem


def test_camera_that_cannot_be_opened(tmp_path):
    src = CameraSource(str(tmp_path / "no_such_stream.mkv"))
    with pytest.raises(SourceError, match="cannot be opened"):
        src.open()


def test_zmq_without_a_producer(tmp_path):
    src = open_source(f"zmq:ipc://{tmp_path}/nobody.sock", first_timeout_s=0.2)
    with pytest.raises(SourceError, match=r"no packet from a producer within 0.2 s"):
        list(src.frames())
    src.close()


def test_zmq_inproc_endpoint_is_refused():
    err = open_error("zmq:inproc://frames")
    assert "inproc:// cannot reach another process" in err.problem


def test_zmq_garbage_packet_fails_alone_and_fatal_error_ends(tmp_path):
    import zmq

    from sonoflow.stream import messages as m

    endpoint = f"ipc://{tmp_path}/p.sock"
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.setsockopt(zmq.SNDTIMEO, 5000)
    push.bind(endpoint)
    src = ZmqSource(endpoint, idle_timeout_s=5)
    src.open()
    got = []
    try:
        push.send_multipart([b"frame/x", b"\xc1 not msgpack"])
        bad_tb = m.FrameHeader(stream_id="x", seq=0, frame_index=0, pts=0, time_base=(1, 0),
                               capture_ns=0, pixel_format="gray8")
        push.send_multipart(m.encode(m.Packet(bad_tb, {"image": np.zeros((4, 4), np.uint8)})))
        h = m.FrameHeader(stream_id="x", seq=1, frame_index=1, pts=1, time_base=(1, 25),
                          capture_ns=0, pixel_format="gray8")
        push.send_multipart(m.encode(m.Packet(h, {"image": np.zeros((4, 4), np.uint8)})))
        push.send_multipart(m.encode(m.Packet(m.ErrorHeader(
            stream_id="x", seq=2, stage="grabber", error_type="DeviceLost",
            message="probe unplugged", fatal=True))))
        with pytest.raises(SourceError) as info:
            for f in src.frames():
                got.append(f)
    finally:
        src.close()
        push.close()
        ctx.term()
    assert [f.image is None for f in got] == [True, True, False]
    assert "undecodable packet" in got[0].error
    assert "time_base [1, 0] is not positive" in got[1].error
    assert "fatal error (DeviceLost): probe unplugged" in info.value.problem


def test_zmq_two_channel_frame_names_the_frame(tmp_path):
    import zmq

    from sonoflow.stream import messages as m

    endpoint = f"ipc://{tmp_path}/p2.sock"
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.setsockopt(zmq.SNDTIMEO, 5000)
    push.bind(endpoint)
    src = ZmqSource(endpoint, idle_timeout_s=5)
    src.open()
    got = []
    try:
        for seq, shape in enumerate([(4, 4, 3), (4, 4, 4), (4, 4, 2)]):
            h = m.FrameHeader(stream_id="x", seq=seq, frame_index=seq, pts=seq,
                              time_base=(1, 25), capture_ns=0, pixel_format="rgb24")
            push.send_multipart(m.encode(m.Packet(h, {"image": np.full(shape, 9, np.uint8)})))
        with pytest.raises(SourceError) as info:
            for f in src.frames():
                got.append(f)
    finally:
        src.close()
        push.close()
        ctx.term()
    assert [f.image.shape for f in got] == [(4, 4, 3), (4, 4, 3)]  # RGBA: alpha dropped
    assert info.value.path == f"zmq:{endpoint}"
    assert "frame 2: 2 channels per pixel" in info.value.problem
