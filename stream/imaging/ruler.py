"""Depth-ruler calibration: mm per pixel from the tick marks a scanner draws beside the sector.

Scanners draw the depth scale as a column of small marks (dots or dashes) at a fixed spacing,
usually one per centimetre with a larger mark every 5 cm (GE, Philips, SonoSite, Mindray
B-mode screens; e.g. 0-14 cm on the left of ``ruq-simple.mp4``). The marks are small bright
blobs outside the sector lying on one vertical line at a constant pitch. The pitch in pixels,
fitted by least squares over all marks, gives mm/px = tick spacing / pitch.

The tick spacing cannot be read without OCR, so it is inferred: marks 1 cm apart
(``tick_mm``), unless every second mark is larger (then the small ones are half-centimetre
marks). The result is checked for plausibility: the sector's depth must come out between
``min_depth_mm`` and ``max_depth_mm``, and the ruler must run alongside the sector.

Scan-converted B-mode pixels are square, so the same spacing is reported for x and y.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class RulerParams:
    """Tuning of :func:`find_depth_ruler`.

    Attributes:
        tick_mm: spacing of the regular marks when no half-centimetre pattern is seen (mm).
        min_ticks: fewest marks on one line that make a ruler.
        max_tick_frac: largest mark, as a fraction of the frame's height and width.
        column_tol_px: marks whose centres differ by less than this in x share a column (px).
        pitch_tol: a mark belongs to the ruler when within this fraction of a pitch of its slot.
        min_depth_mm: smallest plausible imaging depth (mm).
        max_depth_mm: largest plausible imaging depth (mm).
        threshold_grey: a mark is brighter than the background by this many grey levels.
    """

    tick_mm: float = 10.0
    min_ticks: int = 5
    max_tick_frac: float = 0.025
    column_tol_px: float = 4.0
    pitch_tol: float = 0.15
    min_depth_mm: float = 20.0
    max_depth_mm: float = 350.0
    threshold_grey: float = 60.0


@dataclass(frozen=True)
class RulerResult:
    """A depth ruler found on screen.

    Attributes:
        mm_per_px: (x, y) spacing (mm/px), square pixels assumed.
        pitch_px: distance between consecutive marks (px).
        tick_mm: spacing the marks stand for (mm).
        n_ticks: marks on the fitted line.
        x_px: x of the ruler's column (px).
        y0_px: y of the first mark (px).
        residual_px: RMS distance of the marks from their fitted slots (px).
        note: how the tick spacing was decided.
        major: a pattern of larger marks (every 5th or every 2nd) confirmed the spacing.
    """

    mm_per_px: tuple[float, float]
    pitch_px: float
    tick_mm: float
    n_ticks: int
    x_px: float
    y0_px: float
    residual_px: float
    note: str
    major: bool = False


def find_depth_ruler(gray: np.ndarray, sector_mask: np.ndarray,
                     sector_xyxy_px: tuple[int, int, int, int],
                     params: RulerParams | None = None) -> tuple[RulerResult | None, str]:
    """Find the depth ruler next to the sector and derive mm/px from it.

    Args:
        gray: uint8 (H, W) grey frame (original pixels, not blanked).
        sector_mask: uint8 (H, W), nonzero inside the sector; marks inside it are ignored.
        sector_xyxy_px: sector bounding box (x0, y0, x1, y1), exclusive ends (px).
        params: tuning; defaults when None.

    Returns:
        ``(result, note)``: the ruler or None, and a sentence saying what was found or why
        nothing was accepted (shown as the calibration note).
    """
    p = params or RulerParams()
    h, w = gray.shape
    bg = float(np.median(gray[::4, ::4]))
    on = (gray > bg + p.threshold_grey).astype(np.uint8)
    # marks may touch the sector rim: look only outside a slightly grown sector
    grown = cv2.dilate((sector_mask > 0).astype(np.uint8), np.ones((5, 5), np.uint8))
    on[grown > 0] = 0
    n, labels, stats, cents = cv2.connectedComponentsWithStats(on, connectivity=8)
    if n <= 1:
        return None, "depth ruler: no marks outside the sector"
    bw, bh = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]
    area = stats[1:, cv2.CC_STAT_AREA]
    small = (bw <= max(3, p.max_tick_frac * w)) & (bh <= max(3, p.max_tick_frac * h)) & (area >= 2)
    # a ruler mark is wider than tall or roughly round; text strokes are taller than wide
    small &= bh <= 1.5 * bw + 1
    idx = np.nonzero(small)[0]
    # left-aligned dashes of different lengths have different centres: use each mark's
    # inner edge (the side facing the sector) as its column
    x0, y0s, x1, y1s = sector_xyxy_px
    left_x = stats[1:, cv2.CC_STAT_LEFT].astype(np.float64)
    right_x = left_x + bw - 1
    sx_mid = 0.5 * (x0 + x1)
    inner_x = np.where(left_x + 0.5 * bw < sx_mid, right_x, left_x)
    # candidate rulers: columns of separate marks, and spines (a long thin vertical line
    # with the marks drawn as short horizontal branches off it)
    candidates: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    if len(idx) >= p.min_ticks:
        for col in _columns(inner_x[idx], p.column_tol_px):
            members = idx[col]
            if len(members) >= p.min_ticks:
                candidates.append((cents[1:][members, 1], area[members].astype(np.float64),
                                   inner_x[members]))
    spines = np.nonzero((bh >= 0.15 * h) & (bw <= max(6, 0.05 * w)))[0]
    # a fan corner that reaches the ruler line cuts it (the grown sector is removed above):
    # pieces on the same line are one ruler
    for group in _same_line(stats[spines + 1]):
        pieces = [_spine_marks(labels, stats[spines[i] + 1], spines[i] + 1) for i in group]
        pieces = [m for m in pieces if m is not None]
        if pieces:
            marks = tuple(np.concatenate([m[i] for m in pieces]) for i in range(3))
            if len(marks[0]) >= p.min_ticks:
                candidates.append(marks)
    if not candidates:
        return None, (f"depth ruler: only {len(idx)} mark-sized blobs and no ruler line "
                      "outside the sector")
    best: RulerResult | None = None
    reasons: list[str] = []
    for ys_c, areas_c, xs_c in candidates:
        res, why = _fit_column(ys_c, areas_c, xs_c, (y0s, y1s), p)
        if res is None:
            reasons.append(why)
            continue
        depth_mm = (y1s - y0s) * res.mm_per_px[1]
        if not p.min_depth_mm <= depth_mm <= p.max_depth_mm:
            reasons.append(f"marks {res.pitch_px:.1f} px apart at x={res.x_px:.0f} give a "
                           f"sector depth of {depth_mm:.0f} mm, outside "
                           f"[{p.min_depth_mm:.0f}, {p.max_depth_mm:.0f}] mm")
            continue
        if best is None or _rank(res) > _rank(best):
            best = res
    if best is None:
        why = "; ".join(reasons[:2]) if reasons else "no column of evenly spaced marks"
        return None, f"depth ruler: {why}"
    return best, best.note


def _rank(res: RulerResult) -> tuple[bool, float]:
    """Rulers with a major-mark pattern first, then the most regular long column."""
    return (res.major, res.n_ticks * (1.0 - min(1.0, 4.0 * res.residual_px / res.pitch_px)))


def _same_line(spine_stats: np.ndarray) -> list[list[int]]:
    """Group ruler-line components (rows of ``cv2`` stats) whose left edge and width agree
    within 1 px: the pieces of one line cut by the sector."""
    groups: list[list[int]] = []
    keys: list[tuple[int, int]] = []
    for i, st in enumerate(spine_stats):
        key = (int(st[cv2.CC_STAT_LEFT]), int(st[cv2.CC_STAT_WIDTH]))
        for g, k in zip(groups, keys, strict=True):
            if abs(k[0] - key[0]) <= 1 and abs(k[1] - key[1]) <= 1:
                g.append(i)
                break
        else:
            groups.append([i])
            keys.append(key)
    return groups


def _columns(xs: np.ndarray, tol: float) -> list[np.ndarray]:
    """Group indices of ``xs`` into runs whose sorted neighbours are within ``tol``."""
    order = np.argsort(xs)
    groups: list[list[int]] = [[int(order[0])]]
    for a, b in zip(order[:-1], order[1:], strict=True):
        if xs[b] - xs[a] <= tol:
            groups[-1].append(int(b))
        else:
            groups.append([int(b)])
    return [np.array(g) for g in groups]


def _spine_marks(labels: np.ndarray, stat: np.ndarray, lab: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Marks branching off a vertical ruler line: rows where the line is wider than itself.

    Returns:
        ``(y, size, x)`` per mark (mark centre row, extra pixels beyond the line, line x),
        or None when the line has no branches.
    """
    x0, y0 = int(stat[cv2.CC_STAT_LEFT]), int(stat[cv2.CC_STAT_TOP])
    bw, bh = int(stat[cv2.CC_STAT_WIDTH]), int(stat[cv2.CC_STAT_HEIGHT])
    sub = labels[y0:y0 + bh, x0:x0 + bw] == lab
    width = sub.sum(axis=1).astype(np.float64)
    line_w = float(np.median(width))
    extra = width - line_w
    rows = np.nonzero(extra >= 2)[0]
    if len(rows) == 0:
        return None
    ys, sizes = [], []
    start = prev = int(rows[0])
    for r in [*rows[1:].tolist(), None]:
        if r is not None and r == prev + 1:
            prev = r
            continue
        seg = np.arange(start, prev + 1)
        wgt = extra[seg]
        ys.append(y0 + float(np.dot(seg, wgt) / wgt.sum()))
        sizes.append(float(wgt.sum()))
        if r is not None:
            start = prev = r
    line_x = x0 + float(np.argmax(sub.sum(axis=0)))
    return np.array(ys), np.array(sizes), np.full(len(ys), line_x)


def _fit_column(ys: np.ndarray, areas: np.ndarray, xs: np.ndarray,
                sector_y: tuple[int, int], p: RulerParams) -> tuple[RulerResult | None, str]:
    # marks of one ruler are alike: major marks are at most ~4.5x the minor ones, while a
    # text glyph that happens to share the column is several times larger
    alike = areas <= 5.0 * np.median(areas)
    ys, areas, xs = ys[alike], areas[alike], xs[alike]
    order = np.argsort(ys)
    ys, areas, xs = ys[order], areas[order], xs[order]
    diffs = np.diff(ys)
    diffs = diffs[diffs > 2]
    if len(diffs) < p.min_ticks - 1:
        return None, "too few distinct marks in the column"
    pitch = float(np.median(diffs))
    # robust start: the mark with the most others sitting on its pitch grid
    best_in = None
    for anchor in ys:
        k = np.round((ys - anchor) / pitch)
        inl = np.abs(ys - anchor - k * pitch) < p.pitch_tol * pitch
        if best_in is None or inl.sum() > best_in.sum():
            best_in = inl
    ys_in, areas_in, xs_in = ys[best_in], areas[best_in], xs[best_in]
    for _ in range(2):  # least-squares refinement of pitch and offset
        k = np.round((ys_in - ys_in[0]) / pitch)
        if len(np.unique(k)) < 2:
            return None, "marks collapse onto one slot"
        pitch, offset = np.polyfit(k, ys_in, 1)
        pitch = float(pitch)
        # the median of whole-pixel spacings is off by up to half a pixel (marks 17.55 px
        # apart read as 18): marks lost to that drift far from the anchor rejoin once the
        # pitch is refined
        k_all = np.round((ys - offset) / pitch)
        inl = np.abs(ys - offset - k_all * pitch) < p.pitch_tol * pitch
        if inl.sum() > len(ys_in):
            ys_in, areas_in, xs_in = ys[inl], areas[inl], xs[inl]
    k = np.round((ys_in - offset) / pitch).astype(int)
    # keep the longest run of slots with at most two missing marks between neighbours: a
    # stray blob (a text glyph) sitting on the grid a few slots away is not part of it
    order = np.argsort(k)
    k, ys_in, areas_in, xs_in = k[order], ys_in[order], areas_in[order], xs_in[order]
    breaks = np.nonzero(np.diff(k) > 3)[0]
    starts = np.r_[0, breaks + 1]
    ends = np.r_[breaks + 1, len(k)]
    longest = int(np.argmax(ends - starts))
    run = slice(starts[longest], ends[longest])
    k, ys_in, areas_in, xs_in = k[run], ys_in[run], areas_in[run], xs_in[run]
    if len(np.unique(k)) >= 2:
        pitch, offset = (float(v) for v in np.polyfit(k, ys_in, 1))
    resid = ys_in - (offset + k * pitch)
    n_slots = int(k.max() - k.min() + 1)
    if len(ys_in) < p.min_ticks or len(ys_in) < 0.7 * n_slots:
        return None, f"{len(ys_in)} marks fill only part of {n_slots} slots"
    y_lo, y_hi = float(ys_in.min()), float(ys_in.max())
    sy0, sy1 = sector_y
    overlap = max(0.0, min(y_hi, sy1) - max(y_lo, sy0)) / max(1.0, sy1 - sy0)
    if overlap < 0.5:
        return None, f"marks cover only {overlap:.0%} of the sector's depth range"
    tick_mm, note, major = _tick_spacing(k - k.min(), areas_in, p.tick_mm)
    mm = tick_mm / pitch
    res = RulerResult(mm_per_px=(mm, mm), pitch_px=pitch, tick_mm=tick_mm, n_ticks=len(ys_in),
                      x_px=float(np.median(xs_in)), y0_px=float(y_lo),
                      residual_px=float(np.sqrt(np.mean(resid ** 2))),
                      note=(f"depth ruler: {len(ys_in)} marks {pitch:.2f} px apart at "
                            f"x={float(np.median(xs_in)):.0f}; {note}"), major=major)
    return res, res.note


def _tick_spacing(slot: np.ndarray, areas: np.ndarray, default_mm: float
                  ) -> tuple[float, str, bool]:
    """Decide what one mark spacing stands for from the pattern of larger (major) marks."""
    big = areas >= 1.5 * np.median(areas)
    if big.sum() >= 2 and not big.all():
        for period, mm, what in ((5, default_mm, "major mark every 5th: 1 cm marks"),
                                 (2, default_mm / 2, "major mark every 2nd: 0.5 cm marks")):
            phases = slot[big] % period
            if len(np.unique(phases)) == 1 and (slot[~big] % period != phases[0]).all():
                return mm, what, True
    return default_mm, f"marks taken as {default_mm:g} mm apart", False
