"""Focal liver lesions: sampling, US LI-RADS category, and their B-mode signs in beam space.

Signs follow SIMULATOR.md section 2 (levels in dB relative to the local liver background):
cyst (anechoic, bright front/back wall, posterior enhancement from low attenuation, edge
shadows), hemangioma (hyperechoic, well defined; 15 % rim type), metastasis (target with
hypoechoic halo 60 % / hypoechoic 25 % / hyperechoic with halo 15 %; necrotic core if large),
HCC (hypoechoic when small, mosaic and halo when larger, posterior enhancement from lower
attenuation), focal fat sparing (normal-liver level inside a bright fatty liver; flat,
geographic). Inner structure uses the 3-D normalised radius, so an off-centre cut shows mostly
the outer layers, as in real sweeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sonoflow.stream.sim import config
from sonoflow.stream.sim.primitives import FrameContext, SceneMaps, ellipsoid_cut, smooth_band
from sonoflow.stream.sim.seeding import stream_rng

_LESION = config.TISSUE_CODES["lesion"]
#: Tissues a lesion never paints over (it lives in the parenchyma, vessels and nodules).
_NOT_LIVER = np.array([config.TISSUE_CODES[k] for k in ("wall", "rib", "diaphragm", "lung_mirror",
                                                         "gallbladder", "kidney")], np.uint8)


@dataclass(frozen=True)
class Lesion:
    """One focal lesion, a perturbed ellipsoid in the liver frame.

    Attributes:
        lesion_id: stable id (1..n), also the value in the instance mask.
        cls: class name (:data:`config.LESION_CLASSES`).
        malignant: True for metastasis and HCC.
        diameter_mm: nominal 3-D diameter.
        center: ``(X, Y, Z)`` mm; axes: semi-axes mm; angle_rad: rotation about Y.
        eps, phases: boundary harmonics k = 2..5.
        subtype: class-specific appearance (e.g. "target", "mosaic", "rim").
        levels: appearance parameters (dB levels, halo radius, ...).
        seeds: ``(k, 3)`` Voronoi seeds of a mosaic HCC (normalised coordinates), else empty.
    """

    lesion_id: int
    cls: str
    malignant: bool
    diameter_mm: float
    center: tuple[float, float, float]
    axes: tuple[float, float, float]
    angle_rad: float
    eps: tuple[float, ...]
    phases: tuple[float, ...]
    subtype: str
    levels: dict[str, float] = field(default_factory=dict)
    seeds: tuple[tuple[float, float, float], ...] = ()

    @property
    def lirads_category(self) -> str:
        """US LI-RADS v2017 category this observation alone implies."""
        return lirads_for_lesion(self.cls, self.diameter_mm)

    def truth(self) -> dict[str, Any]:
        """The lesion's entry in the case truth (plain JSON types)."""
        return {
            "lesion_id": self.lesion_id,
            "class": self.cls,
            "malignant": self.malignant,
            "diameter_mm": round(self.diameter_mm, 3),
            "axes_mm": [round(2 * a, 3) for a in self.axes],
            "center_mm": [round(c, 3) for c in self.center],
            "subthreshold": self.diameter_mm < config.LIRADS_THRESHOLD_MM,
            "subtype": self.subtype,
            "lirads_category": self.lirads_category,
        }


def lirads_for_lesion(cls: str, diameter_mm: float) -> str:
    """US-1 for definitely benign observations, US-2 below 10 mm, else US-3."""
    if cls in config.DEFINITELY_BENIGN_CLASSES:
        return "US-1"
    return "US-2" if diameter_mm < config.LIRADS_THRESHOLD_MM else "US-3"


def lirads_for_case(lesions) -> str:
    """Highest category over the lesions (US-1 when there are none)."""
    cats = [les.lirads_category for les in lesions] or ["US-1"]
    return max(cats)


def _sample_diameter(rng: np.random.Generator) -> float:
    if rng.random() < config.LESION_SUBTHRESHOLD_FRACTION:
        return float(rng.uniform(config.LESION_MIN_MM, 9.9))
    d = config.LESION_MEDIAN_MM * math.exp(config.LESION_SIGMA_LN * rng.normal())
    return float(np.clip(d, 10.0, config.LESION_MAX_MM))


def _levels(cls: str, d_mm: float, grade: int, rng: np.random.Generator):
    seeds: tuple = ()
    if cls == "cyst":
        return "simple", {"lumen_db": -46.0, "wall_amp": 2.0}, seeds
    if cls == "hemangioma":
        rim = rng.random() < 0.15
        return ("rim" if rim else "hyperechoic"), {"level_db": float(rng.uniform(6, 12)),
                                                   "centre_db": -3.0}, seeds
    if cls == "metastasis":
        u = rng.random()
        sub = "target" if u < 0.6 else ("hypoechoic" if u < 0.85 else "hyperechoic")
        lv = {"halo_db": float(rng.uniform(-20, -12)), "halo_rho": float(rng.uniform(0.40, 0.58)),
              "centre_db": float(rng.uniform(4, 9)), "hypo_db": float(rng.uniform(-12, -6)),
              "hyper_db": float(rng.uniform(5, 9)),
              "necrotic": float(d_mm > 15 and rng.random() < 0.5)}
        return sub, lv, seeds
    if cls == "hcc":
        level = float(rng.uniform(-9, -4)) if d_mm < 30 else float(rng.uniform(-4, 2))
        mosaic = d_mm >= 20 and rng.random() < 0.7
        halo = rng.random() < 0.7
        lv = {"level_db": level, "halo": float(halo), "halo_db": -14.0}
        if mosaic:
            pts = rng.normal(size=(7, 3))
            pts /= np.linalg.norm(pts, axis=1, keepdims=True)
            pts *= rng.uniform(0.1, 0.8, size=(7, 1))
            seeds = tuple(tuple(float(v) for v in p) for p in pts)
            lv.update({f"cell{i}_db": float(v) for i, v in
                       enumerate(rng.choice([-9.0, -5.0, -1.0, 3.0, 6.0], size=7))})
        return ("mosaic" if mosaic else "nodular"), lv, seeds
    if cls == "fat_sparing":
        return "geographic", {"level_db": -config.STEATOSIS_BACKSCATTER_DB_PER_GRADE * grade}, seeds
    raise ValueError(cls)  # unreachable: classes are validated in sample_case


def sample_lesions(seed: int, probe, wall, liver, anatomy, motion,
                   o: dict[str, Any]) -> list[Lesion]:
    """Draw 0-4 lesions (or ``n_lesions``) inside the liver and inside the sweep range.

    Raises:
        ConfigError: propagated from validation in :func:`sample_case` only.
    """
    rng = stream_rng(seed, "lesions")
    homog = bool(o.get("homogeneous"))
    n = int(rng.choice(5, p=[0.2, 0.35, 0.25, 0.12, 0.08]))
    if o.get("n_lesions") is not None:
        n = int(o["n_lesions"])
    elif o.get("lesion_classes"):
        n = max(n, len(o["lesion_classes"]))
    if homog and o.get("n_lesions") is None:
        n = 0
    classes_o = list(o.get("lesion_classes") or [])
    diam_o = list(o.get("lesion_diameters_mm") or [])
    allowed = [c for c in config.LESION_CLASSES
               if c != "fat_sparing" or liver.steatosis_grade >= 2]
    w = np.array([config.LESION_CLASS_WEIGHTS[c] for c in allowed])
    w /= w.sum()
    top = wall.total_mm + 6.0 + 2.5 * liver.nodularity_mm
    y_half = motion.sweep_range_mm / 2.0 if motion.sweep else 0.0
    lesions: list[Lesion] = []
    for i in range(n):
        cls = classes_o[i % len(classes_o)] if classes_o else str(rng.choice(allowed, p=w))
        d = float(diam_o[i % len(diam_o)]) if diam_o else _sample_diameter(rng)
        r = d / 2.0
        axes = tuple(float(r * rng.uniform(0.85, 1.2)) for _ in range(3))
        if cls == "fat_sparing":
            axes = (axes[0] * 1.1, axes[1], axes[2] * 0.45)
        n_h = 4
        amp = 0.2 if cls == "fat_sparing" else (0.015 if cls == "cyst" else 0.05)
        eps = tuple(float(rng.uniform(0, amp)) / (k ** 0.5) for k in range(2, 2 + n_h))
        phases = tuple(float(rng.uniform(0, 2 * math.pi)) for _ in range(n_h))
        sub, levels, seeds = _levels(cls, d, liver.steatosis_grade, rng)
        ang = float(rng.uniform(-math.pi / 2, math.pi / 2))
        if cls == "fat_sparing":
            ang *= 0.25  # geographic, roughly along the capsule
        rmax = max(axes) * (1.0 + sum(eps))
        center = None
        for _ in range(60):
            z_lo = top + rmax + 2.0
            z_hi = probe.depth_mm * 0.85 - rmax
            if cls == "fat_sparing":
                z_hi = min(z_hi, top + rmax + 25.0)
            if anatomy.diaphragm is not None:
                dia = anatomy.diaphragm
                z_hi = min(z_hi, dia.cz_mm + dia.radius_mm - rmax - 12.0)
            if z_hi <= z_lo:
                z_hi = z_lo + 1.0
            z = float(rng.uniform(z_lo, z_hi))
            half_w = (probe.radius_mm + z) * math.sin(probe.half_angle_rad) * 0.8 - rmax
            x = motion.x0_mm + float(rng.uniform(-max(half_w, 1.0), max(half_w, 1.0)))
            if y_half > 0:
                # Early in the first pass of the sweep (it starts at -sign(v) * half), so
                # short clips still cross most lesions.
                sgn = math.copysign(1.0, motion.sweep_speed_mm_s)
                y = motion.y0_mm + sgn * (-y_half + float(rng.uniform(0.1, 0.65)) * 2 * y_half)
            else:
                y = motion.y0_mm + float(rng.uniform(-0.35, 0.35) * axes[1])
            ok = all(math.dist((x, y, z), o_.center) > rmax + max(o_.axes) * 1.3 + 3.0
                     for o_ in lesions)
            for organ in (anatomy.gallbladder, anatomy.kidney):
                if organ is not None:
                    ok = ok and math.dist((x, y, z), organ.center) > rmax + max(organ.axes) + 3.0
            if ok:
                center = (x, y, z)
                break
        if center is None:
            center = (x, y, z)
        lesions.append(Lesion(lesion_id=i + 1, cls=cls,
                              malignant=cls in config.MALIGNANT_CLASSES, diameter_mm=d,
                              center=center, axes=axes, angle_rad=ang, eps=eps, phases=phases,
                              subtype=sub, levels=levels, seeds=seeds))
    return lesions


def draw_lesion(les: Lesion, ctx: FrameContext, maps: SceneMaps) -> bool:
    """Draw one lesion into the frame's beam maps.

    Returns:
        True when the plane cuts the lesion inside the sector.
    """
    cut = ellipsoid_cut(ctx, les.center, les.axes, les.angle_rad, les.eps, les.phases,
                        margin=1.2)
    if cut is None:
        return False
    l0, l1, s0, s1 = cut.win
    inside = (cut.reff < 1.0) & ~np.isin(maps.tissue[l0:l1, s0:s1], _NOT_LIVER)
    if not inside.any():
        return False
    b = maps.b_db[l0:l1, s0:s1]
    al = maps.alpha[l0:l1, s0:s1]
    coh = maps.coh[l0:l1, s0:s1]
    base = ctx.liver_b_db[l0:l1, s0:s1]
    lv = les.levels
    rho = cut.rho
    w_rel = 0.35 / max(cut.radius_mm, 0.5)
    shell = np.abs(cut.reff - 1.0) < 3.0 * w_rel
    graze = (1.0 - cut.nb) ** 2
    a_liver = ctx.liver_alpha
    coh[inside] = 0.0  # a lesion displaces what was drawn before it (vessel walls, specks)
    if les.cls == "cyst":
        b[inside] = lv["lumen_db"]
        al[inside] = 0.02
        prof = smooth_band(cut.reff[shell], 1.0, w_rel)
        coh[shell] += lv["wall_amp"] * (0.15 + 0.85 * cut.nb[shell] ** 4) * prof
        al[shell] += 8.0 * graze[shell] * prof
    elif les.cls == "hemangioma":
        lvl = np.where(rho < 0.55, lv["centre_db"], lv["level_db"]) if les.subtype == "rim" \
            else np.float32(lv["level_db"])
        b[inside] = (base + lvl)[inside]
        al[inside] = 0.92 * a_liver
        prof = smooth_band(cut.reff[shell], 1.0, w_rel)
        coh[shell] += 0.25 * prof
    elif les.cls == "metastasis":
        if les.subtype == "target":
            ramp = np.clip((rho - lv["halo_rho"]) / 0.15, 0.0, 1.0)
            lvl = lv["centre_db"] * (1 - ramp) + lv["halo_db"] * ramp
        elif les.subtype == "hypoechoic":
            lvl = np.full_like(rho, lv["hypo_db"])
        else:
            ramp = np.clip((cut.reff - 0.8) / 0.1, 0.0, 1.0)
            lvl = lv["hyper_db"] * (1 - ramp) + lv["halo_db"] * ramp
        if lv["necrotic"]:
            lvl = np.where(rho < 0.25, np.float32(-14.0), lvl)
        b[inside] = (base + lvl)[inside]
        al[inside] = a_liver
    elif les.cls == "hcc":
        lvl = np.full_like(rho, lv["level_db"])
        if les.seeds:
            seeds = np.asarray(les.seeds, np.float32)
            yn = np.float32(cut.yn)
            d = np.stack([(cut.xn - sx) ** 2 + (yn - sy) ** 2 + (cut.zn - sz) ** 2
                          for sx, sy, sz in seeds])
            order = np.argsort(d, axis=0)
            nearest = order[0]
            d1 = np.take_along_axis(d, order[:1], 0)[0]
            d2 = np.take_along_axis(d, order[1:2], 0)[0]
            cells = np.array([lv[f"cell{i}_db"] for i in range(len(seeds))], np.float32)
            lvl = cells[nearest]
            lvl = np.where(np.sqrt(d2) - np.sqrt(d1) < 0.05, np.float32(4.0), lvl)
        if lv["halo"]:
            lvl = np.where(cut.reff > 0.88, np.float32(lv["halo_db"]), lvl)
        b[inside] = (base + lvl)[inside]
        al[inside] = 0.8 * a_liver
        prof = smooth_band(cut.reff[shell], 1.0, w_rel)
        al[shell] += 6.0 * graze[shell] * prof
    elif les.cls == "fat_sparing":
        b[inside] = (base + lv["level_db"])[inside]
        al[inside] = 0.5
    maps.tissue[l0:l1, s0:s1][inside] = _LESION
    maps.ids[l0:l1, s0:s1][inside] = les.lesion_id
    return True
