"""Per-frame image-quality measures of the sector, a [0, 1] score and named flags.

Everything is measured inside the sector on a copy halved until its long side is at most
1.3 x ``work_px`` (area averaging in exact halving steps, OpenCV's fast path: the speckle
statistics that matter survive a 2x reduction and the cost drops 4x). The measures:

* ``mean_grey``, ``p5_grey``, ``p95_grey``, ``p99_grey``: intensity of the sector (0..255).
* ``contrast``: (p95 - p5) / 255.
* ``clipped_frac``: sector pixels at or above ``clip_grey`` (saturation).
* ``sharpness``: mean absolute difference of neighbouring pixels (x and y, grey levels) in
  the sector's core. B-mode is log-compressed, so a gain change adds a constant and leaves
  it alone (until clipping); motion blur and smoothing lower it.
* ``sharpness_rel``: ``sharpness`` over the stream's running reference.
* ``speckle_snr``: median over 8x8 blocks inside the sector of block mean / block std
  (blocks darker than ``tissue_grey`` skipped). Fully developed speckle gives a stable value
  per scanner preset; smoothing or blur raise it, noise lowers it.
* ``tissue_frac``: sector pixels brighter than ``tissue_grey`` after 2x2 area averaging.
* ``contact_frac``: fraction of scan lines (angular bins of a fan, columns of a linear
  image) whose near field (3-12 % of the sector's depth) or mid field (12-50 %) holds
  tissue signal; a lifted probe leaves its lines empty below the skin band's ring-down,
  while a rib shadows a line only below the wall above it.
* ``motion``: mean |difference| against the previous frame (grey levels).
* ``level_grey``: mean near-field grey of the scan lines in contact (a lifted probe darkens
  lines, not the gain).
* ``gain_delta``: ``level_grey`` minus the stream's running reference (grey levels).

Flags (what is wrong): ``black``, ``frozen``, ``no_contact``, ``partial_contact``,
``too_bright``, ``too_dark``, ``gain_jump``, ``motion_blur``, ``low_contrast``, ``clipped``,
``low_coverage``. The score multiplies one factor per measure (each 1 when fine, falling to
0 when severe; see ``docs/preprocess.md``) and is 0 for black, frozen and no-contact frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from sonoflow.stream.imaging.sector import SectorGeometry, halve, halving_factor

_LEVELS = np.arange(256, dtype=np.float64)
FLAGS = ("black", "frozen", "no_contact", "partial_contact", "too_bright", "too_dark",
         "gain_jump", "motion_blur", "low_contrast", "clipped", "low_coverage")


@dataclass(frozen=True)
class QualityParams:
    """Thresholds of the quality measures (grey levels are 0..255 display values).

    Their values are this project's design choices, tuned on the simulator (seeds 100-119,
    and 9401-9450 for ``blur_rel``, ``blur_rel_dark`` and ``ref_step_grey``) and checked on
    the real cine clips; they are not literature values. ``docs/preprocess.md`` gives each
    one's rationale and where it lives.
    """

    work_px: int = 320
    black_grey: float = 10.0  # p99 of the sector at or below this: the frame is black
    freeze_mad_grey: float = 0.25  # mean |diff| at or below this: near-identical repeat
    tissue_grey: float = 12.0
    line_grey: float = 8.0  # a scan line whose near-field mean is below this has no contact
    n_lines: int = 48
    no_contact_frac: float = 0.2  # contact_frac at or below this: no contact
    partial_contact_frac: float = 0.85  # contact_frac below this: partial contact
    gain_jump_grey: float = 20.0  # |gain_delta| above this: gain jump
    too_dark_grey: float = 25.0  # absolute: sector mean below this is too dark
    too_bright_grey: float = 190.0  # absolute: sector mean above this is too bright
    clip_grey: int = 250
    clipped_frac: float = 0.05
    low_contrast: float = 0.12
    blur_rel: float = 0.71  # sharpness below this fraction of the reference: motion blur
    # ... on a too-dark frame (speckle partly clipped at 0 lowers sharpness without blur)
    blur_rel_dark: float = 0.6
    low_coverage_frac: float = 0.5
    ref_frames: int = 8  # frames that set the running references
    # a level this far from the references being built is a gain step inside their window:
    # the window closes there and keeps the level before the step
    ref_step_grey: float = 10.0
    ref_alpha: float = 0.003  # slow drift of the references afterwards (per frame)


@dataclass
class _Layout:
    """Per-sector precomputation at the working scale."""

    key: tuple
    scale: int
    inside_u8: np.ndarray  # uint8 (h, w): 255 inside the sector
    inside_half: np.ndarray  # uint8 (h/2, w/2): 255 inside the sector
    core_x: np.ndarray  # uint8 (h, w-1): 255 where a horizontal difference is in the core
    core_y: np.ndarray  # uint8 (h-1, w): 255 where a vertical difference is in the core
    core_full: np.ndarray  # uint8 (h, w): 255 in the core
    n_core: int
    near_idx: np.ndarray  # flat indices of near- and mid-field sector pixels
    near_line: np.ndarray  # their bins: scan line (near field), n_lines + scan line (mid)
    line_count: np.ndarray  # pixels per bin (2 * n_lines)
    blocks: np.ndarray  # (n,) flat block indices fully inside the sector (8x8 blocks)
    n_in: int


class QualityAssessor:
    """Measures frames of one stream; keeps the previous frame and running references.

    Args:
        params: thresholds; defaults when None.
    """

    def __init__(self, params: QualityParams | None = None):
        self.params = params or QualityParams()
        self.reset()

    def reset(self) -> None:
        self._layout: _Layout | None = None
        self._prev_full: np.ndarray | None = None
        self._prev_small: np.ndarray | None = None
        self._ref_mean: list[float] = []
        self._ref_sharp: list[float] = []
        self._ref_open = True
        self.ref_mean: float | None = None
        self.ref_sharpness: float | None = None

    def assess(self, gray: np.ndarray, sector: SectorGeometry | None
               ) -> tuple[float, list[str], dict[str, float]]:
        """Measure one frame.

        Args:
            gray: uint8 (H, W) grey frame (blanked or not: only sector pixels are read).
            sector: the frame's sector; None means the whole frame.

        Returns:
            ``(score, flags, metrics)``: score in [0, 1], flag names from :data:`FLAGS`,
            metric values keyed as in the module docstring.
        """
        p = self.params
        lay = self._layout_for(gray.shape, sector)
        small = halve(gray, lay.scale)
        h, w = small.shape
        flat = small.ravel()
        # cv2's masked reductions are several times faster than numpy boolean indexing
        hist = cv2.calcHist([small], [0], lay.inside_u8, [256], [0, 256]).ravel().astype(
            np.float64)
        cdf = np.cumsum(hist)
        n = max(cdf[-1], 1.0)

        def pct(q: float) -> float:
            # an empty sector (none found yet: the frame is all blank) reads as black
            return float(np.searchsorted(cdf, q * n)) if cdf[-1] > 0 else 0.0

        mean = float(np.dot(hist, _LEVELS) / n)
        p5, p95, p99 = pct(0.05), pct(0.95), pct(0.99)
        m: dict[str, float] = {"mean_grey": mean, "p5_grey": p5, "p95_grey": p95,
                               "p99_grey": p99, "contrast": (p95 - p5) / 255.0,
                               "clipped_frac": float(hist[p.clip_grey:].sum() / n)}
        # tissue: 2x2-averaged pixels (a cheap box blur) brighter than tissue_grey
        half = cv2.resize(small, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        th = cv2.calcHist([half], [0], lay.inside_half, [256], [0, 256]).ravel()
        m["tissue_frac"] = float(th[int(p.tissue_grey) + 1:].sum() / max(th.sum(), 1.0))
        # sharpness: mean absolute neighbour difference (x and y) in the sector's core
        gx = cv2.bitwise_and(cv2.absdiff(small[:, 1:], small[:, :-1]), lay.core_x)
        gy = cv2.bitwise_and(cv2.absdiff(small[1:, :], small[:-1, :]), lay.core_y)
        # per pixel of tissue: shadows and lost lines have no texture to blur
        _, tissue = cv2.threshold(small, p.tissue_grey, 255, cv2.THRESH_BINARY)
        n_tissue = cv2.countNonZero(cv2.bitwise_and(tissue, lay.core_full))
        grad = (cv2.sumElems(gx)[0] + cv2.sumElems(gy)[0]) / max(2.0 * n_tissue, 1.0)
        # log-compressed display: gain adds a constant, so the raw gradient is gain-free
        m["sharpness"] = float(grad)
        m["speckle_snr"] = _speckle_snr(small, lay.blocks, p.tissue_grey)
        n = p.n_lines
        band_sum = np.bincount(lay.near_line, weights=flat[lay.near_idx], minlength=2 * n)
        band_mean = band_sum / np.maximum(lay.line_count, 1.0)
        used = lay.line_count[:n] > 0
        line_mean = band_mean[:n][used]
        # in contact: tissue in the near field, or (a dark near field, as under a thick
        # wall or in cardiac views) in the mid field; a lifted probe darkens both
        contact = (line_mean >= p.line_grey) | (band_mean[n:][used] >= p.line_grey)
        m["contact_frac"] = float(contact.sum() / used.sum()) if used.any() else 0.0
        # brightness of the lines in contact: a lifted probe darkens lines, not the gain
        m["level_grey"] = float(line_mean[contact].mean()) if contact.any() else mean
        # freeze: bit-identical at full resolution, or near-identical after compression
        frozen = False
        if self._prev_small is not None and self._prev_small.shape == small.shape:
            diff = cv2.bitwise_and(cv2.absdiff(small, self._prev_small), lay.inside_u8)
            m["motion"] = float(cv2.sumElems(diff)[0] / max(lay.n_in, 1))
            frozen = m["motion"] <= p.freeze_mad_grey or bool(
                np.array_equal(gray, self._prev_full))
        else:
            m["motion"] = 0.0
        black = p99 <= p.black_grey
        # references: the first usable frames fix them, then they drift slowly
        usable = not (black or frozen or m["contact_frac"] <= p.no_contact_frac)
        if self.ref_mean is not None:
            m["gain_delta"] = m["level_grey"] - self.ref_mean
            m["sharpness_rel"] = m["sharpness"] / max(self.ref_sharpness, 1e-6)
        else:
            m["gain_delta"], m["sharpness_rel"] = 0.0, 1.0
        if usable:
            self._update_refs(m["level_grey"], m["sharpness"])
        self._prev_small, self._prev_full = small, gray
        flags = self._flags(m, black, frozen)
        return self._score(m, flags), flags, m

    # --- internals ---------------------------------------------------------------------

    def _update_refs(self, mean: float, sharp: float) -> None:
        p = self.params
        if self._ref_open and self._ref_mean and abs(mean - self.ref_mean) > p.ref_step_grey:
            # a gain step while the references are being built (a clip often starts with
            # the operator adjusting): a median over both levels would make the faulty one
            # the reference, so the window ends before the step
            self._ref_open = False
        if self._ref_open and len(self._ref_mean) < p.ref_frames:
            self._ref_mean.append(mean)
            self._ref_sharp.append(sharp)
            self.ref_mean = float(np.median(self._ref_mean))
            # blur only lowers sharpness: lean to the sharper frames of the window, so a
            # blurred stretch at the start of a clip does not become the reference
            self.ref_sharpness = float(np.percentile(self._ref_sharp, 75))
        else:
            self.ref_mean += p.ref_alpha * (mean - self.ref_mean)
            self.ref_sharpness += p.ref_alpha * (sharp - self.ref_sharpness)

    def _flags(self, m: dict[str, float], black: bool, frozen: bool) -> list[str]:
        p = self.params
        if black:  # nothing to measure; a repeat of a black frame is frozen as well
            return ["black", "frozen"] if frozen else ["black"]
        flags: list[str] = []
        if frozen:
            flags.append("frozen")
        c = m["contact_frac"]
        if c <= p.no_contact_frac:
            flags.append("no_contact")
        elif c < p.partial_contact_frac:
            flags.append("partial_contact")
        d = m["gain_delta"]
        if m["mean_grey"] > p.too_bright_grey or d > p.gain_jump_grey:
            flags.append("too_bright")
        if m["mean_grey"] < p.too_dark_grey or d < -p.gain_jump_grey:
            flags.append("too_dark")
        if abs(d) > p.gain_jump_grey:
            flags.append("gain_jump")
        # a too-dark image clips part of its speckle at 0, which lowers the sharpness
        # without any blur: such frames need a stricter limit, and when most of the
        # sector is clipped (low coverage) their texture cannot be judged at all
        dark = "too_dark" in flags
        if m["sharpness_rel"] < (p.blur_rel_dark if dark else p.blur_rel) and not (
                dark and m["tissue_frac"] < p.low_coverage_frac):
            flags.append("motion_blur")
        if m["contrast"] < p.low_contrast:
            flags.append("low_contrast")
        if m["clipped_frac"] > p.clipped_frac:
            flags.append("clipped")
        if m["tissue_frac"] < p.low_coverage_frac:
            flags.append("low_coverage")
        return flags

    def _score(self, m: dict[str, float], flags: list[str]) -> float:
        p = self.params
        if {"black", "frozen", "no_contact"} & set(flags):
            return 0.0
        factors = (
            _ramp(m["contact_frac"], p.no_contact_frac, 1.0),
            _ramp(abs(m["gain_delta"]), 2.0 * p.gain_jump_grey, 0.5 * p.gain_jump_grey),
            _ramp(m["mean_grey"], 0.5 * p.too_dark_grey, 1.2 * p.too_dark_grey),
            _ramp(m["mean_grey"], 255.0, p.too_bright_grey),
            _ramp(m["sharpness_rel"], 0.5 * p.blur_rel, 1.0),
            _ramp(m["contrast"], 0.5 * p.low_contrast, 2.0 * p.low_contrast),
            _ramp(m["clipped_frac"], 4.0 * p.clipped_frac, p.clipped_frac),
            _ramp(m["tissue_frac"], 0.5 * p.low_coverage_frac, p.low_coverage_frac + 0.2),
        )
        return float(np.clip(math.prod(factors), 0.0, 1.0))

    def _layout_for(self, shape: tuple[int, int], sector: SectorGeometry | None) -> _Layout:
        key = (shape, None if sector is None else id(sector.mask))
        if self._layout is not None and self._layout.key == key:
            return self._layout
        p = self.params
        f = halving_factor(shape, p.work_px)
        h, w = shape[0] // f, shape[1] // f
        if sector is None:
            inside = np.ones((h, w), bool)
            ys = np.arange(h)[:, None] * np.ones((1, w), int)
            line = np.clip(np.arange(w) * p.n_lines // w, 0, p.n_lines - 1)[None, :] * \
                np.ones((h, 1), int)
            top, bottom = 0, h
        else:
            inside = cv2.resize(sector.mask, (w, h), interpolation=cv2.INTER_AREA) >= 255
            line = sector.line_index((h, w), p.n_lines)
            ys = np.arange(h)[:, None] * np.ones((1, w), int)
            rows = np.nonzero(inside.any(axis=1))[0]
            top, bottom = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, h)
        core = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        # near field: 3-12 % of the sector's depth. Below the skin band (a lifted probe's
        # ring-down lives there) and above rib level: a rib shadows the line below it, but the
        # wall above the rib is tissue, while a lifted probe leaves the whole line empty
        depth_frac = (ys - top) / max(bottom - top, 1)
        if sector is not None and sector.apex_xy_px is not None and sector.radii_px is not None:
            # a fan's depth runs along its lines: distance from the apex, not the row
            ax, ay = sector.apex_xy_px
            r_in, r_out = sector.radii_px
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
            r = np.hypot((xx + 0.5) * f - 0.5 - ax, (yy + 0.5) * f - 0.5 - ay)
            depth_frac = (r - r_in) / max(r_out - r_in, 1.0)
        near = inside & (depth_frac >= 0.03) & (depth_frac < 0.12) & (line >= 0)
        mid = inside & (depth_frac >= 0.12) & (depth_frac < 0.5) & (line >= 0)
        near_idx = np.r_[np.flatnonzero(near), np.flatnonzero(mid)]
        near_line = np.r_[line.ravel()[np.flatnonzero(near)],
                          line.ravel()[np.flatnonzero(mid)] + p.n_lines].astype(np.intp)
        line_count = np.bincount(near_line, minlength=2 * p.n_lines).astype(np.float64)
        hb, wb = h // 8, w // 8
        blk = inside[:hb * 8, :wb * 8].reshape(hb, 8, wb, 8).all(axis=(1, 3))
        core8 = core.astype(np.uint8) * 255
        inside8 = inside.astype(np.uint8) * 255
        inside_half = (cv2.resize(inside8, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
                       >= 255).astype(np.uint8) * 255
        self._layout = _Layout(key, f, inside8, inside_half,
                               np.ascontiguousarray(core8[:, 1:]),
                               np.ascontiguousarray(core8[1:, :]), core8,
                               int(np.count_nonzero(core)), near_idx, near_line, line_count,
                               np.flatnonzero(blk), int(np.count_nonzero(inside)))
        self._prev_small = None  # a new layout: motion against the old one means nothing
        return self._layout


def _ramp(x: float, bad: float, good: float) -> float:
    """0 at ``bad``, 1 at ``good``, linear between (either order), clipped."""
    if good == bad:
        return 1.0 if x >= good else 0.0
    return float(min(1.0, max(0.0, (x - bad) / (good - bad))))


def _speckle_snr(small: np.ndarray, blocks: np.ndarray, min_mean: float) -> float:
    if blocks.size == 0:
        return 0.0
    h, w = small.shape
    hb, wb = h // 8, w // 8
    x = small[:hb * 8, :wb * 8].astype(np.float32)
    mu = cv2.resize(x, (wb, hb), interpolation=cv2.INTER_AREA).ravel()[blocks]
    ms = cv2.resize(x * x, (wb, hb), interpolation=cv2.INTER_AREA).ravel()[blocks]
    sd = np.sqrt(np.maximum(ms - mu * mu, 0.0))
    ok = (mu > min_mean) & (sd > 0)
    return float(np.median(mu[ok] / sd[ok])) if ok.any() else 0.0
