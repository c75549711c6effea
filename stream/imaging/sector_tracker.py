"""Keep the sector across frames; re-detect only when the screen layout may have changed.

The sector changes only when the operator changes depth, zoom or probe. Detecting it costs
tens of milliseconds, so per frame only a cheap check runs on a coarse (about 80 px wide)
copy of the frame: does signal appear in a ring just outside the current sector (it grew or
moved), or does a band just inside its edge show empty screen (it shrank)? When a check
fires, and as a safety net every ``redetect_every`` frames, the full detector runs and its
answer is compared with the current sector (after a false alarm, such as a lifted probe,
the checks rest for ``backoff`` frames):

* same sector (IoU >= ``same_iou``): nothing changes;
* the new sector reaches outside the old one: the layout changed, take it now;
* the new sector lies inside the old one: take it only when it is a fitted model that is
  not the same fan with narrower edges (same apex and radii), and the part it gives up is
  empty (screen background) on ``shrink_confirm`` consecutive checks. A probe lifting off one side,
  a rib shadow or a dark frame darkens part of the sector without changing the layout, and
  lost-contact lines still carry reverberation, so they are never mistaken for a shrink.
"""

from __future__ import annotations

import cv2
import numpy as np

from sonoflow.stream.imaging.sector import (
    SectorGeometry,
    SectorParams,
    background_level,
    detect_sector,
    mask_iou,
)


class SectorTracker:
    """Per-stream sector state. One instance per stream; ``reset()`` between streams.

    Args:
        params: detector tuning.
        redetect_every: frames between scheduled re-detections (0 = never scheduled).
        same_iou: a re-detection this close to the current sector is the same layout.
        grow_frac: fraction of the outside ring showing signal that triggers a re-detection.
        shrink_confirm: consecutive confirmations a shrinking layout needs.
        coarse_px: long side of the coarse image used by the per-frame check (px).
    """

    def __init__(self, params: SectorParams | None = None, *, redetect_every: int = 300,
                 same_iou: float = 0.9, grow_frac: float = 0.15, empty_frac: float = 0.6,
                 shrink_confirm: int = 2, backoff: int = 15, coarse_px: int = 80):
        self.params = params or SectorParams()
        self.redetect_every = redetect_every
        self.same_iou = same_iou
        self.grow_frac = grow_frac
        self.empty_frac = empty_frac
        self.backoff = backoff
        self.shrink_confirm = shrink_confirm
        self.coarse_px = coarse_px
        self.detections = 0  # full detections run (for tests and benchmarks)
        self.reset()

    def reset(self) -> None:
        """Forget the sector (next frame detects from scratch)."""
        self.geometry: SectorGeometry | None = None
        self._since = 0
        self._pending_shrink = 0
        self._quiet = {"grow": 0, "empty": 0}
        self._ring: np.ndarray | None = None  # flat indices into the coarse image
        self._rim: np.ndarray | None = None
        self._coarse_shape: tuple[int, int] = (0, 0)

    def update(self, gray: np.ndarray) -> tuple[SectorGeometry | None, bool]:
        """Track the sector through one frame.

        Args:
            gray: uint8 (H, W) grey frame (not blanked).

        Returns:
            ``(geometry, layout_changed)``: the sector to use for this frame (None while no
            sector has been found yet) and whether it differs from the previous frame's.
        """
        g = self.geometry
        if g is None or g.shape != gray.shape:
            had = g is not None
            self.geometry = None
            new = self._detect(gray)
            if new is not None:
                self._adopt(new, gray)
            return self.geometry, had or new is not None
        self._since += 1
        self._quiet = {k: max(0, v - 1) for k, v in self._quiet.items()}
        scheduled = self.redetect_every > 0 and self._since >= self.redetect_every
        fired = None
        if not (scheduled or self._pending_shrink):
            fired = self._rings_fire(gray)
            # after a false alarm (a lifted probe empties the rim; noise can light the ring)
            # that check rests for ``backoff`` frames, so one cause costs one detection
            if fired is None or self._quiet[fired]:
                return g, False
        self._since = 0
        new = self._detect(gray)
        if new is None or mask_iou(new.mask, g.mask) >= self.same_iou:
            # a false alarm (lost contact, a dark frame): do not re-detect on every frame
            self._pending_shrink = 0
            if fired is not None:
                self._quiet[fired] = self.backoff
            return g, False
        outside = np.count_nonzero((new.mask > 0) & (g.mask == 0)) / max(g.area_px, 1)
        if outside > 0.02 and new.area_px >= 0.7 * g.area_px:
            # grew or moved; a much smaller blob poking out (a lifted probe leaves a strip of
            # signal) is no new layout
            self._adopt(new, gray)
            return new, True
        if not (_shrink_plausible(g, new) and self._given_up_is_background(gray, g, new)):
            self._pending_shrink = 0
            if fired is not None:
                self._quiet[fired] = self.backoff
            return g, False
        self._pending_shrink += 1
        if self._pending_shrink >= self.shrink_confirm:
            self._adopt(new, gray)
            return new, True
        return g, False

    # --- internals ---------------------------------------------------------------------

    def _detect(self, gray: np.ndarray) -> SectorGeometry | None:
        self.detections += 1
        return detect_sector(gray, self.params)

    def _coarse(self, gray: np.ndarray) -> np.ndarray:
        # halving steps: OpenCV's 2x area path is several times faster than one 8x step
        x = gray
        while max(x.shape) > self.coarse_px and min(x.shape) >= 16:
            x = cv2.resize(x, (x.shape[1] // 2, x.shape[0] // 2), interpolation=cv2.INTER_AREA)
        return x

    def _adopt(self, geom: SectorGeometry, gray: np.ndarray) -> None:
        self.geometry = geom
        self._pending_shrink = 0
        self._since = 0
        coarse = self._coarse(gray)
        hs, ws = coarse.shape
        m = cv2.resize(geom.mask, (ws, hs), interpolation=cv2.INTER_AREA) > 0
        k = np.ones((3, 3), np.uint8)
        inner = cv2.dilate(m.astype(np.uint8), k, iterations=1)
        outer = cv2.dilate(m.astype(np.uint8), k, iterations=3)
        ring = (outer > 0) & (inner == 0)
        # UI already drawn next to the sector (ruler ticks, markers) is not new signal
        self._bg = background_level(coarse)
        ring &= coarse <= self._bg + 2 * self.params.threshold_grey
        self._ring = np.flatnonzero(ring)
        # the rim: a band just inside the sector's edge; empty screen there means it shrank
        core = cv2.erode(m.astype(np.uint8), k, iterations=1)
        rim = (core > 0) & (cv2.erode(m.astype(np.uint8), k, iterations=3) == 0)
        self._rim = np.flatnonzero(rim)
        self._coarse_shape = (hs, ws)

    def _rings_fire(self, gray: np.ndarray) -> str | None:
        """"grow" when signal appeared just outside the sector, "empty" when the band just
        inside its edge shows bare screen, else None."""
        if self._ring is None:
            return None
        coarse = self._coarse(gray).ravel()
        level = self._bg + 2 * self.params.threshold_grey
        if self._ring.size >= 8:
            on = np.count_nonzero(coarse[self._ring] > level)
            if on > self.grow_frac * self._ring.size:
                return "grow"
        if self._rim is not None and self._rim.size >= 8:
            empty = np.count_nonzero(coarse[self._rim] <= self._bg + 1)
            if empty > self.empty_frac * self._rim.size:
                return "empty"
        return None

    def _given_up_is_background(self, gray: np.ndarray, old: SectorGeometry,
                                new: SectorGeometry) -> bool:
        """True when the pixels the new, smaller sector gives up hold no signal at all."""
        lost = (old.mask > 0) & (new.mask == 0)
        if not lost.any():
            return True
        vals = gray[lost]
        bg = background_level(self._coarse(gray))
        return float(np.percentile(vals, 99)) <= bg + self.params.threshold_grey


def _shrink_plausible(old: SectorGeometry, new: SectorGeometry) -> bool:
    """Whether a smaller re-detection can be a new layout rather than dark lines.

    A fitted fan never shrinks to a bare hull (a lifted probe or a shadow leaves a blob
    that no fan fits; simulator seed 9590 shrank to half the sector on the way back from a
    lift-off), nor to a fan with the same apex and radii (the same probe at the same depth:
    only its edge lines went dark). A new depth or probe changes the apex or the radii.
    """
    if old.fitted and not new.fitted:
        return False
    if old.apex_xy_px is None or new.apex_xy_px is None or old.radii_px is None \
            or new.radii_px is None:
        return True
    tol_px = 0.02 * old.radii_px[1] + 2.0
    moved = np.hypot(new.apex_xy_px[0] - old.apex_xy_px[0],
                     new.apex_xy_px[1] - old.apex_xy_px[1])
    return bool(moved > tol_px or abs(new.radii_px[1] - old.radii_px[1]) > tol_px)
