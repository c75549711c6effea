"""Per-frame beam-space scene: abdominal wall, capsule, parenchyma, anatomy and lesions.

The wall and the ribs are probe-locked, so their maps are built once per clip
(:class:`StaticWall`); everything below the liver capsule is liver-frame geometry evaluated on
the moving imaging plane each frame (:func:`build_scene`).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from sonoflow.stream.sim import config
from sonoflow.stream.sim.geometry import BeamGrid
from sonoflow.stream.sim.lesions import draw_lesion
from sonoflow.stream.sim.primitives import FrameContext, SceneMaps, ellipsoid_cut, smooth_band
from sonoflow.stream.sim.seeding import stream_rng

T = config.TISSUE_CODES


def _smooth1d(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Unit-variance smooth 1-D noise of length ``n`` (correlation ``sigma`` samples)."""
    x = rng.standard_normal(n + 8 * int(sigma) + 8).astype(np.float32)[None, :]
    k = int(2 * math.ceil(3 * sigma) + 1)
    y = cv2.GaussianBlur(x, (k, 1), sigma, borderType=cv2.BORDER_REFLECT)[0]
    off = 4 * int(sigma) + 4
    y = y[off:off + n]
    return (y - y.mean()) / (y.std() + 1e-6)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class StaticWall:
    """Probe-locked maps of the abdominal wall and ribs, built once per clip.

    Attributes:
        b_db, alpha, coh: ``(L, S)`` float32 maps valid above the capsule.
        tissue: ``(L, S)`` uint8 labels above the capsule (wall or rib).
        cap_base_mm: ``(L,)`` capsule depth along each line before nodularity.
        cap_amp: ``(L,)`` capsule line amplitude.
        obstacle_db: ``(L, S)`` round-trip attenuation caused by ribs (for the clutter).
    """

    def __init__(self, case, grid: BeamGrid):
        wall = case.wall
        L, S = grid.n_lines, grid.n_samples
        d = grid.depth_mm[None, :].astype(np.float32)
        rng = stream_rng(case.seed, "wall-maps")
        corr_lines = max(2.0, 12.0 / (grid.probe.radius_mm * grid.dtheta_rad) / 3.0)
        wob = [_smooth1d(rng, L, corr_lines * 3) for _ in range(4)]
        mod = [np.clip(0.9 + 0.6 * _smooth1d(rng, L, corr_lines), 0.0, 1.8) for _ in range(4)]
        tw = rng.standard_normal((L, S)).astype(np.float32)
        sig_l = max(1.0, 4.0 / (grid.probe.radius_mm * grid.dtheta_rad) / 2.0)
        sig_s = max(0.5, 0.35 / grid.dd_mm)
        tw = cv2.GaussianBlur(tw, (0, 0), sigmaX=sig_s, sigmaY=sig_l)
        tw /= tw.std() + 1e-6
        self.cap_amp = (1.6 * np.clip(0.9 + 0.25 * _smooth1d(rng, L, corr_lines), 0.3, 1.6)
                        ).astype(np.float32)
        b = np.zeros((L, S), np.float32)
        al = np.full((L, S), 0.7, np.float32)
        coh = np.zeros((L, S), np.float32)
        tis = np.full((L, S), T["wall"], np.uint8)
        if wall.present:
            b0 = np.full(L, wall.skin_mm, np.float32)
            b1 = b0 + wall.fat_mm + 1.5 * wob[0]
            b2 = b1 + wall.fascia_mm
            b3 = b2 + wall.muscle_mm + 1.0 * wob[1]
            b4 = b3 + wall.preperitoneal_mm
            self.cap_base_mm = (b4 + 0.5 * wob[2]).astype(np.float32)
            fat = (d >= b0[:, None]) & (d < b1[:, None])
            fascia = (d >= b1[:, None]) & (d < b2[:, None])
            muscle = (d >= b2[:, None]) & (d < b3[:, None])
            prep = (d >= b3[:, None]) & (d < b4[:, None])
            b[fat] = (-13.0 + 11.0 * _smoothstep(0.9, 2.0, tw))[fat]
            b[fascia] = 3.0
            b[muscle] = (-5.0 + 4.0 * tw)[muscle]
            b[prep] = -3.0
            al[fat] = 0.65
            al[muscle] = 1.0
            coh += 1.1 * smooth_band(d, 0.3, 0.25)
            for bound, m, a in ((b1, mod[0], 0.55), (b2, mod[1], 0.45), (b3, mod[2], 0.6)):
                coh += a * m[:, None] * smooth_band(d - bound[:, None], 0.0, 0.3)
        else:
            self.cap_base_mm = np.zeros(L, np.float32)
        self.obstacle_db = np.zeros((L, S), np.float32)
        for rib in case.anatomy.ribs:
            du = grid.u_mm - rib.u_mm
            dv = grid.v_mm - rib.v_mm
            dist = np.sqrt(du * du + dv * dv)
            inside = dist < rib.radius_mm
            # Bright anterior arc: the bone surface facing the probe, strongest where the
            # surface is normal to the beam (specular).
            front = (dv < 0) & (np.abs(dist - rib.radius_mm) < 1.2)
            facing = np.clip(-(du * np.sin(grid.theta_rad)[:, None]
                               + (dv + 0.0) * np.cos(grid.theta_rad)[:, None]) / (dist + 1e-6),
                             0.0, 1.0)
            coh[front] += (6.0 * facing[front] ** 3 * smooth_band(dist[front], rib.radius_mm, 0.4))
            al[inside] = 60.0
            b[inside] = 6.0
            tis[inside] = T["rib"]
        if case.anatomy.ribs:
            ratt = np.where(tis == T["rib"], al, 0.0)
            self.obstacle_db = (2.0 * grid.probe.freq_mhz * grid.dd_mm / 10.0
                                * np.cumsum(ratt, axis=1)).astype(np.float32)
        self.b_db, self.alpha, self.coh, self.tissue = b, al, coh, tis


class NodularityMap:
    """Capsule nodularity (F2-F4): a 2-D bump field over liver-frame (X, Y), in mm."""

    def __init__(self, case):
        self.amp = case.liver.nodularity_mm
        self.x0, self.y0, self.step = -250.0, -150.0, 0.5
        if self.amp <= 0:
            self.table = None
            return
        rng = stream_rng(case.seed, "nodularity")
        nx, ny = int(500 / self.step), int(300 / self.step)
        field = np.zeros((ny, nx), np.float32)
        wmax = 4.0 if case.liver.fibrosis_stage >= 4 else 6.0
        n = int(nx * ny * self.step ** 2 / 30.0)
        xs = rng.integers(0, nx, n)
        ys = rng.integers(0, ny, n)
        field[ys, xs] = rng.standard_normal(n).astype(np.float32)
        sig = rng.uniform(1.5, wmax) / self.step
        field = cv2.GaussianBlur(field, (0, 0), sig)
        field /= field.std() + 1e-6
        self.table = field

    def at(self, x_mm: np.ndarray, y_mm: float) -> np.ndarray:
        """Capsule displacement (mm, positive = deeper) at liver-frame X for plane Y."""
        if self.table is None:
            return np.zeros_like(x_mm, np.float32)
        gx = ((x_mm - self.x0) / self.step).astype(np.float32).reshape(1, -1)
        gy = np.full_like(gx, (y_mm - self.y0) / self.step)
        v = cv2.remap(self.table, gx, gy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return (self.amp * np.abs(v[0])).astype(np.float32)


def _draw_diaphragm(case, ctx: FrameContext, maps: SceneMaps, liver: np.ndarray) -> None:
    dia = case.anatomy.diaphragm
    grid = ctx.grid
    r0 = grid.probe.radius_mm
    ax = ctx.xp_mm + r0 * math.sin(ctx.phi_rad)
    az = ctx.zp_mm - r0 * math.cos(ctx.phi_rad)
    ex, ez = ax - dia.cx_mm, az - dia.cz_mm
    q = ctx.bx * ex + ctx.bz * ez
    disc = q * q - (ex * ex + ez * ez - dia.radius_mm ** 2)
    ok = disc > 0
    t_exit = np.where(ok, -q + np.sqrt(np.maximum(disc, 0)), np.inf)
    d_c = (t_exit - r0).astype(np.float32)
    if not np.isfinite(d_c).any() or np.nanmin(d_c) > grid.depth_mm[-1]:
        return
    nb = np.where(ok, np.sqrt(np.maximum(disc, 0)) / dia.radius_mm, 1.0).astype(np.float32)
    th_ray = dia.thickness_mm / np.maximum(nb, 0.25)
    px = ax + t_exit * ctx.bx
    pz = az + t_exit * ctx.bz
    psi = np.arctan2(np.where(ok, px - dia.cx_mm, 0), np.where(ok, pz - dia.cz_mm, 1))
    amp = (2.2 * (0.3 + 0.7 * nb ** 2)
           * (0.55 + 0.45 * np.sin(dia.ripple_k * psi * 6.0 + dia.ripple_phase))).astype(np.float32)
    s0 = int(max(0, math.floor(np.min(d_c[np.isfinite(d_c)]) / grid.dd_mm) - 4))
    d = grid.depth_mm[None, s0:].astype(np.float32)
    rel = d - d_c[:, None]
    lv = liver[:, s0:]
    band = (rel >= 0) & (rel < th_ray[:, None]) & lv
    beyond = (rel >= th_ray[:, None]) & lv
    b = maps.b_db[:, s0:]
    b[band] = 12.0
    b[beyond] -= 5.0
    maps.alpha[:, s0:][band] = 1.0
    maps.tissue[:, s0:][band] = T["diaphragm"]
    maps.tissue[:, s0:][beyond] = T["lung_mirror"]
    finite = np.isfinite(d_c)
    prof = np.exp(-0.5 * (np.where(finite[:, None], rel, 99.0) / 0.35) ** 2)
    maps.coh[:, s0:] += (amp[:, None] * prof * lv).astype(np.float32)


def _draw_vessel(v, ctx: FrameContext, maps: SceneMaps) -> None:
    p0 = np.array(v.p0)
    p1 = np.array(v.p1)
    dvec = p1 - p0
    r = v.radius_mm
    y = ctx.y_mm
    if abs(dvec[1]) < 1e-6:
        if abs(p0[1] - y) > r:
            return
        t0, t1 = 0.0, 1.0
    else:
        ta, tb = (y - r - p0[1]) / dvec[1], (y + r - p0[1]) / dvec[1]
        t0, t1 = max(0.0, min(ta, tb)), min(1.0, max(ta, tb))
        if t0 > t1:
            return
    pa, pb = p0 + t0 * dvec, p0 + t1 * dvec
    m = r + 1.5
    win = ctx.window_xz(min(pa[0], pb[0]) - m, max(pa[0], pb[0]) + m,
                        min(pa[2], pb[2]) - m, max(pa[2], pb[2]) + m)
    if win is None:
        return
    l0, l1, s0, s1 = win
    qx = ctx.x_mm[l0:l1, s0:s1] - np.float32(p0[0])
    qz = ctx.z_mm[l0:l1, s0:s1] - np.float32(p0[2])
    qy = np.float32(y - p0[1])
    dd = float(dvec @ dvec)
    t = np.clip((qx * dvec[0] + qy * dvec[1] + qz * dvec[2]) / dd, 0.0, 1.0).astype(np.float32)
    rx = qx - t * np.float32(dvec[0])
    ry = qy - t * np.float32(dvec[1])
    rz = qz - t * np.float32(dvec[2])
    dist = np.sqrt(rx * rx + ry * ry + rz * rz)
    liver = maps.tissue[l0:l1, s0:s1] == T["liver"]
    lumen = (dist < r) & liver
    ring = (dist >= r - 0.3) & (dist < r + 1.2) & liver
    rin = np.sqrt(rx * rx + rz * rz) + np.float32(1e-6)
    nb = np.abs(rx * ctx.bx[l0:l1, None] + rz * ctx.bz[l0:l1, None]) / rin
    prof = smooth_band(dist, r + 0.3, 0.4)
    if v.portal:
        maps.coh[l0:l1, s0:s1] += np.where(ring, (0.9 + 1.1 * nb * nb) * prof, 0.0).astype(
            np.float32)
        maps.alpha[l0:l1, s0:s1][ring] += 1.5
    else:
        maps.coh[l0:l1, s0:s1] += np.where(ring, 1.2 * nb ** 6 * prof, 0.0).astype(np.float32)
    maps.b_db[l0:l1, s0:s1][lumen] = -38.0
    maps.alpha[l0:l1, s0:s1][lumen] = 0.18
    maps.tissue[l0:l1, s0:s1][lumen] = T["portal_vein"] if v.portal else T["hepatic_vein"]


def _draw_gallbladder(gb, ctx: FrameContext, maps: SceneMaps) -> None:
    cut = ellipsoid_cut(ctx, gb.center, gb.axes, gb.angle_rad)
    if cut is None:
        return
    l0, l1, s0, s1 = cut.win
    liver = maps.tissue[l0:l1, s0:s1] == T["liver"]
    inside = (cut.reff < 1.0) & liver
    w_rel = 0.6 / max(cut.radius_mm, 0.5)
    shell = (np.abs(cut.reff - 1.0) < 3 * w_rel) & liver
    maps.coh[l0:l1, s0:s1][shell] += 1.4 * smooth_band(cut.reff[shell], 1.0, w_rel)
    maps.b_db[l0:l1, s0:s1][inside] = -45.0
    maps.alpha[l0:l1, s0:s1][inside] = 0.02
    maps.tissue[l0:l1, s0:s1][inside] = T["gallbladder"]


def _draw_kidney(kid, ctx: FrameContext, maps: SceneMaps) -> None:
    """Cortex -4 dB (re. normal liver, whatever the steatosis), darker medullary pyramids,
    bright central sinus fat, specular capsule."""
    cut = ellipsoid_cut(ctx, kid.center, kid.axes, kid.angle_rad)
    if cut is None:
        return
    l0, l1, s0, s1 = cut.win
    liver = maps.tissue[l0:l1, s0:s1] == T["liver"]
    inside = (cut.reff < 1.0) & liver
    if not inside.any():
        return
    rho = cut.rho[inside]
    level = np.full(rho.shape, -4.0, np.float32)
    ring = (rho > 0.5) & (rho < 0.72)
    psi = np.arctan2(cut.zn[inside][ring], cut.xn[inside][ring])
    level[np.flatnonzero(ring)[np.cos(7.0 * psi) > 0.1]] = -13.0  # medullary pyramids
    level[rho <= 0.5] = 7.0  # sinus fat
    base = ctx.liver_b_db[l0:l1, s0:s1][inside] - np.float32(ctx.liver_backscatter_db)
    maps.b_db[l0:l1, s0:s1][inside] = level + 0.5 * base
    maps.alpha[l0:l1, s0:s1][inside] = 0.9
    maps.tissue[l0:l1, s0:s1][inside] = T["kidney"]
    w_rel = 0.5 / max(cut.radius_mm, 0.5)
    shell = (np.abs(cut.reff - 1.0) < 3 * w_rel) & liver
    maps.coh[l0:l1, s0:s1][shell] += (0.9 * (0.3 + 0.7 * cut.nb[shell] ** 2)
                                      * smooth_band(cut.reff[shell], 1.0, w_rel))


def _draw_nodule(nod, ctx: FrameContext, maps: SceneMaps) -> None:
    r = nod.radius_mm
    cut = ellipsoid_cut(ctx, nod.center, (r, r, r), 0.0)
    if cut is None:
        return
    l0, l1, s0, s1 = cut.win
    liver = maps.tissue[l0:l1, s0:s1] == T["liver"]
    inside = (cut.reff < 1.0) & liver
    rim = inside & (cut.reff > 0.85)
    base = ctx.liver_b_db[l0:l1, s0:s1]
    maps.b_db[l0:l1, s0:s1][inside] = (base + nod.level_db)[inside]
    maps.b_db[l0:l1, s0:s1][rim] = (base + 3.0)[rim]
    maps.tissue[l0:l1, s0:s1][inside] = T["regenerative_nodule"]


def build_scene(case, ctx: FrameContext, wall: StaticWall, cap_mm: np.ndarray,
                specks: np.ndarray) -> tuple[SceneMaps, list[int]]:
    """Compose the frame's beam maps.

    Args:
        case: the case.
        ctx: frame geometry, with ``liver_b_db`` already holding the textured liver level.
        wall: static wall maps.
        cap_mm: ``(L,)`` capsule depth of each line for this frame.
        specks: ``(L, S)`` unit-variance fine field for portal-tract specks.

    Returns:
        ``(maps, drawn_lesion_ids)``.
    """
    grid = ctx.grid
    d = grid.depth_mm[None, :].astype(np.float32)
    liver = d > cap_mm[:, None]
    b = np.where(liver, ctx.liver_b_db, wall.b_db)
    al = np.where(liver, np.float32(ctx.liver_alpha), wall.alpha)
    tis = np.where(liver, np.uint8(T["liver"]), wall.tissue)
    coh = wall.coh.copy()
    if case.wall.present:
        s_hi = int(min(grid.n_samples, math.ceil((cap_mm.max() + 2.0) / grid.dd_mm)))
        s_lo = int(max(0, math.floor((cap_mm.min() - 2.0) / grid.dd_mm)))
        coh[:, s_lo:s_hi] += wall.cap_amp[:, None] * smooth_band(
            d[:, s_lo:s_hi] - cap_mm[:, None], 0.0, 0.35)
    if case.liver.portal_specks:
        sp = np.clip((specks - 2.3), 0.0, 1.0)
        coh += np.float32(0.9) * sp * sp * (3 - 2 * sp) * liver
    maps = SceneMaps(b_db=b.astype(np.float32, copy=False), alpha=al.astype(np.float32, copy=False),
                     coh=coh, tissue=tis.astype(np.uint8, copy=False),
                     ids=np.zeros(tis.shape, np.uint8), world=liver)
    an = case.anatomy
    if an.diaphragm is not None:
        _draw_diaphragm(case, ctx, maps, liver)
    for v in an.vessels:
        _draw_vessel(v, ctx, maps)
    for nod in an.nodules:
        _draw_nodule(nod, ctx, maps)
    if an.gallbladder is not None:
        _draw_gallbladder(an.gallbladder, ctx, maps)
    if an.kidney is not None:
        _draw_kidney(an.kidney, ctx, maps)
    drawn = [les.lesion_id for les in case.lesions if draw_lesion(les, ctx, maps)]
    return maps, drawn
