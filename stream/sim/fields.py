"""World-locked random fields: complex speckle (via summed-area tables) and tissue textures.

The speckle source is i.i.d. complex white noise on a fine world grid (half the axial sample
spacing, ~0.18 mm) in each elevation layer (2.5 mm apart). Each beam cell integrates the noise
over its footprint, an axis-aligned box of the cell's area, read from a summed-area table (SAT)
with a bilinear ``cv2.remap`` of the box corners. Bilinear interpolation of a SAT is the exact
integral of the piecewise-constant noise, and equal map coordinates quantize equally in
OpenCV's fixed-point remap, so each box sum is the exact integral over a box whose edges lie on
a 1/32-cell lattice.
Sub-cell motion therefore moves the speckle with the tissue instead of making it flicker.
Elevational motion blends neighbouring layers with ``cos``/``sin`` weights (variance preserved).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from sonoflow.stream.sim.seeding import stream_rng

#: Elevational layer spacing of the speckle (mm).
SPECKLE_LAYER_MM = 2.5
#: Texture grid spacing and layer spacing (mm).
TEXTURE_GRID_MM = 0.4
TEXTURE_LAYER_MM = 4.0


@dataclass(frozen=True)
class WorldBox:
    """Liver-frame extent (mm) covered by the world fields of one clip."""

    x_min: float
    x_max: float
    z_min: float
    z_max: float


class _LayerCache:
    """A small LRU cache of generated layers (no global state: one per renderer)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[int, np.ndarray] = OrderedDict()
        self._spare: list[np.ndarray] = []

    def recycled(self) -> np.ndarray | None:
        """An evicted layer's array to overwrite, if there is one."""
        return self._spare.pop() if self._spare else None

    def get(self, key: int, make) -> np.ndarray:
        """The cached layer ``key``, made with ``make(key)`` when missing."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make(key)
        self._items[key] = value
        if len(self._items) > self.capacity:
            self._spare.append(self._items.popitem(last=False)[1])
        return value


class SpeckleField:
    """World-locked complex speckle of one clip.

    The noise grid spacing is half the beam's axial sample spacing, so every beam cell
    integrates a box exactly two grid rows tall (the cell's axial extent) and ``rdtheta`` wide.
    A per-layer *strip table* ``D(x, z) = T(x, z + 2) - T(x, z)`` of the summed-area table
    ``T`` turns each box sum into two lookups, ``D(x2, z1) - D(x1, z1)``. ``D`` is exactly
    bilinear (both terms share their fractional offsets), so one bilinear remap of the two
    corners gives the exact integral over the (1/32-cell snapped) box.

    Args:
        seed: clip seed (layers are keyed by ``(seed, layer)``).
        box: liver-frame extent to cover.
        dd_mm: axial sample spacing of the beam grid.
    """

    def __init__(self, seed: int, box: WorldBox, dd_mm: float):
        self.seed = seed
        self.box = box
        self.grid_mm = g = dd_mm / 2.0
        self.nx = int(math.ceil((box.x_max - box.x_min) / g)) + 1
        self.nz = int(math.ceil((box.z_max - box.z_min) / g)) + 1
        self._strips = _LayerCache(3)
        self._sum: np.ndarray | None = None
        self._diff: np.ndarray | None = None
        self._ramp: np.ndarray | None = None

    def _strip(self, k: int) -> np.ndarray:
        """Strip table of layer ``k``: ``D[j, x] = sum_{x' < x} (W[j, x'] + W[j + 1, x'])``.

        The noise is random bytes ``a`` mapped to the odd integers ``2a - 255`` (zero mean,
        variance 21845; as good as continuous once summed over a box and the PSF). The sums
        are exact integer arithmetic (``cv2.integral`` in int32, then row differences); the
        ``-255`` offset becomes a ramp along x. Large buffers are reused between layers (fresh
        20 MB arrays cost as much in page faults as the arithmetic).
        """
        rng = stream_rng(self.seed, "speckle-layer", k)
        raw = np.frombuffer(rng.bytes(self.nz * self.nx * 2), dtype=np.uint8)
        if self._sum is None:
            self._sum = np.empty((self.nz + 1, self.nx + 1, 2), np.int32)
            self._diff = np.empty((self.nz - 1, self.nx + 1, 2), np.int32)
            x = np.arange(self.nx + 1, dtype=np.float32)[None, :, None]
            self._ramp = np.ascontiguousarray(np.broadcast_to(
                x * np.float32(-510.0 / math.sqrt(21845.0)), self._diff.shape))
        cv2.integral(raw.reshape(self.nz, self.nx, 2), sum=self._sum, sdepth=cv2.CV_32S)
        cv2.subtract(self._sum[2:], self._sum[:-2], dst=self._diff)
        out = self._strips.recycled()
        if out is None:
            out = np.empty(self._diff.shape, np.float32)
        np.multiply(self._diff, np.float32(2.0 / math.sqrt(21845.0)), out=out,
                    casting="unsafe")
        out += self._ramp
        return out

    def footprint(self, grid, phi_rad: float) -> tuple[np.ndarray, np.ndarray]:
        """Corner offsets (grid cells) and normalisation of each beam cell.

        Args:
            grid: the :class:`~sonoflow.stream.sim.geometry.BeamGrid`.
            phi_rad: in-plane probe rotation (unused: the box is ``rdtheta x dd`` in the
                liver frame whatever the beam angle, which keeps the cell's area).

        Returns:
            ``(ox, norm)``: lateral corner offsets ``(n_lines, 2, n_samples)`` (``-hx, +hx``,
            blocked per line so the corner arithmetic runs on contiguous rows) and the
            ``(n_lines, n_samples)`` normalisation ``1 / sqrt((a_x - 1/3)(2 - 1/3))``, where
            ``1/3`` is the expected variance lost at partially covered edge cells.
        """
        r = grid.probe.radius_mm + grid.depth_mm[None, :]
        a_x = np.broadcast_to(r * grid.dtheta_rad / self.grid_mm,
                              (grid.n_lines, grid.n_samples))
        ox = np.stack([-a_x / 2, a_x / 2], axis=1).astype(np.float32)
        norm = 1.0 / np.sqrt(np.maximum(a_x - 1.0 / 3.0, 0.3) * (2.0 - 1.0 / 3.0))
        return ox, norm.astype(np.float32)

    def sample(self, x_mm: np.ndarray, z_mm: np.ndarray, y_mm: float, ox: np.ndarray,
               norm: np.ndarray) -> np.ndarray:
        """Complex speckle at the beam cells.

        Args:
            x_mm, z_mm: ``(L, S)`` float32 liver-frame cell centres.
            y_mm: elevational position of the imaging plane.
            ox, norm: from :meth:`footprint`, for the same cells.

        Returns:
            ``(L, S, 2)`` float32 (real, imaginary), unit variance per component.
        """
        inv_g = np.float32(1.0 / self.grid_mm)
        t = y_mm / SPECKLE_LAYER_MM
        k = int(math.floor(t))
        frac = t - k
        gx = (x_mm - np.float32(self.box.x_min)) * inv_g
        # Strip row j covers grid rows j..j+2, so the box centred on gz starts at gz - 1.
        gz = (z_mm - np.float32(self.box.z_min)) * inv_g - np.float32(1.0)
        L, S = gx.shape
        mx = (gx[:, None, :] + ox).reshape(L, 2 * S)
        my = np.broadcast_to(gz[:, None, :], (L, 2, S)).reshape(L, 2 * S)
        # Fixed-point maps once for both layers (equal coordinates quantize equally).
        m1, m2 = cv2.convertMaps(mx, my, cv2.CV_16SC2)
        weights = (math.cos(0.5 * math.pi * frac), math.sin(0.5 * math.pi * frac))
        res = None
        for layer, wgt in zip((k, k + 1), weights, strict=True):
            out = cv2.remap(self._strips.get(layer, self._strip), m1, m2, cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE).reshape(L, 2, S, 2)
            s = out[:, 1] - out[:, 0]
            s *= np.float32(wgt)
            res = s if res is None else cv2.add(res, s)
        res *= norm[..., None]
        return res


class TextureField:
    """World-locked smooth Gaussian textures: liver texture and portal-tract specks.

    Channels: ``0`` liver texture (correlation ``corr_mm``), ``1`` fine speck field (0.6 mm),
    ``2`` coarse heterogeneity (6 mm). All unit variance, blended across elevation layers 4 mm
    apart.

    Args:
        seed: clip seed.
        box: liver-frame extent.
        corr_mm: correlation length of the liver texture.
    """

    def __init__(self, seed: int, box: WorldBox, corr_mm: float):
        self.seed = seed
        self.box = box
        self.corr_mm = corr_mm
        g = TEXTURE_GRID_MM
        self.nx = int(math.ceil((box.x_max - box.x_min) / g)) + 1
        self.nz = int(math.ceil((box.z_max - box.z_min) / g)) + 1
        self._layers = _LayerCache(3)

    def _smooth(self, rng: np.random.Generator, sigma_cells: float) -> np.ndarray:
        w = rng.standard_normal((self.nz, self.nx), dtype=np.float32)
        k = int(2 * math.ceil(3 * sigma_cells) + 1)
        out = cv2.GaussianBlur(w, (k, k), sigma_cells, borderType=cv2.BORDER_REFLECT)
        out /= np.float32(out.std() + 1e-6)
        return out

    def _layer(self, k: int) -> np.ndarray:
        rng = stream_rng(self.seed, "texture-layer", k)
        tex = self._smooth(rng, self.corr_mm / TEXTURE_GRID_MM / 2.0)
        dots = self._smooth(rng, 0.6 / TEXTURE_GRID_MM / 2.0)
        # The 6 mm field is smooth: draw it on a 4x coarser grid and interpolate up.
        w = rng.standard_normal(((self.nz + 3) // 4 + 1, (self.nx + 3) // 4 + 1),
                                dtype=np.float32)
        sig = 6.0 / (4 * TEXTURE_GRID_MM) / 2.0
        k = int(2 * math.ceil(3 * sig) + 1)
        small = cv2.GaussianBlur(w, (k, k), sig, borderType=cv2.BORDER_REFLECT)
        small /= np.float32(small.std() + 1e-6)
        coarse = cv2.resize(small, (self.nx, self.nz), interpolation=cv2.INTER_LINEAR)
        return np.dstack([tex, dots, coarse])

    def sample(self, x_mm: np.ndarray, z_mm: np.ndarray, y_mm: float) -> np.ndarray:
        """Texture, speck and coarse fields at the given liver-frame points.

        Returns:
            ``(*x_mm.shape, 3)`` float32, channels as in the class docstring.
        """
        g = TEXTURE_GRID_MM
        t = y_mm / TEXTURE_LAYER_MM
        k = int(math.floor(t))
        frac = t - k
        gx = (x_mm - np.float32(self.box.x_min)) * np.float32(1.0 / g)
        gz = (z_mm - np.float32(self.box.z_min)) * np.float32(1.0 / g)
        m1, m2 = cv2.convertMaps(gx, gz, cv2.CV_16SC2)
        a = cv2.remap(self._layers.get(k, self._layer), m1, m2, cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REFLECT)
        b = cv2.remap(self._layers.get(k + 1, self._layer), m1, m2, cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REFLECT)
        mixed = cv2.addWeighted(a, math.cos(0.5 * math.pi * frac), b,
                                math.sin(0.5 * math.pi * frac), 0.0)
        return mixed
