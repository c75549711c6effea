"""Video files through PyAV (FFmpeg): mp4, mov, avi, mkv, m4v, webm.

Decoding is packet by packet: a packet the decoder rejects becomes one ``SourceFrame`` with
``image=None`` and ``error`` set (accounted as "failed") and the stream goes on. At the end the
number of frames is checked against the count the container states (when it states one), so a
truncated file whose index survived is reported rather than silently short. Colour video is
delivered as RGB (``pixel_format == "rgb24"``), converted once by FFmpeg's swscale; video whose
decoder outputs a grey pixel format (``gray``, ``gray16le``, ...) as ``"gray8"``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import av
import av.error
import numpy as np

from sonoflow.stream.errors import SourceError
from sonoflow.stream.sources.base import Source, SourceFrame
from sonoflow.stream.sources.pixels import FrameGuard, PtsGuard

log = logging.getLogger(__name__)


class VideoSource(Source):
    """A video file decoded frame by frame.

    Attributes:
        pixel_format: ``"gray8"`` or ``"rgb24"`` (known after :meth:`open`).
        time_base: ``(num, den)`` of the video stream.
        width_px, height_px: frame size the container declares.
        codec: FFmpeg decoder name.
        decoded, failed: frames delivered with an image / as failed so far.
        discarded: packets outside the container's edit list (decoded, not delivered).
        timing_source: ``"container"`` (pts from the file).
    """

    def __init__(self, path: str | Path, *, strict_pts: bool = False, threads: int = 0,
                 check_frame_count: bool = True, spec: str | None = None):
        """Args:
            path: the video file.
            strict_pts: raise on non-monotonic pts instead of warning (see ``PtsGuard``).
            threads: decoder threads; 0 lets FFmpeg choose.
            check_frame_count: compare the decoded count with the container's at the end.
            spec: the string the user gave (defaults to ``path``).
        """
        self.path = Path(path)
        self.spec = spec or str(path)
        self.strict_pts = strict_pts
        self.threads = threads
        self.check_frame_count = check_frame_count
        self.pixel_format = "rgb24"
        self.time_base: tuple[int, int] = (1, 1)
        self.width_px = 0
        self.height_px = 0
        self.codec = ""
        self.decoded = 0
        self.failed = 0
        #: packets the container's edit list hides (not counted as frames)
        self.discarded = 0
        self.timing_source = "container"
        self.pts_guard = PtsGuard(str(self.path), strict=strict_pts)
        self._container = None
        self._stream = None

    def open(self) -> None:
        """Open the container and its first video stream (idempotent).

        Raises:
            SourceError: missing, empty, unreadable or not a video (no video stream, no decoder).
        """
        if self._container is not None:
            return
        p = self.path
        if not p.exists():
            raise SourceError(str(p), "file not found")
        if not p.is_file():
            raise SourceError(str(p), "not a regular file")
        if p.stat().st_size == 0:
            raise SourceError(str(p), "file is empty (0 bytes)")
        try:
            container = av.open(str(p), mode="r")
        except av.error.FFmpegError as e:
            raise SourceError(str(p), f"cannot open as a video ({e.strerror or e}); the file is "
                                      "truncated, corrupt or not a video") from e
        if not container.streams.video:
            container.close()
            raise SourceError(str(p), "no video stream in the container (audio or data only)")
        stream = container.streams.video[0]
        if stream.codec_context is None or not stream.codec_context.name:
            container.close()
            raise SourceError(str(p), f"no decoder for the video codec {stream.codec!r}")
        stream.thread_type = "AUTO"
        if self.threads:
            stream.codec_context.thread_count = self.threads
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = float(rate) if rate else None
        self.frame_count = int(stream.frames) if stream.frames else None
        tb = stream.time_base
        self.time_base = (tb.numerator, tb.denominator) if tb else (1, 1)
        self.width_px = stream.codec_context.width
        self.height_px = stream.codec_context.height
        self.codec = stream.codec_context.name
        pix = stream.codec_context.pix_fmt or ""
        self.pixel_format = "gray8" if pix.startswith("gray") else "rgb24"
        self._container, self._stream = container, stream

    def frames(self) -> Iterator[SourceFrame]:
        """Decode and yield every frame in presentation order.

        Yields:
            ``SourceFrame`` with a ``uint8`` ``(H, W)`` or ``(H, W, 3)`` image, or with
            ``image=None`` and ``error`` set for a packet that failed to decode.

        Raises:
            SourceError: reading stopped on an error, the frame size changed mid-stream, the
                decoded count differs from the container's, or non-monotonic pts while
                ``strict_pts``.
        """
        self.open()
        container, stream = self._container, self._stream
        guard = FrameGuard(str(self.path))
        fmt = "gray" if self.pixel_format == "gray8" else "rgb24"
        index = 0
        last_pts = -1
        discarded = 0
        demux = container.demux(stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                raise SourceError(str(self.path), f"reading stopped after {index} frame(s): "
                                                  f"{e.strerror or e} (truncated or corrupt "
                                                  "file)") from e
            if packet.is_discard:
                # outside the container's edit list: decoded for reference, never shown
                discarded += 1
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as e:
                pts = packet.pts if packet.pts is not None else last_pts + 1
                self.failed += 1
                log.warning("%s: packet at pts %s failed to decode: %s", self.path, packet.pts, e)
                yield SourceFrame(image=None, frame_index=index, pts=int(pts),
                                  time_base=self.time_base,
                                  error=f"packet at pts {packet.pts} failed to decode: "
                                        f"{e.strerror or e}")
                index += 1
                continue
            for frame in decoded:
                extra = {}
                pts = frame.pts
                if pts is None:
                    pts = self._synth_pts(index)
                    extra["pts_synthesised"] = True
                note = self.pts_guard.check(int(pts), index)
                if note:
                    extra["pts_warning"] = note
                # PyAV returns a strided view when FFmpeg pads lines (widths not a multiple
                # of its alignment); the wire needs C-contiguous frames
                image = np.ascontiguousarray(frame.to_ndarray(format=fmt))
                guard.check(image, self.pixel_format, index)
                last_pts = int(pts)
                self.decoded += 1
                yield SourceFrame(image=image, frame_index=index, pts=int(pts),
                                  time_base=self.time_base, extra=extra)
                index += 1
        self.discarded = discarded
        expected = None if self.frame_count is None else self.frame_count - discarded
        if self.check_frame_count and expected is not None and index != expected:
            skipped = f", {discarded} outside the edit list" if discarded else ""
            raise SourceError(str(self.path), f"the container states {self.frame_count} frames"
                                              f"{skipped} but {index} were read ("
                                              f"{self.decoded} decoded, {self.failed} failed): "
                                              "the file is truncated or its index is wrong")

    def _synth_pts(self, index: int) -> int:
        """pts for a frame the container gave none: ``index / fps`` in the stream time base."""
        if not self.fps:
            return index
        num, den = self.time_base
        return int(round(index / self.fps * den / num))

    def close(self) -> None:
        """Close the container (idempotent)."""
        if self._container is not None:
            self._container.close()
            self._container = None
            self._stream = None
