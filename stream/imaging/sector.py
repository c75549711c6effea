"""Find the imaging sector (convex fan, phased sector, linear rectangle) in a scanner frame.

A scanner screen is the B-mode image plus text, rulers, logos and borders. The sector is the one
large region of speckle: threshold above the background level, open away thin strokes (text,
ticks, dotted lines, ECG traces), close the speckle gaps, keep the largest blobs, then fit a
geometric model to the blob (two side lines meeting at an apex plus inner and outer arcs, or a
rectangle). The model's mask, not the blob, is what gets kept, so dark tissue at the sector's
edge (shadows, lost contact) does not shrink it.

Detection works on a frame downscaled to at most ``work_px`` on its long side, with a
full-resolution refinement of convex fans; it costs about 13 ms of CPU at 480x640 and runs
only when the layout may have changed (see
:mod:`sonoflow.stream.imaging.sector_tracker`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

SECTOR_KINDS = ("convex", "phased", "linear", "full")


@dataclass(frozen=True)
class SectorParams:
    """Tuning of :func:`detect_sector` (all in the units named; defaults suit 8-bit screens).

    Attributes:
        work_px: long side of the working image the detector runs on (px).
        threshold_grey: grey levels above the background level that count as signal.
        open_px: opening kernel in working pixels: removes text strokes and tick marks.
        close_px: closing kernel in working pixels: fills speckle gaps.
        min_area_frac: smallest blob kept, as a fraction of the working frame.
        margin_px: the fitted mask is grown by this many full-resolution pixels so the
            sector's 1-px-wide anti-aliased rim is kept.
        phased_ratio: inner/outer radius below which a fan is "phased" (no probe arc).
        linear_slope: |dx/dy| of both side edges below which the sector is a rectangle.
        min_fit_iou: the model replaces the blob's hull only when they agree this well.
        flat_std_grey: working pixels whose 5x5 neighbourhood varies less than this (grey
            levels, standard deviation) are flat UI, not speckle.
        edge_step_rad: angular step of the full-resolution scan-line walk that widens a
            fan's side edges (rad).
        edge_widen_max_rad: the walk goes at most this far past the fitted edge (rad).
        edge_gap_rad: a run of empty scan lines this wide ends the walk (rad).
        edge_run_px: a scan line shows signal when a run of this many consecutive signal
            pixels (full resolution) begins in its near field, ...
        edge_near_frac: ... within this fraction of the fan's depth below the probe arc
            (the near field above a rib).
        arc_search_px: the full-resolution arc fit looks this far (px) either side of the
            working-scale arcs.
        arc_frac_top, arc_frac_bottom: the arc fit takes columns within this fraction of the
            fitted edge angles (the bottom arc's ends are often shadowed or dim, and a few
            biased end points move the apex by pixels).
        arc_line_tol_rad: the arcs' apex is refused when a fitted side line runs flatter
            than the edge ray from that apex by more than this (rad).
    """

    work_px: int = 320
    threshold_grey: float = 2.5
    open_px: int = 5
    close_px: int = 9
    min_area_frac: float = 0.03
    margin_px: int = 2
    phased_ratio: float = 0.12
    linear_slope: float = 0.06
    min_fit_iou: float = 0.85
    flat_std_grey: float = 0.75
    edge_step_rad: float = math.radians(0.1)
    edge_widen_max_rad: float = math.radians(12.0)
    edge_gap_rad: float = math.radians(0.3)
    edge_run_px: int = 5
    edge_near_frac: float = 0.08
    arc_search_px: int = 8
    arc_frac_top: float = 0.85
    arc_frac_bottom: float = 0.7
    arc_line_tol_rad: float = math.radians(1.0)


@dataclass(frozen=True)
class SectorGeometry:
    """The sector found in one frame layout.

    Attributes:
        kind: "convex" | "phased" | "linear" | "full".
        shape: (H, W) of the frames it applies to (px).
        mask: uint8 (H, W), 255 inside the sector, 0 outside; read-only.
        xyxy_px: bounding box (x0, y0, x1, y1), x1/y1 exclusive, original-frame pixels.
        apex_xy_px: virtual apex of a fan (may lie above the frame); None for rectangles.
        radii_px: (inner, outer) radius of a fan from its apex (px); None for rectangles.
        half_angles_rad: (left, right) angle of the side edges from the vertical (left < 0).
        fit_iou: agreement of the geometric model with the detected blob's convex hull.
        fitted: True when the mask is the geometric model, False when it is the hull.
    """

    kind: str
    shape: tuple[int, int]
    mask: np.ndarray
    xyxy_px: tuple[int, int, int, int]
    apex_xy_px: tuple[float, float] | None = None
    radii_px: tuple[float, float] | None = None
    half_angles_rad: tuple[float, float] | None = None
    fit_iou: float = 1.0
    fitted: bool = True

    @property
    def area_px(self) -> int:
        return int(np.count_nonzero(self.mask))

    def line_index(self, shape: tuple[int, int], n_lines: int) -> np.ndarray:
        """Scan-line bin of every pixel of a (downscaled) image of ``shape``.

        Fans are binned by angle from the apex, rectangles by column: a lost-contact event
        darkens whole scan lines, so per-line statistics find it.

        Args:
            shape: (h, w) of the image the bins are for; coordinates scale from ``self.shape``.
            n_lines: number of bins.

        Returns:
            int32 (h, w): bin in [0, n_lines), -1 outside the sector.
        """
        h, w = shape
        sy, sx = self.shape[0] / h, self.shape[1] / w
        small = cv2.resize(self.mask, (w, h), interpolation=cv2.INTER_NEAREST) > 0
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        xs = (xs + 0.5) * sx - 0.5
        ys = (ys + 0.5) * sy - 0.5
        if self.apex_xy_px is not None and self.half_angles_rad is not None:
            ax, ay = self.apex_xy_px
            ang = np.arctan2(xs - ax, ys - ay)
            lo, hi = self.half_angles_rad
            t = (ang - lo) / max(hi - lo, 1e-6)
        else:
            x0, _, x1, _ = self.xyxy_px
            t = (xs - x0) / max(x1 - x0, 1)
        idx = np.clip((t * n_lines).astype(np.int32), 0, n_lines - 1)
        idx[~small] = -1
        return idx


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W) grey from uint8 (H, W) or (H, W, 3) RGB. Grey input is returned as is."""
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def background_level(gray_small: np.ndarray) -> float:
    """Grey level of the screen background: the 5th percentile (screens are mostly black)."""
    hist = np.bincount(gray_small.ravel(), minlength=256)
    cdf = np.cumsum(hist)
    return float(np.searchsorted(cdf, 0.05 * cdf[-1]))


def halving_factor(shape: tuple[int, int], limit_px: int) -> int:
    """Power-of-two downscale factor: halve while the long side exceeds 1.3 x ``limit_px``.

    OpenCV's area resize has a fast path for exact halving and a slow one for other ratios
    (~6x slower for 8x at 480x640), so working copies are made by repeated halving.
    """
    f, long_side = 1, max(shape)
    while long_side > 1.3 * limit_px and min(shape) // (2 * f) >= 16:
        f *= 2
        long_side //= 2
    return f


def halve(image: np.ndarray, factor: int) -> np.ndarray:
    """Area-average ``image`` down by ``factor`` (a power of two) in exact halving steps."""
    while factor > 1:
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2),
                           interpolation=cv2.INTER_AREA)
        factor //= 2
    return image


def working_scale(shape: tuple[int, int], work_px: int) -> int:
    """Integer downscale factor so the long side is at most ``work_px``."""
    return max(1, math.ceil(max(shape) / work_px))


def detect_sector(gray: np.ndarray, params: SectorParams | None = None) -> SectorGeometry | None:
    """Detect the imaging sector in one grey frame.

    Runs the blob search at two signal thresholds (``threshold_grey`` and 2.5x it): the low
    one keeps the dim deep field of lung or colour-Doppler screens, the high one keeps
    grey UI panels that touch the sector out. A fitted fan or rectangle beats a bare hull;
    among fitted models the larger wins.

    Args:
        gray: uint8 (H, W) grey frame.
        params: tuning; defaults when None.

    Returns:
        The geometry, or None when the frame holds no sector-sized region of signal (black
        frame, probe in air with nothing on screen).
    """
    p = params or SectorParams()
    h, w = gray.shape
    f = working_scale((h, w), p.work_px)
    hs, ws = h // f, w // f
    small = cv2.resize(gray, (ws, hs), interpolation=cv2.INTER_AREA)
    bg = background_level(small)
    # flat panels (status bars, buttons, grey borders) are bright but have no speckle
    sf = small.astype(np.float32)
    var = cv2.blur(sf * sf, (5, 5)) - cv2.blur(sf, (5, 5)) ** 2
    textured = var > p.flat_std_grey ** 2
    found: list[_Model] = []
    for thr in (p.threshold_grey, 2.5 * p.threshold_grey):
        model = _best_blob_model(small, bg + thr, textured, p)
        if model is not None:
            found.append(model)
    if not found:
        return None
    fitted = [m for m in found if m.fitted]
    best = max(fitted, key=lambda m: m.area_small) if fitted else max(found, key=lambda m: m.iou)
    if best.fitted and best.kind == "convex" and best.apex is not None:
        best = refine_convex_fan(gray, textured, best, f, bg + p.threshold_grey, p)
    return best.render((h, w), f, p.margin_px)


def refine_convex_fan(gray: np.ndarray, textured: np.ndarray, model: _Model, f: int,
                      level: float, p: SectorParams) -> _Model:
    """Refine a fitted convex fan at full resolution: apex and radii from both arcs
    (:func:`_fit_arcs_full`), then side edges widened by :func:`widen_fan_edges`.

    The working-scale fit places the apex only to a few full-resolution pixels (side lines
    from the hull, arcs from their central part at half resolution), and an apex a few
    pixels off tilts edge rays measured near the probe by a degree at the far corners. The
    full-resolution arcs fix it to about a pixel; the edge rays keep passing through the
    fitted side-line points next to the far corners.

    Args:
        gray: uint8 (H, W) full-resolution grey frame.
        textured: bool (h, w) working-scale texture map.
        model: a fitted convex fan (working-scale coordinates).
        f: working-scale factor.
        level: grey level above which a pixel is signal.
        p: tuning.

    Returns:
        A new model (the input is not changed).
    """
    ax, ay = model.apex
    r_in, r_out = model.radii
    arcs = _fit_arcs_full(gray, model, f, level, p)
    # the side lines can put the apex well off (a one-sided shadow): trust the arcs' fit
    # unless it lands far away (then it fitted something else)
    if arcs is not None and math.hypot(arcs[0][0] - ax, arcs[0][1] - ay) <= 0.35 * max(r_in, 1.0):
        (ax, ay), r_in, r_out = arcs
        angles = model.angles
        if model.edge_pts is not None:
            (xl, yl), (xr, yr) = model.edge_pts
            angles = (math.atan2(xl - ax, max(yl - ay, 1e-6)),
                      math.atan2(xr - ax, max(yr - ay, 1e-6)))
        # A shadow at a side edge only makes that side's hull line steeper than the edge
        # ray; a line flatter than the ray through its own far point means the side lines
        # and the arcs disagree about the apex (a screen scaled unequally in x and y draws
        # the arcs as ellipses): keep the fit that follows the visible edges.
        flatter = model.line_angles is not None and (
            -model.line_angles[0] > -angles[0] + p.arc_line_tol_rad
            or model.line_angles[1] > angles[1] + p.arc_line_tol_rad)
        if angles[0] < 0 < angles[1] and 0 < r_in < r_out and not flatter:
            model = replace(model, apex=(ax, ay), radii=(r_in, r_out), angles=angles)
    return replace(model, angles=widen_fan_edges(gray, textured, model, f, level, p))


def _arc_points(gray: np.ndarray, ax: float, ay: float, radius: float,
                angles: tuple[float, float], level: float, search_px: int, top: bool,
                frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Boundary points of one arc of a fan at full resolution.

    Per column within ``frac`` of the edge ``angles``: the first (``top``) or last row, within
    ``search_px`` of the circle of ``radius`` about ``(ax, ay)``, of a vertical run of three
    signal pixels, moved half a pixel out to the boundary. Columns whose window leaves the
    frame, or whose run touches the window's far side (something beyond the arc), are left
    out.

    Returns:
        ``(x, y)`` float arrays of boundary points (full-resolution px).
    """
    h, w = gray.shape
    lo, hi = angles
    x0 = int(math.ceil(ax + radius * math.sin(frac * lo)))
    x1 = int(math.floor(ax + radius * math.sin(frac * hi)))
    xs = np.arange(max(x0, 0), min(x1, w - 1) + 1)
    empty = (np.zeros(0), np.zeros(0))
    if xs.size < 10:
        return empty
    yc = np.rint(ay + np.sqrt(np.maximum(radius ** 2 - (xs - ax) ** 2, 0.0))).astype(np.intp)
    d = np.arange(-search_px, search_px + 1)
    rows = yc[:, None] + (d if top else -d)[None, :]  # rows ordered from outside inward
    ok = (rows.min(axis=1) >= 0) & (rows.max(axis=1) < h)
    xs, rows = xs[ok], rows[ok]
    if xs.size < 10:
        return empty
    on = gray[rows, xs[:, None]] > level
    run3 = on[:, :-2] & on[:, 1:-1] & on[:, 2:]
    first = np.argmax(run3, axis=1)
    good = run3.any(axis=1) & (first > 0)
    y = rows[good, first[good]] + (-0.5 if top else 0.5)
    return xs[good].astype(np.float64), y.astype(np.float64)


def _fit_arcs_full(gray: np.ndarray, model: _Model, f: int, level: float, p: SectorParams
                   ) -> tuple[tuple[float, float], float, float] | None:
    """Apex and both radii (working px) from the two arcs at full resolution.

    Points from :func:`_arc_points` on the probe arc and the bottom arc; concentric circles,
    centre free, least squares with outlier trimming (a bright structure at the bottom
    edge, a dark column). The bottom arc, the longer and more curved one in pixels, fixes
    most of the apex height; both arcs fix its column, which the side lines place off axis
    when a shadow narrows one side more than the other.

    Returns:
        ``((apex_x, apex_y), r_in, r_out)`` in working pixels, or None when either arc
        shows fewer than 20 points or the fit is poor (RMS residual above 1.5 px).
    """
    ax, ay = ((model.apex[0] + 0.5) * f - 0.5, (model.apex[1] + 0.5) * f - 0.5)
    r_in, r_out = model.radii[0] * f, model.radii[1] * f
    groups = [_arc_points(gray, ax, ay, r, model.angles, level, p.arc_search_px, top, frac)
              for r, top, frac in ((r_in, True, p.arc_frac_top),
                                   (r_out, False, p.arc_frac_bottom))]
    if any(g[0].size < 20 for g in groups):
        return None
    keep = [np.ones(g[0].size, bool) for g in groups]
    sol = None
    # circles about (cx, cy): x^2 + y^2 = 2 x cx + 2 y cy + c_arc, linear in cx, cy, c_arc
    for _ in range(4):
        a = np.zeros((sum(k.sum() for k in keep), 4))
        b = np.zeros(a.shape[0])
        row = 0
        for gi, ((x, y), k) in enumerate(zip(groups, keep, strict=True)):
            n = int(k.sum())
            a[row:row + n, 0] = 2.0 * x[k]
            a[row:row + n, 1] = 2.0 * y[k]
            a[row:row + n, 2 + gi] = 1.0
            b[row:row + n] = x[k] ** 2 + y[k] ** 2
            row += n
        sol = np.linalg.lstsq(a, b, rcond=None)[0]
        cx, cy = sol[0], sol[1]
        for gi, (x, y) in enumerate(groups):
            rr = math.sqrt(max(sol[2 + gi] + cx * cx + cy * cy, 0.0))
            resid = np.abs(np.hypot(x - cx, y - cy) - rr)
            # a shadow reaching the bottom arc moves a run of points inward by up to the
            # search window: cut at 3x the median residual, not at a percentile
            keep[gi] = resid <= max(1.0, 3.0 * float(np.median(resid[keep[gi]])))
            if keep[gi].sum() < 20:
                return None
    cx, cy = float(sol[0]), float(sol[1])
    radii, sq = [], []
    for gi, (x, y) in enumerate(groups):
        rr = math.sqrt(max(sol[2 + gi] + cx * cx + cy * cy, 0.0))
        radii.append(rr)
        sq.append((np.hypot(x[keep[gi]] - cx, y[keep[gi]] - cy) - rr) ** 2)
    if float(np.sqrt(np.mean(np.concatenate(sq)))) > 1.5:
        return None
    return ((cx + 0.5) / f - 0.5, (cy + 0.5) / f - 0.5), radii[0] / f, radii[1] / f


def widen_fan_edges(gray: np.ndarray, textured: np.ndarray, model: _Model, f: int,
                    level: float, p: SectorParams) -> tuple[float, float]:
    """Push a convex fan's side edges out to the last scan line that starts with signal.

    The side lines are fitted to the blob's hull, so a shadow that reaches a side edge (a
    rib in an intercostal view) pulls the edge in, although the scan lines under it still
    carry signal above the shadow: every scan line starts at the probe face, and the near
    field between the probe arc and the rib is bright. With the apex and radii known, this
    walks scan lines outward from just inside each fitted edge at full resolution, in
    ``edge_step_rad`` steps. A line counts when a run of ``edge_run_px`` consecutive signal
    pixels (above ``level`` and textured, so flat UI panels do not count) begins within
    ``edge_near_frac`` of the depth below the probe arc (or below the frame's top edge
    where the arc lies above the frame): UI drawn beside the fan (a ruler line, a marker)
    can cross a scan line, but not where the line leaves the probe. The walk ends at the
    first ``edge_gap_rad`` of lines that do not count, or ``edge_widen_max_rad`` past the
    fitted edge. Edges only ever widen: an empty walk keeps the fit. Phased fans (no probe
    arc) are left as fitted.

    Args:
        gray: uint8 (H, W) full-resolution grey frame.
        textured: bool (h, w) working-scale texture map (``h = H // f``).
        model: the fitted fan, working-scale coordinates.
        f: working-scale factor.
        level: grey level above which a pixel is signal.
        p: tuning.

    Returns:
        ``(left, right)`` edge angles from the vertical (rad), left < 0 < right.
    """
    if model.kind != "convex" or model.apex is None:
        return model.angles
    h, w = gray.shape
    hs, ws = textured.shape
    ax, ay = ((model.apex[0] + 0.5) * f - 0.5, (model.apex[1] + 0.5) * f - 0.5)
    r_in, r_out = model.radii[0] * f, model.radii[1] * f
    radii = np.arange(r_in + 1.0, r_out - 1.0, 1.0, dtype=np.float32)
    near = max(2 * p.edge_run_px, int(round(p.edge_near_frac * (r_out - r_in))))
    if radii.size < 2 * near:
        return model.angles
    step = p.edge_step_rad
    n_in = int(round(math.radians(2.0) / step))
    n_out = int(round(p.edge_widen_max_rad / step))
    gap = max(1, int(round(p.edge_gap_rad / step)))
    offsets = (np.arange(n_in + n_out, dtype=np.float32) - n_in + 0.5) * step
    k_run = cv2.getStructuringElement(cv2.MORPH_RECT, (p.edge_run_px, 1))
    idx = np.arange(radii.size)[None, :]
    out = list(model.angles)
    for side, sign in ((0, -1.0), (1, 1.0)):
        theta = model.angles[side] + sign * offsets
        xs = np.rint(ax + np.sin(theta)[:, None] * radii[None, :]).astype(np.intp)
        ys = np.rint(ay + np.cos(theta)[:, None] * radii[None, :]).astype(np.intp)
        inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
        xc, yc = np.clip(xs, 0, w - 1), np.clip(ys, 0, h - 1)
        on = inside & (gray[yc, xc] > level) & textured[np.minimum(yc // f, hs - 1),
                                                        np.minimum(xc // f, ws - 1)]
        # a run of edge_run_px signal pixels survives a 1 x run erosion (centred anchor)
        runs = cv2.erode(on.astype(np.uint8), k_run, borderType=cv2.BORDER_CONSTANT,
                         borderValue=0) > 0
        first = np.argmax(inside, axis=1)[:, None]
        start = (idx >= first + p.edge_run_px // 2) & (idx < first + near)
        has = (runs & start).any(axis=1) & inside.any(axis=1)
        last, empty = -1, 0
        for i in range(has.size):
            if has[i]:
                last, empty = i, 0
            else:
                empty += 1
                if empty >= gap and i >= n_in:
                    break
        if last >= n_in:
            # the line's bin reaches half a step past its centre
            out[side] = float(model.angles[side] + sign * (offsets[last] + 0.5 * step))
    return out[0], out[1]


@dataclass
class _Model:
    """A sector model in working-scale pixel coordinates (pixel centres)."""

    kind: str
    iou: float
    fitted: bool
    area_small: int
    hull: np.ndarray | None = None  # (N, 2) working-scale hull vertices when not fitted
    apex: tuple[float, float] | None = None
    radii: tuple[float, float] | None = None
    angles: tuple[float, float] | None = None
    rect: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 (exclusive), working px
    # a point on each fitted side line (working px): the edge rays pass through them
    edge_pts: tuple[tuple[float, float], tuple[float, float]] | None = None
    # directions of the fitted side lines from the vertical (rad)
    line_angles: tuple[float, float] | None = None

    def render(self, shape: tuple[int, int], f: int, margin_px: int,
               whole_degrees: bool = False) -> SectorGeometry:
        """Draw the model's mask at scale ``f`` (full frame ``shape``) grown by ``margin_px``.

        ``whole_degrees`` draws fan edges rounded to whole degrees, as ``cv2.ellipse`` does:
        only the model-vs-hull agreement test uses it, because ``min_fit_iou`` was tuned
        with it (exact edges let a loose fan of a dim, noisy blob pass the test; real clip
        ``echo_0012.mp4``).
        """
        h, w = shape
        mask = np.zeros((h, w), np.uint8)
        if self.kind == "full":
            mask[:] = 255
            return _geometry("full", mask)
        if not self.fitted:
            pts = ((self.hull.astype(np.float64) + 0.5) * f - 0.5).round().astype(np.int32)
            cv2.fillConvexPoly(mask, cv2.convexHull(pts), 255)
            # hull vertices are pixel centres of whole working pixels: grow by half of one
            grow = int(math.ceil(0.5 * f)) + margin_px
            k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
            return _geometry(self.kind, cv2.dilate(mask, k), fitted=False, fit_iou=self.iou)
        if self.rect is not None:
            x0, y0, x1, y1 = self.rect
            mask[max(0, y0 * f - margin_px):min(h, y1 * f + margin_px),
                 max(0, x0 * f - margin_px):min(w, x1 * f + margin_px)] = 255
            return _geometry(self.kind, mask, fit_iou=self.iou)
        ax, ay = ((self.apex[0] + 0.5) * f - 0.5, (self.apex[1] + 0.5) * f - 0.5)
        r_in, r_out = self.radii[0] * f - margin_px, self.radii[1] * f + margin_px
        grow = margin_px / max(r_out, 1.0)
        th_l, th_r = self.angles[0] - grow, self.angles[1] + grow
        if whole_degrees:
            _draw_fan_whole_degrees(mask, (ax, ay), (r_in, r_out), (th_l, th_r))
        else:
            _draw_fan(mask, (ax, ay), (r_in, r_out), (th_l, th_r))
        g = _geometry(self.kind, mask, fit_iou=self.iou)
        return SectorGeometry(self.kind, g.shape, g.mask, g.xyxy_px, (float(ax), float(ay)),
                              (max(r_in, 0.0), r_out), (th_l, th_r), fit_iou=self.iou)


_SHIFT = 4  # cv2 drawing: 4 fractional bits of sub-pixel precision


def _draw_fan(mask: np.ndarray, apex: tuple[float, float], radii: tuple[float, float],
              angles: tuple[float, float]) -> None:
    """Fill an annular sector (angles from the +y axis toward +x, radians) with 255.

    Drawn as one polygon with vertices every half degree on both arcs (chord error below
    0.01 px at 500 px radius) and the exact edge angles: ``cv2.ellipse`` rounds its start
    and end angles to whole degrees, which moves a fan's side edges by up to half a degree
    (4 px at the corners of a 480-px-deep fan, enough to reach a ruler beside them).
    """
    one = 1 << _SHIFT
    ax, ay = apex
    r_in, r_out = radii
    lo, hi = angles
    n = max(2, int(math.ceil((hi - lo) / math.radians(0.5))) + 1)
    th = np.linspace(lo, hi, n)
    outer = np.column_stack([ax + r_out * np.sin(th), ay + r_out * np.cos(th)])
    if r_in > 0:
        inner = np.column_stack([ax + r_in * np.sin(th[::-1]), ay + r_in * np.cos(th[::-1])])
    else:
        inner = np.array([[ax, ay]])
    poly = np.rint(np.vstack([outer, inner]) * one).astype(np.int32)
    cv2.fillPoly(mask, [poly], 255, cv2.LINE_8, _SHIFT)


def _draw_fan_whole_degrees(mask: np.ndarray, apex: tuple[float, float],
                            radii: tuple[float, float], angles: tuple[float, float]) -> None:
    """:func:`_draw_fan` through ``cv2.ellipse``, whose edge angles round to whole degrees."""
    one = 1 << _SHIFT
    c = (int(round(apex[0] * one)), int(round(apex[1] * one)))
    r_in, r_out = radii
    start, end = 90.0 - math.degrees(angles[1]), 90.0 - math.degrees(angles[0])
    ro = int(round(r_out * one))
    cv2.ellipse(mask, c, (ro, ro), 0.0, start, end, 255, -1, cv2.LINE_8, _SHIFT)
    if r_in > 0:
        cv2.circle(mask, c, int(round(r_in * one)), 0, -1, cv2.LINE_8, _SHIFT)


def _best_blob_model(small: np.ndarray, level: float, textured: np.ndarray, p: SectorParams
                     ) -> _Model | None:
    hs, ws = small.shape
    on = ((small > level) & textured).astype(np.uint8)
    k_open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (p.open_px, p.open_px))
    k_close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (p.close_px, p.close_px))
    on = cv2.morphologyEx(on, cv2.MORPH_OPEN, k_open)
    on = cv2.morphologyEx(on, cv2.MORPH_CLOSE, k_close)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(on, connectivity=8)
    if n <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(areas)[::-1]
    best: tuple[float, _Model] | None = None
    for rank in order[:3]:
        area = float(areas[rank])
        if area < p.min_area_frac * hs * ws or area < 0.3 * float(areas[order[0]]):
            break
        model = _fit((labels == rank + 1).astype(np.uint8), p)
        # A fan that fits its model is the sector; a spectral-Doppler strip or a text panel
        # also forms a big blob but never a fan. Prefer fitted fans over bigger rectangles.
        score = area * (2.0 if model.kind in ("convex", "phased") and model.fitted else 1.0)
        if best is None or score > best[0]:
            best = (score, model)
    return None if best is None else best[1]


def _fit(blob: np.ndarray, p: SectorParams) -> _Model:
    """Fit a fan or rectangle model to one blob (working scale)."""
    hs, ws = blob.shape
    # the hull of the outer contour is the hull of the blob, from a few hundred points
    contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    pts = np.vstack(contours)
    hull = cv2.convexHull(pts)
    hull_small = np.zeros_like(blob)
    cv2.fillConvexPoly(hull_small, hull, 1)
    area = int(np.count_nonzero(hull_small))
    x, y, bw, bh = cv2.boundingRect(pts)
    if bw >= 0.97 * ws and bh >= 0.97 * hs:
        return _Model("full", 1.0, True, hs * ws)
    unfitted = _Model("convex", 0.0, False, area, hull=hull.reshape(-1, 2))
    rows = np.nonzero(hull_small.any(axis=1))[0]
    left = np.argmax(hull_small[rows] > 0, axis=1).astype(np.float64)
    right = (ws - 1 - np.argmax(hull_small[rows, ::-1] > 0, axis=1)).astype(np.float64)
    y_top, y_wide = rows[0], rows[int(np.argmax(right - left))]
    span = y_wide - y_top
    sel = (rows >= y_top + 0.1 * span) & (rows <= y_top + 0.9 * span)
    if span < 8 or sel.sum() < 6:
        model = _Model("linear", 0.0, True, area, rect=(x, y, x + bw, y + bh))
    else:
        yy = rows[sel].astype(np.float64)
        al, bl = np.polyfit(yy, left[sel], 1)
        ar, br = np.polyfit(yy, right[sel], 1)
        if abs(al) < p.linear_slope and abs(ar) < p.linear_slope:
            model = _Model("linear", 0.0, True, area, rect=(x, y, x + bw, y + bh))
        elif al < 0 < ar:
            model = _fan_model(blob, (al, bl, ar, br), p, area,
                               (rows[sel].astype(np.float64), left[sel], right[sel]))
            if model is None:
                return unfitted
        else:
            unfitted.kind = "linear" if abs(al) + abs(ar) < 4 * p.linear_slope else "convex"
            return unfitted
    rendered = model.render((hs, ws), 1, 0, whole_degrees=True).mask > 0
    model.iou = _iou(rendered, hull_small > 0)
    if model.iou < p.min_fit_iou:
        unfitted.kind, unfitted.iou = model.kind, model.iou
        return unfitted
    return model


def _fan_model(blob: np.ndarray, lines, p: SectorParams, area: int,
               edges: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
               ) -> _Model | None:
    """Fit a fan: apex from the side lines, refined with the arcs; radii; edge angles.

    The side lines alone place the apex poorly (a small slope error moves it far along the
    axis), so the apex height and both radii are fitted jointly to the top and bottom arcs
    (concentric circles about the apex); the edges are rays from that apex through the
    fitted side lines next to the fan's corners.
    """
    al, bl, ar, br = lines
    ay = (br - bl) / (al - ar)
    ax = al * ay + bl
    fit = _fit_arcs(blob, ax, ay, 0.6 * min(-math.atan(al), math.atan(ar)))
    if fit is not None and fit[2] is not None and abs(fit[0] - ay) <= 0.2 * fit[2]:
        # the arcs refine the apex height; a fit far from the lines' apex is not trusted
        ay, r_in_fit, r_out_fit = fit
    else:
        r_in_fit = r_out_fit = None
    if r_in_fit is None or r_out_fit is None:
        ys, xs = np.nonzero(blob)
        r = np.hypot(xs - ax, ys - ay)
        # Radii per scan-line bin: the inner arc is the median of the bins' nearest pixels
        # (a UI mark stuck to one line cannot move it); the outer arc the 80th percentile of
        # the bins' farthest pixels (deep lines darkened by shadows cannot pull it in).
        ang = np.arctan2(xs - ax, ys - ay)
        lo, hi = math.atan(al), math.atan(ar)
        n_bins = 64
        b = np.clip(((ang - lo) / max(hi - lo, 1e-6) * n_bins).astype(np.intp), 0, n_bins - 1)
        r_min = np.full(n_bins, np.inf)
        r_max = np.full(n_bins, -np.inf)
        np.minimum.at(r_min, b, r)
        np.maximum.at(r_max, b, r)
        central = r_min[n_bins // 4:3 * n_bins // 4]
        central = central[np.isfinite(central)]
        filled = r_max[np.isfinite(r_max)]
        if central.size == 0 or filled.size == 0:
            return None
        # partly covered working pixels are "on": pixel centres bound the sector
        if r_out_fit is None:
            r_out_fit = float(np.percentile(filled, 80))
        if r_in_fit is None:
            r_in_fit = float(np.median(central))
    r_in, r_out = r_in_fit, r_out_fit
    if r_out <= 0 or r_in >= r_out:
        return None
    kind = "phased" if r_in < p.phased_ratio * r_out else "convex"
    # keep the measured top arc for both kinds: a phased fan's wedge above its first
    # sample is screen, not image (IDs are often printed right there)
    r_in = max(r_in, 0.0)
    if edges is not None:
        # Edge rays from the (refined) apex through the fitted side lines at the far end of
        # the fitted rows, next to the fan's corners: there the ray meets the line exactly,
        # so an error in the apex height cannot push the corners out (nearer the apex the
        # inner arc cuts the fan anyway). The signal threshold is far below speckle level,
        # so a working pixel only partly inside the sector is already "on": the outermost
        # pixel centres lie on (or just outside) the true edge; no half-pixel is added.
        rows = edges[0]
        y_far = float(rows.max())
        dy = max(y_far - ay, 1e-6)
        angles = (math.atan2(al * y_far + bl - ax, dy), math.atan2(ar * y_far + br - ax, dy))
        edge_pts = ((al * y_far + bl, y_far), (ar * y_far + br, y_far))
    else:
        angles = (math.atan(al), math.atan(ar))
        edge_pts = None
    if not angles[0] < 0 < angles[1]:
        return None
    return _Model(kind, 0.0, True, area, apex=(float(ax), float(ay)), radii=(r_in, r_out),
                  angles=angles, edge_pts=edge_pts, line_angles=(math.atan(al), math.atan(ar)))


def _fit_arcs(blob: np.ndarray, ax: float, ay0: float, max_angle: float
              ) -> tuple[float, float | None, float | None] | None:
    """Apex height and radii from the top and bottom arcs (least squares, two passes).

    Points: per column, the blob's first and last row (moved half a pixel out to the
    boundary), kept when seen from the first apex estimate ``(ax, ay0)`` within
    ``max_angle`` of the axis (away from the side edges); points on the frame's border are
    cut by the frame, not arcs. Circle
    about (ax, ay): (x - ax)^2 + y^2 = 2 y ay + (R^2 - ay^2), linear in ay and the constants.

    Returns:
        ``(ay, r_in, r_out)`` (a radius None when its arc gave too few points), or None.
    """
    hs, ws = blob.shape
    cols = np.nonzero(blob.any(axis=0))[0]
    if cols.size < 10:
        return None
    sub = blob[:, cols] > 0
    top = np.argmax(sub, axis=0).astype(np.float64)
    bot = (hs - 1 - np.argmax(sub[::-1], axis=0)).astype(np.float64)
    x = cols.astype(np.float64)
    central_t = np.abs(np.arctan2(x - ax, np.maximum(top - ay0, 1e-6))) <= max_angle
    central_b = np.abs(np.arctan2(x - ax, np.maximum(bot - ay0, 1e-6))) <= max_angle
    groups = []
    # morphology erodes a blob cut by the frame's edge by a pixel or two: keep clear of it
    ok_t = (top > 3) & central_t
    ok_b = (bot < hs - 4) & central_b
    if ok_t.sum() >= 6:
        groups.append(("in", x[ok_t], top[ok_t]))
    if ok_b.sum() >= 6:
        groups.append(("out", x[ok_b], bot[ok_b]))
    if len(groups) < 2:
        return None  # one short arc cannot fix the apex height: keep the lines' apex
    keep = [np.ones(len(g[1]), bool) for g in groups]
    sol = None
    for _ in range(2):
        a_rows, b_rows = [], []
        for gi, (_, gx, gy) in enumerate(groups):
            k = keep[gi]
            m = np.zeros((k.sum(), 1 + len(groups)))
            m[:, 0] = 2.0 * gy[k]
            m[:, 1 + gi] = 1.0
            a_rows.append(m)
            b_rows.append((gx[k] - ax) ** 2 + gy[k] ** 2)
        sol = np.linalg.lstsq(np.vstack(a_rows), np.concatenate(b_rows), rcond=None)[0]
        ay = sol[0]
        for gi, (_, gx, gy) in enumerate(groups):
            rr = np.sqrt(max(sol[1 + gi] + ay * ay, 0.0))
            resid = np.abs(np.hypot(gx - ax, gy - ay) - rr)
            keep[gi] = resid <= max(1.5, np.percentile(resid, 80))
            if keep[gi].sum() < 4:
                return None
    ay = float(sol[0])
    radii = {name: float(np.sqrt(max(sol[1 + gi] + ay * ay, 0.0)))
             for gi, (name, _, _) in enumerate(groups)}
    return ay, radii.get("in"), radii.get("out")


def _geometry(kind: str, mask: np.ndarray, fitted: bool = True, fit_iou: float = 1.0
              ) -> SectorGeometry:
    mask.flags.writeable = False
    ys = np.nonzero(mask.any(axis=1))[0]
    xs = np.nonzero(mask.any(axis=0))[0]
    if len(ys) == 0:
        box = (0, 0, 0, 0)
    else:
        box = (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)
    return SectorGeometry(kind, (int(mask.shape[0]), int(mask.shape[1])), mask, box,
                          fit_iou=fit_iou, fitted=fitted)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b)) / union if union else 0.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks of the same shape (nonzero = inside)."""
    return _iou(a > 0, b > 0)
