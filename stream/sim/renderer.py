"""Image formation: scene -> echo field -> PSF -> envelope -> TGC -> log -> scan conversion.

Per frame, in beam space (SIMULATOR.md section 4.4):

1. round-trip attenuation ``A(d) = 2 f0 sum(alpha) dd`` accumulated along each line (posterior
   enhancement, attenuation and shadows all come from it);
2. field ``F = S 10^(B/20) att + C att + clutter + electronic noise`` (complex, 2 channels);
3. separable complex PSF (axial Gaussian; lateral Gaussian in angle, wider away from the
   transmit focus), kernels of unit energy so white-noise variance is preserved;
4. envelope ``|h * F|`` (exposed as ``BeamFrame.envelope`` for physics tests);
5. TGC, gain and log compression to the dynamic range; grey map;
6. bilinear scan conversion, mild smoothing, persistence; labels by nearest neighbour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from sonoflow.stream.sim import config
from sonoflow.stream.sim.events import FrameEvents
from sonoflow.stream.sim.fields import SpeckleField, TextureField, WorldBox
from sonoflow.stream.sim.geometry import BeamGrid, ScanConverter
from sonoflow.stream.sim.motion import Pose
from sonoflow.stream.sim.primitives import FrameContext
from sonoflow.stream.sim.scene import NodularityMap, StaticWall, build_scene
from sonoflow.stream.sim.seeding import stream_rng

_LN10_20 = math.log(10.0) / 20.0
#: Largest depth gain the TGC applies (dB).
TGC_MAX_DB = 75.0


@dataclass
class BeamFrame:
    """Beam-space internals of one rendered frame (for tests and diagnostics).

    Attributes:
        envelope: ``(L, S)`` float32 envelope after the PSF, before TGC and log compression.
        tissue, ids: ``(L, S)`` uint8 labels in beam space.
        depth_mm: ``(S,)`` sample depths; theta_rad: ``(L,)`` line angles.
        log_db: ``(L, S)`` float32 log-compressed level incl. TGC and gain (dB).
    """

    envelope: np.ndarray
    tissue: np.ndarray
    ids: np.ndarray
    depth_mm: np.ndarray
    theta_rad: np.ndarray
    log_db: np.ndarray


@dataclass
class Rendered:
    """Output of :meth:`Renderer.render`.

    Attributes:
        grey: ``(H, W)`` float32 grey level in [0, 1] (before persistence and quantisation).
        tissue, ids: ``(H, W)`` uint8 label maps.
        lesions_drawn: ids of lesions cut by the plane.
        beam: beam-space internals when requested, else None.
    """

    grey: np.ndarray
    tissue: np.ndarray
    ids: np.ndarray
    lesions_drawn: list[int]
    beam: BeamFrame | None


def _gauss_kernel(fwhm_cells: float) -> np.ndarray:
    sigma = max(fwhm_cells / 2.3548, 0.35)
    half = int(math.ceil(3.0 * sigma))
    x = np.arange(-half, half + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= math.sqrt((k * k).sum())  # unit energy: white-noise variance preserved
    return k.astype(np.float32)


class Renderer:
    """Renders frames of one case at one output size.

    Args:
        case: the case.
        height, width: output size in pixels.
    """

    def __init__(self, case, height: int, width: int):
        self.case = case
        p = case.probe
        size = config.beam_grid_for(height, width)
        self.grid = grid = BeamGrid(p, size.n_lines, size.n_samples)
        self.scan = ScanConverter.build(grid, height, width)
        m = case.motion
        half_w = (p.radius_mm + p.depth_mm) * math.sin(p.half_angle_rad)
        # Margins cover breathing (<= 16 mm), tremor and motion-blur jerks (<= 25 mm).
        box = WorldBox(x_min=m.x0_mm - half_w - 40.0, x_max=m.x0_mm + half_w + 40.0,
                       z_min=-p.radius_mm * (1 - math.cos(p.half_angle_rad)) - 20.0,
                       z_max=p.depth_mm + 20.0)
        self.speckle = SpeckleField(case.seed, box, grid.dd_mm)
        self.texture = TextureField(case.seed, box, case.liver.texture_corr_mm)
        self.ox, self.norm = self.speckle.footprint(grid, m.phi0_rad)
        self.wall = StaticWall(case, grid)
        self.nodularity = NodularityMap(case)
        L, S = grid.n_lines, grid.n_samples
        rng = stream_rng(case.seed, "static-noise")
        self.wall_noise = ((rng.random((L, S, 2), dtype=np.float32) - np.float32(0.5))
                           * np.float32(math.sqrt(12.0)))
        clutter_noise = ((rng.random((L, S, 2), dtype=np.float32) - np.float32(0.5))
                         * np.float32(math.sqrt(12.0)))
        # Electronic noise: a bank of white fields; each frame takes one, rolled and
        # sign-flipped by its own seeded draw (fresh-looking noise without 2e5 draws a frame).
        self.noise_bank = [((rng.random((L, S, 2), dtype=np.float32) - np.float32(0.5))
                            * np.float32(math.sqrt(12.0))) for _ in range(4)]
        d = grid.depth_mm
        d_cm = d / 10.0
        im = case.imaging
        # Clutter: haze decaying with depth + reverberation ghosts of the fascia, attenuated.
        if im.clutter:
            fascia = case.wall.skin_mm + case.wall.fat_mm
            haze = 10 ** ((im.haze_db + 0.25 * (case.wall.fat_mm - 15.0)) / 20) \
                * np.exp(-d / im.haze_decay_mm)
            rev = 0.25 * np.exp(-0.5 * ((d - 2 * fascia) / 0.8) ** 2) \
                + 0.10 * np.exp(-0.5 * ((d - 3 * fascia) / 0.8) ** 2)
            clut = (haze + rev) * 10 ** (-2 * p.freq_mhz * 0.65 * d_cm / 20)
        else:
            clut = np.zeros_like(d)
        self.clutter_profile = clut.astype(np.float32)
        # Clutter is probe-locked: one static field (ribs block it behind them).
        self.clutter = clutter_noise * self.clutter_profile[None, :, None]
        if case.anatomy.ribs:
            self.clutter *= np.exp(-self.wall.obstacle_db * _LN10_20).astype(np.float32)[..., None]
        # TGC: 0.5 dB/cm/MHz plus a fraction kappa of this liver's excess (a sonographer
        # partly compensates a fatty liver, so posterior attenuation stays visible).
        a_tgc = 0.5 + im.tgc_kappa * (case.liver.attenuation_db_cm_mhz - 0.5)
        t = d / max(d[-1], 1.0)
        user = sum(c * np.cos(math.pi * (k + 1) * t) for k, c in enumerate(im.tgc_user_db))
        # The TGC range of a scanner is finite: deep, high-frequency or fatty imaging runs out
        # of gain and the electronic noise floor shows (lost penetration).
        tgc = np.minimum(2.0 * p.freq_mhz * a_tgc * d_cm, TGC_MAX_DB) + user if im.tgc \
            else np.zeros_like(d)
        self.tgc_db = tgc.astype(np.float32)
        # PSF: axial Gaussian; lateral Gaussian in angle, wider away from the focus.
        self.k_ax = _gauss_kernel(p.axial_fwhm_mm / grid.dd_mm)
        lat_cells = math.radians(p.lateral_fwhm_deg) / grid.dtheta_rad
        self.k_lat_n = _gauss_kernel(lat_cells)
        self.k_lat_w = _gauss_kernel(lat_cells * 1.5)
        self.w_focus = np.clip(np.abs(d - p.focus_mm) / p.focus_mm, 0.0, 1.0).astype(np.float32)
        self.noise_amp = None if im.noise_db is None else 10 ** (im.noise_db / 20.0)
        self.ringdown = sum(0.8 ** k * np.exp(-0.5 * ((d - 1.6 * k) / 0.3) ** 2)
                            for k in range(1, 12)).astype(np.float32)
        self._att_k = np.float32(2.0 * p.freq_mhz * grid.dd_mm / 10.0 * _LN10_20)

    def context(self, pose: Pose) -> FrameContext:
        """Liver-frame coordinates of every beam cell for ``pose`` (``liver_b_db`` unset)."""
        g = self.grid
        c, s = np.float32(math.cos(pose.phi_rad)), np.float32(math.sin(pose.phi_rad))
        x = np.float32(pose.xp_mm) + g.u_mm * c - g.v_mm * s
        z = np.float32(pose.zp_mm) + g.u_mm * s + g.v_mm * c
        beta = g.theta_rad - pose.phi_rad
        return FrameContext(grid=g, x_mm=x, z_mm=z, y_mm=pose.yp_mm, xp_mm=pose.xp_mm,
                            zp_mm=pose.zp_mm, phi_rad=pose.phi_rad,
                            bx=np.sin(beta).astype(np.float32), bz=np.cos(beta).astype(np.float32),
                            liver_b_db=None, liver_alpha=self.case.liver.attenuation_db_cm_mhz,
                            liver_backscatter_db=self.case.liver.backscatter_db)

    def render(self, pose: Pose, frame_index: int, ev: FrameEvents,
               keep_beam: bool = False) -> Rendered:
        """Render one frame.

        Args:
            pose: liver-frame pose of the plane.
            frame_index: used to seed this frame's electronic noise.
            ev: the frame's events (contact loss, gain, blur).
            keep_beam: also return beam-space internals.

        Returns:
            The rendered frame (grey before persistence).
        """
        case, g = self.case, self.grid
        L, S = g.n_lines, g.n_samples
        ctx = self.context(pose)
        # Textures are smooth over >= 2 lines: sample every other line, interpolate between.
        half = self.texture.sample(ctx.x_mm[::2], ctx.z_mm[::2], pose.yp_mm)
        fields = cv2.resize(half, (S, L), interpolation=cv2.INTER_LINEAR)
        liv = case.liver
        ctx.liver_b_db = np.float32(liv.backscatter_db) + np.float32(liv.texture_db) * fields[..., 0]
        if liv.coarse_db > 0:
            ctx.liver_b_db += np.float32(liv.coarse_db) * fields[..., 2]
        specks = fields[..., 1]
        # Capsule depth along each line: wall base + nodularity of the liver surface.
        cap = self.wall.cap_base_mm
        if self.nodularity.table is not None:
            si = np.clip((cap / g.dd_mm).astype(np.int64), 0, S - 1)
            xcap = ctx.x_mm[np.arange(L), si]
            cap = cap + self.nodularity.at(xcap, pose.yp_mm)
        maps, drawn = build_scene(case, ctx, self.wall, cap, specks)
        alpha = maps.alpha
        coh = maps.coh
        lost = None
        if ev.lost_fraction > 0:
            n_lost = int(round(ev.lost_fraction * L))
            lost = np.zeros(L, bool)
            if ev.lost_side < 0:
                lost[:n_lost] = True
            else:
                lost[L - n_lost:] = True
            far = g.depth_mm > 1.0
            alpha[np.ix_(lost, far)] = 80.0
            coh[lost] += 1.4 * self.ringdown
        # 1. accumulated round-trip attenuation (mid-cell).
        cum = np.cumsum(alpha, axis=1, dtype=np.float32)
        cum -= np.float32(0.5) * alpha
        att = cv2.exp(cum * -self._att_k)
        # 2. the echo field.
        amp = cv2.exp(maps.b_db * np.float32(_LN10_20))
        amp *= att
        s_lo = int(max(0, math.floor(float(cap.min()) / g.dd_mm) - 1))
        field = self.wall_noise.copy()
        world = self.speckle.sample(ctx.x_mm[:, s_lo:], ctx.z_mm[:, s_lo:], pose.yp_mm,
                                    self.ox[:, :, s_lo:], self.norm[:, s_lo:])
        sub = field[:, s_lo:]
        np.copyto(sub, world, where=maps.world[:, s_lo:, None])
        field *= amp[..., None]
        field[..., 0] += coh * att
        if case.imaging.clutter:
            if lost is not None:
                field[~lost] += self.clutter[~lost]
            else:
                field += self.clutter
        if self.noise_amp is not None:
            rng = stream_rng(case.seed, "frame-noise", frame_index)
            k, shift, sign = int(rng.integers(4)), int(rng.integers(L)), rng.random() < 0.5
            n = np.roll(self.noise_bank[k], shift, axis=0)
            field += n * np.float32(self.noise_amp * (-1.0 if sign else 1.0))
        # 3. PSF (complex, separable); lateral width blends towards the wide kernel off-focus.
        fa = cv2.sepFilter2D(field, -1, self.k_ax, np.ones(1, np.float32),
                             borderType=cv2.BORDER_REFLECT)
        fn = cv2.sepFilter2D(fa, -1, np.ones(1, np.float32), self.k_lat_n,
                             borderType=cv2.BORDER_REFLECT)
        fw = cv2.sepFilter2D(fa, -1, np.ones(1, np.float32), self.k_lat_w,
                             borderType=cv2.BORDER_REFLECT)
        wf = self.w_focus[None, :, None]
        fn += (fw - fn) * wf
        # 4. envelope.
        env = cv2.magnitude(fn[..., 0], fn[..., 1])
        # 5. TGC, gain, log compression, grey map.
        p = case.probe
        gain = case.imaging.gain_db + ev.gain_offset_db
        env += np.float32(1e-12)
        log_db = cv2.log(env)
        log_db *= np.float32(20.0 / math.log(10.0))
        log_db += self.tgc_db[None, :] + np.float32(gain)
        grey = (log_db + np.float32(31.0)) * np.float32(1.0 / p.dynamic_range_db)
        np.clip(grey, 0.0, 1.0, out=grey)
        grey = cv2.pow(grey, p.grey_gamma)
        if ev.blur_lines > 0:
            grey = cv2.blur(grey, (1, ev.blur_lines), borderType=cv2.BORDER_REPLICATE)
        # 6. scan conversion.
        img = self.scan.image(grey)
        img = cv2.GaussianBlur(img, (0, 0), 0.6)
        if lost is not None:
            maps.ids[lost] = 0  # nothing is imaged through lost contact
        tissue, ids = self.scan.labels2(maps.tissue, maps.ids)
        beam = None
        if keep_beam:
            beam = BeamFrame(envelope=env, tissue=maps.tissue, ids=maps.ids,
                             depth_mm=g.depth_mm.copy(), theta_rad=g.theta_rad.copy(),
                             log_db=log_db)
        return Rendered(grey=img, tissue=tissue, ids=ids, lesions_drawn=drawn, beam=beam)
