"""Shared pieces for drawing analytic 3-D primitives into beam space.

A primitive writes four beam-space maps (:class:`SceneMaps`): backscatter ``b_db`` (dB vs
normal liver), attenuation ``alpha`` (dB/cm/MHz), coherent (specular) amplitude ``coh``, and the
label maps ``tissue`` and ``ids``. It touches only a beam-index window computed from its
liver-frame bounding box, which keeps scene rendering cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sonoflow.stream.sim.geometry import BeamGrid


@dataclass
class SceneMaps:
    """Beam-space maps of one frame, each ``(n_lines, n_samples)``.

    Attributes:
        b_db: backscatter (dB re. normal liver), float32.
        alpha: attenuation slope (dB/cm/MHz), float32.
        coh: coherent (specular) echo amplitude, float32.
        tissue: tissue label codes (:data:`sonoflow.stream.sim.config.TISSUE_CODES`), uint8.
        ids: lesion instance ids (0 = none), uint8.
        world: True where the world-locked (liver-frame) speckle applies, else the
            probe-locked wall speckle.
    """

    b_db: np.ndarray
    alpha: np.ndarray
    coh: np.ndarray
    tissue: np.ndarray
    ids: np.ndarray
    world: np.ndarray


@dataclass
class FrameContext:
    """Geometry of one frame in beam space.

    Attributes:
        grid: the beam grid.
        x_mm, z_mm: ``(L, S)`` float32 liver-frame coordinates of the cells.
        y_mm: elevational (liver-frame) position of the imaging plane.
        xp_mm, zp_mm, phi_rad: liver-frame pose of the probe (breathing included).
        bx, bz: ``(L,)`` float32 beam direction of each line in the liver frame.
        liver_b_db: ``(L, S)`` liver backscatter including texture (lesion levels are relative).
        liver_alpha: liver attenuation slope (dB/cm/MHz).
        liver_backscatter_db: the liver's mean backscatter (steatosis level), dB.
    """

    grid: BeamGrid
    x_mm: np.ndarray
    z_mm: np.ndarray
    y_mm: float
    xp_mm: float
    zp_mm: float
    phi_rad: float
    bx: np.ndarray
    bz: np.ndarray
    liver_b_db: np.ndarray
    liver_alpha: float
    liver_backscatter_db: float = 0.0

    def window_xz(self, x0: float, x1: float, z0: float, z1: float,
                  pad: int = 2) -> tuple[int, int, int, int] | None:
        """Beam window of a liver-frame rectangle ``[x0, x1] x [z0, z1]`` (mm)."""
        xs = np.array([x0, x1, x1, x0]) - self.xp_mm
        zs = np.array([z0, z0, z1, z1]) - self.zp_mm
        c, s = math.cos(self.phi_rad), math.sin(self.phi_rad)
        u = xs * c + zs * s
        v = -xs * s + zs * c
        return self.grid.window(np.stack([u, v], axis=1), pad=pad)


@dataclass
class EllipseCut:
    """The cut of a 3-D ellipsoid by the imaging plane, evaluated in a beam window.

    Attributes:
        win: ``(l0, l1, s0, s1)`` beam window.
        rho: 3-D normalised radius of each cell (``< 1`` inside the smooth ellipsoid).
        reff: ``rho`` divided by the boundary perturbation (the mask is ``reff < 1``).
        nb: ``|n . b|``, cosine between the boundary normal and the beam.
        xn, zn: in-plane coordinates normalised by the axes (local frame).
        yn: elevational offset normalised by the elevational axis (scalar).
        radius_mm: mean in-plane radius of the cut.
    """

    win: tuple[int, int, int, int]
    rho: np.ndarray
    reff: np.ndarray
    nb: np.ndarray
    xn: np.ndarray
    zn: np.ndarray
    yn: float
    radius_mm: float


def ellipsoid_cut(ctx: FrameContext, center: tuple[float, float, float],
                  axes: tuple[float, float, float], angle_rad: float,
                  eps: tuple[float, ...] = (), phases: tuple[float, ...] = (),
                  margin: float = 1.15) -> EllipseCut | None:
    """Evaluate an ellipsoid (rotated about Y) on the current plane.

    Args:
        ctx: frame geometry.
        center: ``(X, Y, Z)`` mm; axes: semi-axes ``(ax, ay, az)`` mm; angle_rad: rotation about Y.
        eps, phases: boundary harmonics ``k = 2, 3, ...``: ``r(psi) = 1 + sum eps_k cos(k psi + ph)``.
        margin: the window covers ``reff < margin`` (room for rims and halos).

    Returns:
        The cut, or None when the plane misses the ellipsoid or the sector.
    """
    cx, cy, cz = center
    ax, ay, az = axes
    yn = (ctx.y_mm - cy) / ay
    if abs(yn) >= 1.0:
        return None
    s_cut = math.sqrt(1.0 - yn * yn)
    grow = (1.0 + sum(abs(e) for e in eps)) * margin
    ext = max(ax, az) * s_cut * grow + 1.0
    win = ctx.window_xz(cx - ext, cx + ext, cz - ext, cz + ext)
    if win is None:
        return None
    l0, l1, s0, s1 = win
    dx = ctx.x_mm[l0:l1, s0:s1] - np.float32(cx)
    dz = ctx.z_mm[l0:l1, s0:s1] - np.float32(cz)
    ca, sa = np.float32(math.cos(angle_rad)), np.float32(math.sin(angle_rad))
    xl = dx * ca + dz * sa
    zl = -dx * sa + dz * ca
    xn = xl / np.float32(ax)
    zn = zl / np.float32(az)
    rho = np.sqrt(xn * xn + zn * zn + np.float32(yn * yn))
    if eps:
        psi = np.arctan2(zn, xn)
        pert = np.ones_like(rho)
        for k, (e, ph) in enumerate(zip(eps, phases, strict=True), start=2):
            pert += np.float32(e) * np.cos(np.float32(k) * psi + np.float32(ph))
        reff = rho / pert
    else:
        reff = rho
    # Boundary normal in the liver frame: gradient of rho^2, rotated back.
    gx_l = xn / np.float32(ax)
    gz_l = zn / np.float32(az)
    gx = gx_l * ca - gz_l * sa
    gz = gx_l * sa + gz_l * ca
    gn = np.sqrt(gx * gx + gz * gz) + np.float32(1e-9)
    nb = np.abs(gx * ctx.bx[l0:l1, None] + gz * ctx.bz[l0:l1, None]) / gn
    return EllipseCut(win=win, rho=rho, reff=reff, nb=nb, xn=xn, zn=zn, yn=yn,
                      radius_mm=0.5 * (ax + az) * s_cut)


def smooth_band(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """Gaussian profile ``exp(-0.5 ((x - center) / width)^2)`` as float32."""
    t = (x - np.float32(center)) * np.float32(1.0 / width)
    return np.exp(np.float32(-0.5) * t * t)
