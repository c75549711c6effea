"""Convex-probe geometry: the beam grid, the liver-frame pose transform and scan conversion.

Beam space is ``(n_lines, n_samples)``: row = scan line (angle), column = range sample, so the
axial direction is contiguous in memory. The probe frame has ``u`` lateral and ``v`` depth below
the centre of the probe face (mm); the apex of the fan lies at ``(0, -radius)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class Probe:
    """Convex probe and its point-spread function.

    Attributes:
        radius_mm: radius of curvature of the probe face.
        half_angle_deg: half of the sector opening angle.
        depth_mm: imaging depth below the probe face.
        freq_mhz: centre frequency (sets round-trip attenuation).
        dynamic_range_db: log-compression dynamic range.
        grey_gamma: exponent of the grey map.
        axial_fwhm_mm: axial PSF full width at half maximum.
        lateral_fwhm_deg: lateral PSF FWHM at the focus, as an angle.
        focus_mm: transmit focus depth.
    """

    radius_mm: float
    half_angle_deg: float
    depth_mm: float
    freq_mhz: float
    dynamic_range_db: float
    grey_gamma: float
    axial_fwhm_mm: float
    lateral_fwhm_deg: float
    focus_mm: float

    @property
    def half_angle_rad(self) -> float:
        """Half opening angle in radians."""
        return math.radians(self.half_angle_deg)

    def truth(self) -> dict[str, Any]:
        """The probe's entry in the case truth."""
        return {"radius_mm": round(self.radius_mm, 3), "half_angle_deg": round(self.half_angle_deg, 3),
                "depth_mm": round(self.depth_mm, 3), "freq_mhz": round(self.freq_mhz, 3),
                "dynamic_range_db": round(self.dynamic_range_db, 2),
                "focus_mm": round(self.focus_mm, 2)}


@dataclass(frozen=True)
class Layout:
    """Placement of the sector in the output image.

    Attributes:
        mm_per_px: isotropic pixel spacing.
        origin_x_px, origin_y_px: pixel position of the probe-frame origin (centre of the face).
        height, width: output size.
    """

    mm_per_px: float
    origin_x_px: float
    origin_y_px: float
    height: int
    width: int


def sector_layout(probe: Probe, height: int, width: int) -> Layout:
    """Fit the sector into ``height x width`` with margins left for the burned-in UI.

    The horizontal margins (9 % of the width each side) hold the depth ruler and text; the
    geometry does not depend on whether the UI is drawn, so mm/px is a property of the size.
    """
    th = probe.half_angle_rad
    r_max = probe.radius_mm + probe.depth_mm
    width_mm = 2.0 * r_max * math.sin(th)
    v_min = probe.radius_mm * math.cos(th) - probe.radius_mm
    height_mm = probe.depth_mm - v_min
    margin_x = round(0.09 * width)
    top = round(0.03 * height)
    bottom = round(0.02 * height)
    mm_px = max(width_mm / (width - 2 * margin_x), height_mm / (height - top - bottom))
    return Layout(mm_per_px=mm_px, origin_x_px=(width - 1) / 2.0,
                  origin_y_px=top - v_min / mm_px, height=height, width=width)


class BeamGrid:
    """The beam-space sampling grid of one probe.

    Attributes:
        n_lines, n_samples: grid shape.
        theta_rad: ``(n_lines,)`` line angles.
        depth_mm: ``(n_samples,)`` sample depths along the line (from the probe face).
        dd_mm: sample spacing; dtheta_rad: line spacing.
        u_mm, v_mm: ``(n_lines, n_samples)`` float32 probe-frame coordinates of the cells.
    """

    def __init__(self, probe: Probe, n_lines: int, n_samples: int):
        self.probe = probe
        self.n_lines = n_lines
        self.n_samples = n_samples
        th = probe.half_angle_rad
        self.theta_rad = np.linspace(-th, th, n_lines)
        self.dtheta_rad = 2.0 * th / (n_lines - 1)
        self.depth_mm = np.linspace(0.0, probe.depth_mm, n_samples)
        self.dd_mm = probe.depth_mm / (n_samples - 1)
        r = probe.radius_mm + self.depth_mm[None, :]
        self.u_mm = (r * np.sin(self.theta_rad)[:, None]).astype(np.float32)
        self.v_mm = (r * np.cos(self.theta_rad)[:, None] - probe.radius_mm).astype(np.float32)

    def window(self, corners_uv: np.ndarray, pad: int = 2) -> tuple[int, int, int, int] | None:
        """Beam-index window ``(l0, l1, s0, s1)`` covering a convex probe-frame region.

        Args:
            corners_uv: ``(k, 2)`` probe-frame corners (u, v) of a convex polygon (mm).
            pad: extra cells on every side.

        Returns:
            Half-open index ranges, or None when the region misses the sector.
        """
        p = self.probe
        uu = corners_uv[:, 0]
        ww = corners_uv[:, 1] + p.radius_mm
        ang = np.arctan2(uu, ww)
        rad = np.hypot(uu, ww)
        # The nearest point to the apex may lie on an edge: clamp the apex into the bbox.
        cu = np.clip(0.0, uu.min(), uu.max())
        cw = np.clip(0.0, ww.min(), ww.max())
        r_lo = math.hypot(cu, cw)
        r_hi = float(rad.max())
        if cw <= 0.0:
            return None
        l0 = int(math.floor((ang.min() + p.half_angle_rad) / self.dtheta_rad)) - pad
        l1 = int(math.ceil((ang.max() + p.half_angle_rad) / self.dtheta_rad)) + pad + 1
        s0 = int(math.floor((r_lo - p.radius_mm) / self.dd_mm)) - pad
        s1 = int(math.ceil((r_hi - p.radius_mm) / self.dd_mm)) + pad + 1
        l0, l1 = max(l0, 0), min(l1, self.n_lines)
        s0, s1 = max(s0, 0), min(s1, self.n_samples)
        if l0 >= l1 or s0 >= s1:
            return None
        return l0, l1, s0, s1


@dataclass(frozen=True)
class ScanConverter:
    """Precomputed ``cv2.remap`` maps from beam space to the output image.

    Attributes:
        map_samp, map_line: ``(H, W)`` float32 beam coordinates of each output pixel (-1 outside).
        map_nn: fixed-point maps for nearest-neighbour label conversion.
        sector_mask: ``(H, W)`` bool, the true imaging sector.
        layout: the sector placement.
    """

    map_samp: np.ndarray
    map_line: np.ndarray
    map_fx: np.ndarray
    map_fy: np.ndarray
    map_nx: np.ndarray
    map_ny: np.ndarray
    sector_mask: np.ndarray
    layout: Layout

    @classmethod
    def build(cls, grid: BeamGrid, height: int, width: int) -> ScanConverter:
        """Precompute the maps and the sector mask for ``height x width`` output."""
        p = grid.probe
        lay = sector_layout(p, height, width)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
        u = (xx - lay.origin_x_px) * lay.mm_per_px
        v = (yy - lay.origin_y_px) * lay.mm_per_px
        w = v + p.radius_mm
        r = np.hypot(u, w)
        th = np.arctan2(u, w)
        samp = (r - p.radius_mm) / grid.dd_mm
        line = (th + p.half_angle_rad) / grid.dtheta_rad
        inside = ((samp >= 0) & (samp <= grid.n_samples - 1) & (line >= 0)
                  & (line <= grid.n_lines - 1) & (w > 0))
        samp = np.where(inside, samp, -10.0).astype(np.float32)
        line = np.where(inside, line, -10.0).astype(np.float32)
        fx, fy = cv2.convertMaps(samp, line, cv2.CV_16SC2, nninterpolation=False)
        nx, ny = cv2.convertMaps(samp, line, cv2.CV_16SC2, nninterpolation=True)
        return cls(map_samp=samp, map_line=line, map_fx=fx, map_fy=fy, map_nx=nx, map_ny=ny,
                   sector_mask=inside, layout=lay)

    def image(self, beam: np.ndarray) -> np.ndarray:
        """Bilinear scan conversion of a float32 ``(n_lines, n_samples)`` image; 0 outside."""
        return cv2.remap(beam, self.map_fx, self.map_fy, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def labels(self, beam: np.ndarray) -> np.ndarray:
        """Nearest-neighbour scan conversion of a uint8 label map; 0 outside."""
        return cv2.remap(beam, self.map_nx, self.map_ny, cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def labels2(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Two uint8 label maps converted in one pass (nearest neighbour); 0 outside."""
        out = cv2.remap(cv2.merge([a, b]), self.map_nx, self.map_ny, cv2.INTER_NEAREST,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return np.ascontiguousarray(out[..., 0]), np.ascontiguousarray(out[..., 1])
