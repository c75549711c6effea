"""Clips: ``simulate_clip(case, ...)`` yields :class:`SimFrame` objects with exact truth."""

from __future__ import annotations

import queue
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator

import cv2
import numpy as np

from sonoflow.stream.errors import ConfigError
from sonoflow.stream.sim import config
from sonoflow.stream.sim.events import BLOCK_FRAMES, FrameEvents, plan_block
from sonoflow.stream.sim.motion import pose_at
from sonoflow.stream.sim.renderer import BeamFrame, Renderer
from sonoflow.stream.sim.truth import lesion_entries
from sonoflow.stream.sim.ui import UiOverlay, build_ui

_LIVER = config.TISSUE_CODES["liver"]


@dataclass
class SimFrame:
    """One simulated frame and its ground truth.

    Attributes:
        image: ``(H, W)`` uint8 B-mode, burned-in UI outside the sector when ``case.ui``.
        frame_index: index in the clip, from 0.
        lesion_ids: ``(H, W)`` uint8 instance mask (0 background, else ``lesion_id``).
        tissue: ``(H, W)`` uint8 tissue labels (:data:`config.TISSUE_CODES`).
        sector_mask: ``(H, W)`` bool, the true imaging sector (shared, read-only).
        ui_text_mask: ``(H, W)`` bool, burned-in UI pixels (all False without UI).
        truth: the frame's entry of the ground-truth JSON.
        beam: beam-space internals (envelope before log compression...) when requested.
    """

    image: np.ndarray
    frame_index: int
    lesion_ids: np.ndarray
    tissue: np.ndarray
    sector_mask: np.ndarray
    ui_text_mask: np.ndarray
    truth: dict[str, Any]
    beam: BeamFrame | None = field(default=None, repr=False)


class ClipRenderer:
    """Stateful frame-by-frame renderer of one clip (persistence, frozen runs, events).

    Args:
        case: the case.
        n_frames: clip length, or None for an endless clip.
        height, width: output size (even numbers >= 64).
        fps: frame rate.
        keep_beam: attach beam-space internals to each frame.
        workers: render threads. With 2, the next frames are rendered ahead on a second core
            while the caller consumes the current one (OpenCV and numpy release the GIL in the
            heavy calls); each thread has its own renderer, and output is bit-identical to
            ``workers=1``. Call :meth:`close` (or use ``with``) to stop the threads.

    Raises:
        ConfigError: size, fps or workers out of range.
    """

    def __init__(self, case, n_frames: int | None, height: int, width: int, fps: float,
                 keep_beam: bool = False, workers: int = 1):
        if height < 64 or width < 64 or height > 2048 or width > 2048:
            raise ConfigError(f"simulate_clip: size {height}x{width} out of range; expected "
                              "64..2048 pixels per side")
        if not fps > 0:
            raise ConfigError(f"simulate_clip: fps must be > 0, got {fps}")
        if n_frames is not None and n_frames < 0:
            raise ConfigError(f"simulate_clip: n_frames must be >= 0, got {n_frames}")
        if not 1 <= workers <= 8:
            raise ConfigError(f"simulate_clip: workers must be 1..8, got {workers}")
        self.case = case
        self.n_frames = n_frames
        self.fps = float(fps)
        self.keep_beam = keep_beam
        self.renderer = Renderer(case, height, width)
        self.scan = self.renderer.scan
        self.ui: UiOverlay = build_ui(case, self.scan)
        self.mm_per_px = self.scan.layout.mm_per_px
        self._block_len = n_frames if n_frames is not None and n_frames <= 2 * BLOCK_FRAMES \
            else BLOCK_FRAMES
        self._events: dict[int, list[FrameEvents]] = {}
        self._prev: SimFrame | None = None
        self._prev_grey: np.ndarray | None = None
        self._no_ui = np.zeros_like(self.ui.mask)
        self.sector_mask = self.scan.sector_mask
        self.sector_mask.setflags(write=False)
        self._sector_u8 = np.where(self.sector_mask, np.uint8(255), np.uint8(0))
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[int, Future] = {}
        self._free: queue.Queue = queue.Queue()
        self._free.put(self.renderer)
        if workers > 1:
            for _ in range(workers - 1):
                self._free.put(Renderer(case, height, width))
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="sim-render")
        self._ahead = 2 * workers

    def reset(self) -> None:
        """Forget the frame history (persistence, the frame a freeze repeats) to restart at 0."""
        for fut in self._pending.values():
            fut.cancel()
        self._pending.clear()
        self._prev = None
        self._prev_grey = None

    def close(self) -> None:
        """Stop the render threads (no-op with one worker)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._pending.clear()

    def __enter__(self) -> ClipRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _render(self, i: int, ev: FrameEvents):
        r = self._free.get()
        try:
            return r.render(pose_at(self.case, i, self.fps, jerk_mm=ev.jerk_mm), i, ev,
                            keep_beam=self.keep_beam)
        finally:
            self._free.put(r)

    def _rendered(self, i: int, ev: FrameEvents):
        """Frame ``i`` rendered (from a render-ahead thread when there is a pool)."""
        if self._pool is None:
            return self._render(i, ev)
        for j in range(i, i + self._ahead):
            if j in self._pending or (self.n_frames is not None and j >= self.n_frames):
                continue
            evj = self.events_at(j)
            if not (evj.black or (evj.frozen and j > 0)):
                self._pending[j] = self._pool.submit(self._render, j, evj)
        fut = self._pending.pop(i, None)
        return fut.result() if fut is not None else self._render(i, ev)

    def events_at(self, i: int) -> FrameEvents:
        """Planned events of frame ``i`` (planned per block, cached)."""
        if self._block_len == 0:
            return FrameEvents()
        b = i // self._block_len
        if b not in self._events:
            self._events = {k: v for k, v in self._events.items() if k >= b - 1}
            self._events[b] = plan_block(self.case, b, self._block_len)
        return self._events[b][i - b * self._block_len]

    def frame(self, i: int) -> SimFrame:
        """Render frame ``i``; frames must be requested in order (persistence, freezes)."""
        ev = self.events_at(i)
        case = self.case
        pose = pose_at(case, i, self.fps, jerk_mm=ev.jerk_mm)
        base = {"frame_index": i, "quality_label": ev.quality_label(),
                "pts_s": round(i / self.fps, 6), "pose": pose.truth(),
                "gain_db": round(case.imaging.gain_db + ev.gain_offset_db, 3),
                "contact_fraction": round(1.0 - ev.lost_fraction, 4),
                "frozen": ev.frozen, "black": ev.black, "motion_blur": ev.blur_lines > 0,
                "ui": bool(case.ui and not ev.black)}
        if ev.frozen and self._prev is not None:
            p = self._prev
            truth = dict(p.truth)
            truth.update({"frame_index": i, "quality_label": base["quality_label"],
                          "pts_s": base["pts_s"], "frozen": True,
                          "source_frame": p.truth.get("source_frame", p.frame_index)})
            f = SimFrame(image=p.image, frame_index=i, lesion_ids=p.lesion_ids, tissue=p.tissue,
                         sector_mask=self.sector_mask, ui_text_mask=p.ui_text_mask, truth=truth,
                         beam=p.beam)
            self._prev = f
            return f
        h, w = self.sector_mask.shape
        if ev.black:
            zeros = np.zeros((h, w), np.uint8)
            truth = {**base, "lesions": [], "liver_fraction": 0.0, "lesions_in_plane": []}
            f = SimFrame(image=zeros, frame_index=i, lesion_ids=zeros, tissue=zeros.copy(),
                         sector_mask=self.sector_mask, ui_text_mask=self._no_ui, truth=truth)
            self._prev = f
            return f
        r = self._rendered(i, ev)
        grey = r.grey
        pers = case.imaging.persistence
        if pers > 0 and self._prev_grey is not None:
            grey = cv2.addWeighted(grey, 1.0 - pers, self._prev_grey, pers, 0.0)
        self._prev_grey = grey
        img = cv2.convertScaleAbs(grey, alpha=255.0)
        img &= self._sector_u8  # the smoothing must not bleed outside the true sector
        if case.ui:
            self.ui.apply(img)
        lesions = lesion_entries(r.ids, case, pose.yp_mm, self.mm_per_px, r.lesions_drawn)
        n_sector = int(self.sector_mask.sum())
        truth = {**base, "lesions": lesions,
                 "lesions_in_plane": [int(v) for v in r.lesions_drawn],
                 "liver_fraction": round(float((r.tissue == _LIVER).sum()) / max(n_sector, 1), 4)}
        f = SimFrame(image=img, frame_index=i, lesion_ids=r.ids, tissue=r.tissue,
                     sector_mask=self.sector_mask,
                     ui_text_mask=self.ui.mask if case.ui else self._no_ui, truth=truth,
                     beam=r.beam)
        self._prev = f
        return f


def simulate_clip(case, n_frames: int | None = 90, height: int = 480, width: int = 640,
                  fps: float = 30.0, keep_beam: bool = False,
                  workers: int = 1) -> Iterator[SimFrame]:
    """Render a clip frame by frame.

    Args:
        case: from :func:`~sonoflow.stream.sim.case.sample_case`.
        n_frames: number of frames, or None for an endless stream.
        height, width: output size in pixels.
        fps: frame rate (sets motion per frame).
        keep_beam: attach beam-space internals (``SimFrame.beam``) for tests.
        workers: render threads (2 renders ahead on a second core; same output).

    Yields:
        :class:`SimFrame`, in order. The same case and arguments give bit-identical frames.

    Raises:
        ConfigError: size, fps or frame count out of range.
    """
    with ClipRenderer(case, n_frames, height, width, fps, keep_beam=keep_beam,
                      workers=workers) as clip:
        i = 0
        while n_frames is None or i < n_frames:
            yield clip.frame(i)
            i += 1
