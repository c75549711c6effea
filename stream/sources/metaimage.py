"""MetaImage and PLUS sequences: ``.mha`` (header + data in one file) or ``.mhd`` + ``.raw``.

The ASCII header (``Key = Value`` lines, ``ElementDataFile`` last) is parsed here. A 2-D image
is one frame; a 3-D image of ``DimSize = W H N`` is ``N`` frames of ``H x W``. PLUS sequence
files carry per-frame fields ``Seq_Frame####_Timestamp`` (seconds); pts are taken from them
(microseconds since the first frame; a frame with no timestamp gets one interpolated between
its neighbours, marked in ``extra``). Zlib-compressed data (``CompressedData = True``) is
decompressed as a stream, one frame at a time. Uncompressed data is read one frame at a time
from the file, never whole.

Element types: ``MET_UCHAR`` (as is), ``MET_CHAR``/``MET_SHORT``/``MET_USHORT``/``MET_INT``/
``MET_UINT`` (mapped from ``ElementMin``/``ElementMax`` when the header states them, else the
type's range), ``MET_FLOAT``/``MET_DOUBLE`` (NaN/inf refused naming the frame; mapped from
``value_range``, default ``[0, 1]``; out-of-range values refused or clipped, see
``pixels.to_uint8``). ``ElementNumberOfChannels`` 1, 3 or 4 (alpha dropped).
"""

from __future__ import annotations

import logging
import re
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from sonoflow.stream.errors import SourceError
from sonoflow.stream.sources.base import Calibration, Source, SourceFrame
from sonoflow.stream.sources.pixels import FrameGuard, PtsGuard, to_grey_or_rgb, to_uint8

log = logging.getLogger(__name__)

ELEMENT_TYPES = {
    "MET_UCHAR": "u1", "MET_CHAR": "i1", "MET_USHORT": "u2", "MET_SHORT": "i2",
    "MET_UINT": "u4", "MET_INT": "i4", "MET_ULONG": "u4", "MET_LONG": "i4",
    "MET_ULONG_LONG": "u8", "MET_LONG_LONG": "i8", "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
}
#: frame rate assumed when a sequence carries no timestamps (``fps=`` overrides)
DEFAULT_FPS = 30.0
_MAX_HEADER_BYTES = 64 * 1024 * 1024
_FRAME_FIELD = re.compile(r"^Seq_Frame(\d+)_(\w+)$")
_READ_CHUNK = 1 << 20


def parse_header(path: Path) -> tuple[dict[str, str], dict[int, dict[str, str]], int]:
    """Read a MetaImage header.

    Args:
        path: ``.mha`` or ``.mhd`` file.

    Returns:
        ``(fields, per_frame, data_offset)``: the global ``Key -> value`` fields (values
        stripped), the PLUS per-frame fields ``{frame: {name: value}}``, and the byte offset of
        the data in ``path`` (meaningful for ``ElementDataFile = LOCAL``).

    Raises:
        SourceError: no ``ElementDataFile`` line, a line that is not ``Key = Value``, or a
            header that is not text.
    """
    fields: dict[str, str] = {}
    per_frame: dict[int, dict[str, str]] = {}
    offset = 0
    with open(path, "rb") as f:
        while True:
            line = f.readline()
            if not line:
                raise SourceError(str(path), f"MetaImage header has no ElementDataFile line "
                                             f"(read {offset} bytes); the file is truncated or "
                                             "not MetaImage")
            offset += len(line)
            if offset > _MAX_HEADER_BYTES:
                raise SourceError(str(path), "MetaImage header exceeds 64 MiB without an "
                                             "ElementDataFile line; not a MetaImage file")
            text = line.decode("latin-1").strip()
            if not text:
                continue
            key, sep, value = text.partition("=")
            if not sep:
                raise SourceError(str(path), f"MetaImage header line {text[:60]!r} is not "
                                             "'Key = Value'; not a MetaImage file")
            key, value = key.strip(), value.strip()
            m = _FRAME_FIELD.match(key)
            if m:
                per_frame.setdefault(int(m.group(1)), {})[m.group(2)] = value
            else:
                fields[key] = value
            if key == "ElementDataFile":
                return fields, per_frame, offset


def _bool(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


class MetaImageSource(Source):
    """A MetaImage / PLUS sequence read frame by frame.

    Attributes:
        pixel_format: ``"gray8"`` or ``"rgb24"``.
        element_type: the header's ``ElementType``.
        spacing_mm: ``ElementSpacing`` x, y (PLUS writes mm; not used as calibration unless
            ``trust_spacing`` is set, since many sequences store 1 1 placeholders).
        timing_source: ``"header"`` (PLUS timestamps) or ``"assumed"``.
        timestamps_s: absolute per-frame timestamps (s) after interpolation.
    """

    time_base = (1, 1_000_000)  # pts in microseconds

    def __init__(self, path: str | Path, *, fps: float | None = None,
                 value_range: tuple[float, float] | None = None, out_of_range: str = "error",
                 strict_pts: bool = False, trust_spacing: bool = False,
                 spec: str | None = None):
        """Args:
            path: ``.mha`` or ``.mhd`` file.
            fps: frame rate to assume when there are no timestamps (default 30).
            value_range: range mapped onto 0..255 for non-uint8 data (see module docstring).
            out_of_range: ``"error"`` or ``"clip"``.
            strict_pts: raise on non-monotonic timestamps instead of warning.
            trust_spacing: use ``ElementSpacing`` as calibration (source ``"user"``).
            spec: the string the user gave (defaults to ``path``).
        """
        self.path = Path(path)
        self.spec = spec or str(path)
        self._fps_option = fps
        self.value_range = value_range
        self.out_of_range = out_of_range
        self.trust_spacing = trust_spacing
        self.pts_guard = PtsGuard(str(self.path), strict=strict_pts)
        self.pixel_format = "gray8"
        self.element_type = ""
        self.spacing_mm: tuple[float, float] | None = None
        self.timing_source = "assumed"
        self.timestamps_s: list[float] = []
        self._interpolated: set[int] = set()
        self._opened = False
        self._shape: tuple[int, int, int] = (0, 0, 1)  # H, W, channels
        self._dtype = np.dtype("u1")
        self._data_path = self.path
        self._data_offset = 0
        self._compressed = False
        self._compressed_size: int | None = None
        self._file: BinaryIO | None = None

    def open(self) -> None:
        """Parse and validate the header (idempotent).

        Raises:
            SourceError: missing/empty file, malformed header, unsupported element type or
                dimensions, missing data file, or data shorter than the header says.
        """
        if self._opened:
            return
        p = self.path
        if not p.exists():
            raise SourceError(str(p), "file not found")
        if p.stat().st_size == 0:
            raise SourceError(str(p), "file is empty (0 bytes)")
        fields, per_frame, offset = parse_header(p)
        try:
            ndims = int(fields.get("NDims", "0"))
            dims = [int(v) for v in fields["DimSize"].split()]
        except (KeyError, ValueError) as e:
            raise SourceError(str(p), f"MetaImage header needs NDims and DimSize as integers "
                                      f"({e})") from e
        if ndims not in (2, 3) or len(dims) != ndims or min(dims) < 1:
            raise SourceError(str(p), f"NDims={ndims}, DimSize={dims}: expected a 2-D image or "
                                      "a 3-D sequence (W H N) with positive sizes")
        etype = fields.get("ElementType", "")
        if etype not in ELEMENT_TYPES:
            raise SourceError(str(p), f"ElementType {etype!r} is not supported; expected one of "
                                      f"{sorted(ELEMENT_TYPES)}")
        msb = _bool(fields.get("BinaryDataByteOrderMSB", fields.get("ElementByteOrderMSB",
                                                                    "False")))
        self._dtype = np.dtype(ELEMENT_TYPES[etype]).newbyteorder(">" if msb else "<")
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        if channels not in (1, 3, 4):
            raise SourceError(str(p), f"ElementNumberOfChannels={channels}; expected 1 (grey), "
                                      "3 (RGB) or 4 (RGBA, alpha dropped)")
        if "BinaryData" in fields and not _bool(fields["BinaryData"]):
            raise SourceError(str(p), "BinaryData = False (ASCII pixel data) is not supported; "
                                      "re-save the image as binary MetaImage")
        w, h = dims[0], dims[1]
        n = dims[2] if ndims == 3 else 1
        self._shape = (h, w, channels)
        self.element_type = etype
        self.frame_count = n
        self.pixel_format = "gray8" if channels == 1 else "rgb24"
        self._compressed = _bool(fields.get("CompressedData", "False"))
        if "CompressedDataSize" in fields:
            self._compressed_size = int(fields["CompressedDataSize"].split()[0])
        data_file = fields["ElementDataFile"]
        if data_file == "LOCAL":
            self._data_path, self._data_offset = p, offset
        elif data_file.startswith("LIST") or "%" in data_file:
            raise SourceError(str(p), f"ElementDataFile = {data_file!r} (one file per slice) is "
                                      "not supported; use a single .raw or a .mha")
        else:
            self._data_path, self._data_offset = p.parent / data_file, 0
            if not self._data_path.exists():
                raise SourceError(str(p), f"data file {self._data_path} named by "
                                          "ElementDataFile is missing")
            header_size = int(fields.get("HeaderSize", "0"))
            if header_size == -1 and not self._compressed:  # data is the tail of the file
                header_size = self._data_path.stat().st_size - n * self._frame_bytes()
            self._data_offset = max(header_size, 0)
        if not self._compressed:
            need = n * self._frame_bytes()
            have = self._data_path.stat().st_size - self._data_offset
            if have < need:
                raise SourceError(str(p), f"pixel data holds {have} bytes but DimSize "
                                          f"{dims} x {channels} ch x {etype} needs {need}: the "
                                          f"data is truncated ({have // self._frame_bytes()} "
                                          "whole frames)")
        if "ElementMin" in fields and "ElementMax" in fields and self.value_range is None:
            self.value_range = (float(fields["ElementMin"]), float(fields["ElementMax"]))
        spacing = fields.get("ElementSpacing", "").split()
        if len(spacing) >= 2:
            self.spacing_mm = (float(spacing[0]), float(spacing[1]))
            if self.trust_spacing:
                self.calibration = Calibration(self.spacing_mm, "user",
                                               note="MetaImage ElementSpacing (trust_spacing)")
        if self.calibration.source == "none":
            self.calibration = Calibration(None, "none", note="MetaImage ElementSpacing is not "
                                                              "trusted as calibration by default")
        self._set_timing(per_frame, n)
        self._opened = True

    def _frame_bytes(self) -> int:
        h, w, c = self._shape
        return h * w * c * self._dtype.itemsize

    def _set_timing(self, per_frame: dict[int, dict[str, str]], n: int) -> None:
        """Per-frame timestamps from ``Seq_Frame####_Timestamp``, interpolating gaps."""
        stamps: list[float | None] = []
        for i in range(n):
            raw = per_frame.get(i, {}).get("Timestamp")
            try:
                stamps.append(float(raw) if raw is not None else None)
            except ValueError:
                log.warning("%s: frame %d timestamp %r is not a number", self.path, i, raw)
                stamps.append(None)
        known = [i for i, t in enumerate(stamps) if t is not None]
        if not known:
            fps = float(self._fps_option or DEFAULT_FPS)
            self.fps, self.timing_source = fps, "assumed"
            self.timestamps_s = [i / fps for i in range(n)]
            return
        if len(known) < n:
            xs = np.array(known, dtype=float)
            ys = np.array([stamps[i] for i in known], dtype=float)
            if len(known) >= 2:
                slope = (ys[-1] - ys[0]) / (xs[-1] - xs[0])
            else:
                slope = 1.0 / float(self._fps_option or DEFAULT_FPS)
            for i in range(n):
                if stamps[i] is None:
                    self._interpolated.add(i)
                    if xs[0] <= i <= xs[-1]:
                        stamps[i] = float(np.interp(i, xs, ys))
                    elif i < xs[0]:
                        stamps[i] = float(ys[0] - (xs[0] - i) * slope)
                    else:
                        stamps[i] = float(ys[-1] + (i - xs[-1]) * slope)
            log.info("%s: %d frame(s) without a timestamp, interpolated", self.path,
                     len(self._interpolated))
        self.timestamps_s = [float(t) for t in stamps]  # type: ignore[arg-type]
        self.timing_source = "header"
        diffs = np.diff(self.timestamps_s)
        pos = diffs[diffs > 0]
        self.fps = float(1.0 / np.median(pos)) if pos.size else self._fps_option

    def _raw_frames(self) -> Iterator[bytes]:
        """The bytes of each frame in order (decompressing zlib data as a stream)."""
        size = self._frame_bytes()
        n = self.frame_count or 1
        self._file = open(self._data_path, "rb")
        self._file.seek(self._data_offset)
        if not self._compressed:
            for _ in range(n):
                yield self._file.read(size)
            return
        dec = zlib.decompressobj()
        buf = bytearray()
        left = self._compressed_size
        emitted = 0
        while emitted < n:
            while len(buf) < size:
                if dec.eof:
                    return
                want = _READ_CHUNK if left is None else min(_READ_CHUNK, left)
                chunk = self._file.read(want) if want > 0 else b""
                if left is not None:
                    left -= len(chunk)
                if not chunk:
                    buf += dec.flush()
                    if len(buf) < size:
                        return
                    break
                try:
                    buf += dec.decompress(chunk)
                except zlib.error as e:
                    raise SourceError(str(self.path), f"frame {emitted}: compressed pixel data "
                                                      f"is corrupt (zlib: {e})") from e
            yield bytes(buf[:size])
            del buf[:size]
            emitted += 1

    def frames(self) -> Iterator[SourceFrame]:
        """Yield each frame in order.

        Yields:
            ``SourceFrame`` with a ``uint8`` ``(H, W)`` or ``(H, W, 3)`` image; ``extra`` holds
            ``timestamp_s`` (absolute PLUS timestamp) and ``timestamp_interpolated`` when so.

        Raises:
            SourceError: truncated or corrupt data (naming the frame), NaN/inf or out-of-range
                values, non-monotonic timestamps while ``strict_pts``.
        """
        self.open()
        h, w, c = self._shape
        size = self._frame_bytes()
        n = self.frame_count or 1
        guard = FrameGuard(str(self.path))
        t0 = self.timestamps_s[0] if self.timestamps_s else 0.0
        count = 0
        try:
            for i, data in enumerate(self._raw_frames()):
                if len(data) < size:
                    break
                arr = np.frombuffer(data, dtype=self._dtype).reshape(h, w, c)
                if not arr.dtype.isnative:
                    arr = arr.astype(arr.dtype.newbyteorder("="))
                arr = to_uint8(arr, path=str(self.path), frame_index=i,
                               value_range=self.value_range, out_of_range=self.out_of_range)
                image, fmt = to_grey_or_rgb(arr, path=str(self.path), frame_index=i)
                guard.check(image, fmt, i)
                ts = self.timestamps_s[i]
                pts = int(round((ts - t0) * 1_000_000))
                extra: dict = {"timestamp_s": ts}
                if i in self._interpolated:
                    extra["timestamp_interpolated"] = True
                note = self.pts_guard.check(pts, i)
                if note:
                    extra["pts_warning"] = note
                count += 1
                yield SourceFrame(image=image, frame_index=i, pts=pts, time_base=self.time_base,
                                  extra=extra)
        finally:
            self._close_file()
        if count < n:
            raise SourceError(str(self.path), f"pixel data ends after {count} of {n} frames "
                                              "(DimSize): the data is truncated")

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        """Release the data file (idempotent)."""
        self._close_file()
