"""DICOM ultrasound (single frames and multi-frame cine) through pydicom 3, frame by frame.

Each frame is decoded on its own (``pydicom.pixels.pixel_array(file, index=i)``, the decoder
plugins pylibjpeg/openjpeg/libjpeg/Pillow behind it), so a cine is never decoded whole and one
undecodable frame becomes a failed ``SourceFrame`` while the rest go on. 8-bit JPEG Baseline
grey or YBR cine (the common ultrasound export) is decoded by OpenCV's libjpeg-turbo instead,
about ten times faster, after the first frame was checked against pydicom's decode (see
``FAST_JPEG_*``; ``decoder="pydicom"`` turns this off). MPEG-2, H.264 and HEVC cine (video
transfer syntaxes, which pydicom cannot decode) go through PyAV packet by packet
(``VIDEO_SYNTAXES``). Colour is converted exactly once:

* ``YBR_FULL`` / ``YBR_FULL_422`` / ``YBR_RCT`` / ``YBR_ICT``: pydicom 3 (or the JPEG codec)
  already returns RGB while the header still says YBR; nothing more is done here.
* ``PALETTE COLOR``: the palette is applied once (``apply_color_lut``); 16-bit LUT entries are
  mapped onto 8 bits.
* ``RGB``: kept. ``MONOCHROME2``: grey. ``MONOCHROME1``: inverted to MONOCHROME2 once.

Pixel spacing comes from the Sequence of Ultrasound Regions (0018,6011) and is used only when
valid (see :func:`calibration_from_regions`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import cv2
import numpy as np
import pydicom
import pydicom.errors
from pydicom.encaps import generate_fragments, generate_frames
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, get_decoder, pixel_array

from sonoflow.stream.errors import SourceError
from sonoflow.stream.sources.base import Calibration, Source, SourceFrame
from sonoflow.stream.sources.pixels import FrameGuard, PtsGuard, to_grey_or_rgb, to_uint8

log = logging.getLogger(__name__)

#: PhysicalUnitsX/YDirection code for centimetres (DICOM PS3.3 C.8.5.5.1.15)
UNITS_CM = 3
#: RegionSpatialFormat 2D and RegionDataType tissue (PS3.3 C.8.5.5.1.1/.2)
SPATIAL_FORMAT_2D = 1
DATA_TYPE_TISSUE = 1
#: frame rate assumed when the file states none (documented; ``fps=`` overrides)
DEFAULT_FPS = 30.0
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: JPEG Baseline (the common ultrasound cine syntax) with these photometric interpretations may
#: be decoded by OpenCV's libjpeg-turbo (about 10x pydicom's pylibjpeg + numpy YBR path here,
#: see benchmarks/sections/sources.md); the result is checked against pydicom's on the first
#: decodable frame and the source falls back to pydicom for good when they differ.
FAST_JPEG_SYNTAX = "1.2.840.10008.1.2.4.50"
FAST_JPEG_PHOTOMETRIC = {"YBR_FULL_422": 3, "YBR_FULL": 3, "MONOCHROME2": 1}
#: agreement required between the OpenCV path and pydicom on the check frame. JPEG decoders
#: differ slightly in chroma upsampling and IDCT rounding (libjpeg-turbo vs pylibjpeg on the
#: real SonoSite cine: mean |diff| 0.025, 99.9th percentile 2, max 5 grey levels); a missing or
#: doubled YBR->RGB conversion gives a mean |diff| near 47, so these bounds separate the two.
FAST_JPEG_MAX_MEAN_DIFF = 0.5
FAST_JPEG_MAX_P999_DIFF = 4.0
DECODERS = ("auto", "pydicom")
#: video transfer syntaxes (PS3.5 8.2.5-8.2.8: one MPEG elementary stream split over the
#: fragments) -> the FFmpeg raw-stream demuxer that reads them; decoded through PyAV, which
#: pydicom has no plugin for. Stereo H.264 (.106) is not in the list: one view is not a cine.
VIDEO_SYNTAXES = {
    "1.2.840.10008.1.2.4.100": "mpegvideo", "1.2.840.10008.1.2.4.100.1": "mpegvideo",
    "1.2.840.10008.1.2.4.101": "mpegvideo", "1.2.840.10008.1.2.4.101.1": "mpegvideo",
    "1.2.840.10008.1.2.4.102": "h264", "1.2.840.10008.1.2.4.102.1": "h264",
    "1.2.840.10008.1.2.4.103": "h264", "1.2.840.10008.1.2.4.103.1": "h264",
    "1.2.840.10008.1.2.4.104": "h264", "1.2.840.10008.1.2.4.104.1": "h264",
    "1.2.840.10008.1.2.4.105": "h264", "1.2.840.10008.1.2.4.105.1": "h264",
    "1.2.840.10008.1.2.4.107": "hevc", "1.2.840.10008.1.2.4.108": "hevc",
}
# What pydicom raises from a decoder on bad frame data (no broad except).
_DECODE_ERRORS = (ValueError, RuntimeError, NotImplementedError, OSError, EOFError)


def is_dicom_file(path: str | Path) -> bool:
    """True when the file carries the ``DICM`` marker at byte 128 (DICOM Part 10)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def calibration_from_regions(ds: pydicom.Dataset) -> Calibration:
    """mm/px from the Sequence of Ultrasound Regions, only when it can be trusted.

    A region counts when it is a 2D tissue region (RegionSpatialFormat 1, RegionDataType 1)
    whose box lies inside the image (``0 <= x0 <= x1 <= Columns`` and likewise for rows: some
    scanners write the exclusive end), whose PhysicalUnitsX/YDirection are 3 (cm) and whose
    PhysicalDeltaX/Y are positive. All such regions must agree (dual view) to within 1 %.

    Args:
        ds: the dataset (header only is enough).

    Returns:
        ``Calibration((x_mm, y_mm), "dicom-regions")`` or ``Calibration(None, "none", note)``
        with the reason it was refused.
    """
    regions = ds.get("SequenceOfUltrasoundRegions")
    if not regions:
        return Calibration(None, "none", note="no Sequence of Ultrasound Regions (0018,6011)")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    good: list[tuple[float, float]] = []
    refused: list[str] = []
    for i, r in enumerate(regions):
        fmt, dtype = r.get("RegionSpatialFormat"), r.get("RegionDataType")
        if fmt != SPATIAL_FORMAT_2D or dtype != DATA_TYPE_TISSUE:
            continue  # M-mode, Doppler, waveform, colour bar: not for B-mode spacing
        try:
            x0, y0 = int(r.RegionLocationMinX0), int(r.RegionLocationMinY0)
            x1, y1 = int(r.RegionLocationMaxX1), int(r.RegionLocationMaxY1)
            ux, uy = int(r.PhysicalUnitsXDirection), int(r.PhysicalUnitsYDirection)
            dx, dy = float(r.PhysicalDeltaX), float(r.PhysicalDeltaY)
        except AttributeError as e:
            refused.append(f"region {i}: missing attribute ({e})")
            continue
        if not (0 <= x0 <= x1 <= cols and 0 <= y0 <= y1 <= rows):
            refused.append(f"region {i}: box ({x0},{y0})-({x1},{y1}) lies outside the "
                           f"{cols}x{rows} image")
            continue
        if ux != UNITS_CM or uy != UNITS_CM:
            refused.append(f"region {i}: physical units ({ux},{uy}), expected (3,3) = cm")
            continue
        if not (dx > 0 and dy > 0):
            refused.append(f"region {i}: physical deltas ({dx},{dy}) not positive")
            continue
        good.append((dx * 10.0, dy * 10.0))
    if not good:
        note = "; ".join(refused) or "no 2D tissue region in (0018,6011)"
        return Calibration(None, "none", note=f"ultrasound regions refused: {note}")
    x_mm, y_mm = good[0]
    for gx, gy in good[1:]:
        if abs(gx - x_mm) > 0.01 * x_mm or abs(gy - y_mm) > 0.01 * y_mm:
            return Calibration(None, "none", note=f"ultrasound regions disagree on spacing: "
                                                  f"{good}")
    note = ("; ".join(refused) + " (other regions used)") if refused else ""
    return Calibration((x_mm, y_mm), "dicom-regions", note=note)


def frame_times_ms(ds: pydicom.Dataset, n_frames: int) -> tuple[list[float] | None, float | None]:
    """Per-frame start times and the frame rate from the cine attributes.

    Uses FrameTimeVector (0018,1065), then FrameTime (0018,1063), CineRate (0018,0040),
    RecommendedDisplayFrameRate (0008,2144).

    Args:
        ds: the dataset.
        n_frames: number of frames.

    Returns:
        ``(times_ms or None, fps or None)``; None when the file states no timing.
    """
    ftv = ds.get("FrameTimeVector")
    if ftv is not None:
        values = [float(v) for v in ftv] if isinstance(ftv, MultiValue) else [float(ftv)]
        # entry 0 is the time before the first frame (0 by convention); entry i the time
        # between frame i-1 and frame i, in ms
        if len(values) == n_frames and all(v >= 0 for v in values):
            times = np.cumsum(values) - values[0]
            mean_ms = float(np.mean(values[1:])) if n_frames > 1 else 0.0
            return [float(t) for t in times], (1000.0 / mean_ms if mean_ms > 0 else None)
    for keyword, to_ms in (("FrameTime", lambda v: v),
                           ("CineRate", lambda v: 1000.0 / v),
                           ("RecommendedDisplayFrameRate", lambda v: 1000.0 / v)):
        v = ds.get(keyword)
        if v not in (None, ""):
            try:
                value = float(v)
            except (TypeError, ValueError):
                continue
            if value > 0:
                ms = to_ms(value)
                return [i * ms for i in range(n_frames)], 1000.0 / ms
    return None, None


class DicomSource(Source):
    """A DICOM file (single frame or cine) decoded frame by frame.

    Attributes:
        pixel_format: ``"gray8"`` or ``"rgb24"`` (after :meth:`open`).
        photometric: the header's PhotometricInterpretation.
        transfer_syntax: the transfer syntax UID's name.
        timing_source: ``"header"`` (FrameTime & co.) or ``"assumed"`` (``fps`` option).
        decoded, failed: counts so far.
    """

    time_base = (1, 1_000_000)  # pts in microseconds

    def __init__(self, path: str | Path, *, fps: float | None = None,
                 value_range: tuple[float, float] | None = None, out_of_range: str = "error",
                 strict_pts: bool = False, decoder: str = "auto", spec: str | None = None):
        """Args:
            path: the DICOM file.
            fps: frame rate to assume when the file states none (default 30).
            value_range: for grey data deeper than 8 bits, the range mapped onto 0..255
                (default: 0 .. 2**BitsStored - 1).
            out_of_range: ``"error"`` or ``"clip"`` (see ``pixels.to_uint8``).
            strict_pts: raise on non-monotonic timing.
            decoder: ``"auto"`` (OpenCV for 8-bit JPEG Baseline grey/YBR, verified against
                pydicom on the first frame; pydicom otherwise) or ``"pydicom"`` (always).
            spec: the string the user gave (defaults to ``path``).
        """
        self.path = Path(path)
        if decoder not in DECODERS:
            raise SourceError(str(path), f"decoder={decoder!r}; expected one of {DECODERS}")
        self.decoder_option = decoder
        #: which decoder produced the frames: "pydicom" or "opencv" (verified)
        self.decoder = "pydicom"
        self.spec = spec or str(path)
        self._fps_option = fps
        self.value_range = value_range
        self.out_of_range = out_of_range
        self.pts_guard = PtsGuard(str(self.path), strict=strict_pts)
        self.pixel_format = "gray8"
        self.photometric = ""
        self.transfer_syntax = ""
        self.timing_source = "assumed"
        self.decoded = 0
        self.failed = 0
        self._ds: pydicom.Dataset | None = None
        self._file: BinaryIO | None = None
        self._times_ms: list[float] = []
        self._native = True
        self._fast_candidate = False
        self._video_format: str | None = None

    def open(self) -> None:
        """Read and validate the header; check a decoder exists (idempotent).

        Raises:
            SourceError: missing/empty file, not DICOM, no pixel data, missing image
                attributes, or no installed decoder for the transfer syntax.
        """
        if self._ds is not None:
            return
        p = self.path
        if not p.exists():
            raise SourceError(str(p), "file not found")
        if p.stat().st_size == 0:
            raise SourceError(str(p), "file is empty (0 bytes)")
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=False, defer_size="64 KB")
        except pydicom.errors.InvalidDicomError as e:
            raise SourceError(str(p), "not a DICOM file: no 'DICM' marker at byte 128 and no "
                                      "readable DICOM header (a DICOMDIR, report or other file "
                                      "named .dcm?)") from e
        except (OSError, EOFError, ValueError, KeyError, TypeError) as e:
            raise SourceError(str(p), f"DICOM header cannot be read ({type(e).__name__}: {e}); "
                                      "the file is truncated or corrupt") from e
        if not any(k in ds for k in _PIXEL_KEYWORDS):
            sop = ds.get("SOPClassUID")
            what = f" (SOP class {sop.name})" if sop is not None and hasattr(sop, "name") else ""
            raise SourceError(str(p), f"no Pixel Data (7FE0,0010) in this DICOM file{what}; "
                                      "it holds no image to replay (a report or presentation "
                                      "state, or a file truncated before its pixel data)")
        for attr in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated",
                     "PhotometricInterpretation"):
            if ds.get(attr) in (None, ""):
                raise SourceError(str(p), f"image attribute {attr} is missing; cannot decode "
                                          "the pixel data")
        ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if ts is None:
            raise SourceError(str(p), "no TransferSyntaxUID in the file meta information")
        self.transfer_syntax = f"{ts.name} ({ts})" if ts.name != ts else str(ts)
        self._video_format = VIDEO_SYNTAXES.get(str(ts))
        if self._video_format is None:
            self._check_decoder(ts)
        self._native = not ts.is_compressed
        pi = str(ds.PhotometricInterpretation)
        self._fast_candidate = (self.decoder_option == "auto" and ts == FAST_JPEG_SYNTAX
                                and int(ds.BitsAllocated) == 8
                                and FAST_JPEG_PHOTOMETRIC.get(pi) == int(ds.SamplesPerPixel))
        n = int(ds.get("NumberOfFrames") or 1)
        if n < 1:
            raise SourceError(str(p), f"NumberOfFrames is {n}; expected at least 1")
        self.frame_count = n
        self.photometric = str(ds.PhotometricInterpretation)
        spp = int(ds.SamplesPerPixel)
        self.pixel_format = "rgb24" if (spp == 3 or self.photometric == "PALETTE COLOR") else "gray8"
        times, fps = frame_times_ms(ds, n)
        if times is None:
            self.fps = float(self._fps_option or DEFAULT_FPS)
            self._times_ms = [i * 1000.0 / self.fps for i in range(n)]
            self.timing_source = "assumed"
        else:
            self.fps = fps if fps is not None else self._fps_option
            self._times_ms = times
            self.timing_source = "header"
        self.calibration = calibration_from_regions(ds)
        self._ds = ds

    def _check_decoder(self, ts: pydicom.uid.UID) -> None:
        """Raise a clear error when no installed plugin decodes ``ts``."""
        if not ts.is_transfer_syntax:
            raise SourceError(str(self.path), f"transfer syntax {self.transfer_syntax} is not a "
                                              "standard DICOM transfer syntax (private or "
                                              "unknown): pydicom has no pixel decoder for it. "
                                              "Transcode the file with the vendor's tool to an "
                                              "uncompressed or JPEG transfer syntax")
        if not ts.is_compressed:
            return
        try:
            decoder = get_decoder(ts)
        except NotImplementedError as e:
            raise SourceError(str(self.path), f"transfer syntax {self.transfer_syntax} cannot be "
                                              "decoded: pydicom has no pixel decoder for it. "
                                              "Transcode the file to an uncompressed or JPEG "
                                              "transfer syntax (e.g. dcmtk `dcmdjpeg`/`gdcmconv "
                                              "--raw`) before replay") from e
        if not decoder.is_available:
            needs = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
            raise SourceError(str(self.path), f"transfer syntax {self.transfer_syntax} needs a "
                                              f"decoder that is not installed: {needs}. Install "
                                              "one of these packages (pip install ...) into the "
                                              "environment")

    def frames(self) -> Iterator[SourceFrame]:
        """Decode and yield each frame in order.

        Yields:
            ``SourceFrame`` with a ``uint8`` grey or RGB image, or ``image=None`` and ``error``
            for a frame that failed to decode.

        Raises:
            SourceError: the file vanished, geometry changed, or pixel values are NaN/inf or
                out of range.
        """
        self.open()
        ds = self._ds
        guard = FrameGuard(str(self.path))
        if self._video_format is not None:
            yield from self._video_frames(ds, guard)
            return
        try:
            self._file = open(self.path, "rb")
        except OSError as e:
            raise SourceError(str(self.path), f"cannot reopen for pixel data: {e}") from e
        n = self.frame_count or 1
        fast = self._fast_frames(ds, n)
        verified = False
        try:
            for i in range(n):
                pts = int(round(self._times_ms[i] * 1000.0))
                raw = None
                if fast is not None:
                    raw, fast, verified = self._fast_decode(fast, i, verified)
                if raw is None:
                    try:
                        raw = self._pydicom_decode(i)
                    except _DECODE_ERRORS as e:
                        if self._native:
                            # native (uncompressed) frames fail only when bytes are missing
                            raise SourceError(str(self.path), f"frame {i}: the pixel data ends "
                                                              "before this frame is complete "
                                                              f"({type(e).__name__}: {e}): the "
                                                              f"file is truncated; {i} of "
                                                              f"{self.frame_count} frame(s) "
                                                              "were delivered") from e
                        self.failed += 1
                        log.warning("%s: frame %d failed to decode: %s", self.path, i, e)
                        yield SourceFrame(image=None, frame_index=i, pts=pts,
                                          time_base=self.time_base,
                                          error=f"frame {i} failed to decode "
                                                f"({self.transfer_syntax}): "
                                                f"{type(e).__name__}: {e}")
                        continue
                image, fmt = self._convert(raw, ds, i)
                guard.check(image, fmt, i)
                extra: dict[str, Any] = {}
                note = self.pts_guard.check(pts, i)
                if note:
                    extra["pts_warning"] = note
                self.decoded += 1
                yield SourceFrame(image=image, frame_index=i, pts=pts, time_base=self.time_base,
                                  extra=extra)
        finally:
            self._close_file()

    def _video_frames(self, ds: pydicom.Dataset, guard: FrameGuard) -> Iterator[SourceFrame]:
        """Frames of an MPEG-2 / H.264 / HEVC DICOM through PyAV, packet by packet.

        pts come from the DICOM timing (the raw elementary stream carries none); a packet that
        fails to decode is one failed frame; fewer frames than NumberOfFrames is an error
        after the decoded ones were delivered.
        """
        import io

        import av
        import av.error

        n = self.frame_count or 1
        try:
            stream_bytes = b"".join(generate_fragments(ds.PixelData))
        except _DECODE_ERRORS as e:
            raise SourceError(str(self.path), f"encapsulated {self.transfer_syntax} pixel data "
                                              f"cannot be read: {e}") from e
        try:
            container = av.open(io.BytesIO(stream_bytes), format=self._video_format)
        except av.error.FFmpegError as e:
            raise SourceError(str(self.path), f"the {self.transfer_syntax} stream cannot be "
                                              f"opened by FFmpeg: {e.strerror or e}") from e
        fmt = "gray" if self.pixel_format == "gray8" else "rgb24"
        index = 0
        try:
            if not container.streams.video:
                raise SourceError(str(self.path), f"no video in the {self.transfer_syntax} "
                                                  "pixel data")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for packet in container.demux(stream):
                if index >= n:
                    log.warning("%s: the %s stream holds more than NumberOfFrames=%d frames; "
                                "the rest are ignored", self.path, self.transfer_syntax, n)
                    break
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as e:
                    pts = int(round(self._times_ms[index] * 1000.0))
                    self.failed += 1
                    yield SourceFrame(image=None, frame_index=index, pts=pts,
                                      time_base=self.time_base,
                                      error=f"frame {index} failed to decode "
                                            f"({self.transfer_syntax}): {e.strerror or e}")
                    index += 1
                    continue
                for frame in decoded:
                    if index >= n:
                        break
                    image = np.ascontiguousarray(frame.to_ndarray(format=fmt))
                    guard.check(image, self.pixel_format, index)
                    pts = int(round(self._times_ms[index] * 1000.0))
                    self.decoded += 1
                    yield SourceFrame(image=image, frame_index=index, pts=pts,
                                      time_base=self.time_base)
                    index += 1
        finally:
            container.close()
        if index < n:
            raise SourceError(str(self.path), f"NumberOfFrames is {n} but the "
                                              f"{self.transfer_syntax} stream ended after "
                                              f"{index} frame(s) ({self.decoded} decoded, "
                                              f"{self.failed} failed): the pixel data is "
                                              "truncated or corrupt")

    def _pydicom_decode(self, i: int) -> np.ndarray:
        """Frame ``i`` through pydicom's frame-level decoding (RGB for YBR/RGB data)."""
        self._file.seek(0)
        return pixel_array(self._file, index=i)

    def _fast_frames(self, ds: pydicom.Dataset, n: int) -> Iterator[bytes] | None:
        """The encapsulated JPEG frames, one at a time, when the OpenCV path applies."""
        if not self._fast_candidate:
            return None
        try:
            return generate_frames(ds.PixelData, number_of_frames=n)
        except _DECODE_ERRORS as e:
            log.info("%s: encapsulated frames not readable for the fast path (%s); using "
                     "pydicom", self.path, e)
            return None

    def _fast_decode(self, fast: Iterator[bytes], i: int,
                     verified: bool) -> tuple[np.ndarray | None, Iterator[bytes] | None, bool]:
        """Frame ``i`` through OpenCV, checked against pydicom until one frame agreed.

        Returns:
            ``(image or None, iterator or None, verified)``: image None = let pydicom decode
            this frame; iterator None = the fast path is abandoned for the rest of the file.
        """
        try:
            data = next(fast)
        except (StopIteration, *_DECODE_ERRORS) as e:
            log.info("%s: frame %d: no encapsulated frame for the fast path (%s); using "
                     "pydicom from here", self.path, i, e)
            return None, None, verified
        grey = FAST_JPEG_PHOTOMETRIC[self.photometric] == 1
        img = cv2.imdecode(np.frombuffer(data, np.uint8),
                           cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
        if img is None:
            return None, fast, verified  # pydicom decodes it or reports the error
        if not grey:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)  # the JPEG decoder already did YBR->RGB
        if verified:
            return img, fast, True
        try:
            ref = self._pydicom_decode(i)
        except _DECODE_ERRORS:
            return None, fast, False  # pydicom reports this frame; verify on a later one
        diff = (np.abs(ref.astype(np.int16) - img) if ref.shape == img.shape else None)
        if diff is None or float(diff.mean()) > FAST_JPEG_MAX_MEAN_DIFF or \
                float(np.percentile(diff, 99.9)) > FAST_JPEG_MAX_P999_DIFF:
            log.warning("%s: OpenCV and pydicom disagree on frame %d; decoding the whole "
                        "file with pydicom", self.path, i)
            return ref, None, False
        self.decoder = "opencv"
        return img, fast, True

    def _convert(self, raw: np.ndarray, ds: pydicom.Dataset, i: int) -> tuple[np.ndarray, str]:
        """One decoded frame to ``uint8`` grey/RGB, colour converted exactly once."""
        path = str(self.path)
        pi = self.photometric
        if pi == "PALETTE COLOR":
            rgb = apply_color_lut(raw, ds)
            if rgb.dtype != np.uint8:
                # LUT entries are 16-bit words: the top byte is the 8-bit colour
                rgb = (rgb >> 8).astype(np.uint8) if rgb.dtype == np.uint16 else to_uint8(
                    rgb, path=path, frame_index=i, value_range=self.value_range,
                    out_of_range=self.out_of_range)
            return to_grey_or_rgb(rgb, path=path, frame_index=i)
        # YBR_*: already RGB after pydicom's decode (as_rgb=True default); not converted again
        if raw.dtype != np.uint8:
            value_range = self.value_range
            if value_range is None and np.issubdtype(raw.dtype, np.integer):
                bits = int(ds.get("BitsStored") or raw.dtype.itemsize * 8)
                signed = int(ds.get("PixelRepresentation") or 0) == 1
                value_range = ((-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed
                               else (0, 2 ** bits - 1))
            raw = to_uint8(raw, path=path, frame_index=i, value_range=value_range,
                           out_of_range=self.out_of_range)
        if pi == "MONOCHROME1":
            raw = 255 - raw
        return to_grey_or_rgb(raw, path=path, frame_index=i)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        """Release the file and the header (idempotent)."""
        self._close_file()
        self._ds = None
