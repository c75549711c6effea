"""Diffuse liver state, abdominal wall and anatomy (vessels, diaphragm, gallbladder, ribs).

Only sampling lives here (dataclasses drawn from named seeded streams); how each part is drawn
into beam space lives in :mod:`sonoflow.stream.sim.scene`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sonoflow.stream.errors import ConfigError
from sonoflow.stream.sim import config
from sonoflow.stream.sim.geometry import Probe
from sonoflow.stream.sim.seeding import stream_rng


@dataclass(frozen=True)
class Liver:
    """Diffuse liver state.

    Attributes:
        steatosis_grade: 0..3 (S0..S3).
        attenuation_db_cm_mhz: attenuation slope, inside the grade's bin.
        backscatter_db: parenchymal echogenicity vs normal liver ("bright liver").
        fibrosis_stage: 0..4 (F0..F4).
        texture_db, texture_corr_mm: heterogeneity of the echotexture.
        nodularity_mm: capsule surface nodularity amplitude.
        cutoffs_db_cm_mhz: steatosis cut-offs used to bin the attenuation.
        portal_specks: sparse bright portal-tract specks (off in homogeneous phantoms).
        coarse_db: large-scale (6 mm) heterogeneity of the parenchyma, dB.
    """

    steatosis_grade: int
    attenuation_db_cm_mhz: float
    backscatter_db: float
    fibrosis_stage: int
    texture_db: float
    texture_corr_mm: float
    nodularity_mm: float
    cutoffs_db_cm_mhz: tuple[float, float, float]
    portal_specks: bool = True
    coarse_db: float = 0.0


@dataclass(frozen=True)
class Wall:
    """Abdominal wall (probe-locked layers, depths along each beam line).

    Attributes:
        skin_mm, fat_mm, fascia_mm, muscle_mm, preperitoneal_mm: layer thicknesses.
        present: False for homogeneous physics phantoms (liver from the skin down).
    """

    skin_mm: float
    fat_mm: float
    fascia_mm: float
    muscle_mm: float
    preperitoneal_mm: float
    present: bool = True

    @property
    def total_mm(self) -> float:
        """Depth of the liver capsule below the skin (0 without a wall)."""
        if not self.present:
            return 0.0
        return self.skin_mm + self.fat_mm + self.fascia_mm + self.muscle_mm + self.preperitoneal_mm


@dataclass(frozen=True)
class Vessel:
    """A straight vessel segment (capsule) in the liver frame (mm)."""

    p0: tuple[float, float, float]
    p1: tuple[float, float, float]
    radius_mm: float
    portal: bool


@dataclass(frozen=True)
class Diaphragm:
    """The diaphragm as a circle (cylinder along Y) around the liver, liver frame (mm)."""

    cx_mm: float
    cz_mm: float
    radius_mm: float
    thickness_mm: float
    ripple_k: float
    ripple_phase: float


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid rotated about the elevational axis (liver frame, mm)."""

    center: tuple[float, float, float]
    axes: tuple[float, float, float]
    angle_rad: float


@dataclass(frozen=True)
class Rib:
    """A rib cross-section in the probe frame (circle; probe-locked)."""

    u_mm: float
    v_mm: float
    radius_mm: float


@dataclass(frozen=True)
class Nodule:
    """A regenerative nodule (F4), a sphere in the liver frame."""

    center: tuple[float, float, float]
    radius_mm: float
    level_db: float


@dataclass(frozen=True)
class Anatomy:
    """Non-lesion structures of a case."""

    vessels: tuple[Vessel, ...]
    diaphragm: Diaphragm | None
    gallbladder: Ellipsoid | None
    ribs: tuple[Rib, ...]
    nodules: tuple[Nodule, ...]
    kidney: Ellipsoid | None = None


def sample_liver(seed: int, o: dict[str, Any]) -> Liver:
    """Draw the diffuse liver state; overrides ``steatosis_grade``, ``attenuation_db_cm_mhz``,
    ``fibrosis_stage``, ``steatosis_cutoffs_db_cm_mhz``.

    Raises:
        ConfigError: the attenuation override lies outside the grade's bin.
    """
    rng = stream_rng(seed, "liver")
    cutoffs = tuple(o.get("steatosis_cutoffs_db_cm_mhz") or config.STEATOSIS_CUTOFFS_DB_CM_MHZ)
    if len(cutoffs) != 3 or not (cutoffs[0] < cutoffs[1] < cutoffs[2]):
        raise ConfigError(f"steatosis_cutoffs_db_cm_mhz must be 3 increasing values, got {cutoffs}")
    grade = int(rng.choice(4, p=[0.4, 0.25, 0.2, 0.15]))
    stage = int(rng.choice(5, p=[0.35, 0.2, 0.15, 0.15, 0.15]))
    u_att = float(rng.random())
    bs_noise = float(rng.normal(0.0, 1.0))
    coarse = float(rng.uniform(0.8, 2.0))
    classes = o.get("lesion_classes") or ()
    if o.get("steatosis_grade") is not None:
        grade = int(o["steatosis_grade"])
    elif "fat_sparing" in classes and grade < 2:
        grade = 2 + int(u_att > 0.5)
    if "fat_sparing" in classes and grade < 2:
        raise ConfigError(f"lesion class 'fat_sparing' needs steatosis_grade >= 2 (it is "
                          f"hypoechoic only against a fatty liver); got steatosis_grade={grade}")
    if o.get("fibrosis_stage") is not None:
        stage = int(o["fibrosis_stage"])
    lo, hi = config.steatosis_bins(cutoffs)[grade]  # type: ignore[arg-type]
    att = lo + (hi - lo) * u_att
    if o.get("attenuation_db_cm_mhz") is not None:
        att = float(o["attenuation_db_cm_mhz"])
        if config.grade_for_attenuation(att, cutoffs) != grade:  # type: ignore[arg-type]
            raise ConfigError(f"attenuation_db_cm_mhz={att} lies outside the bin of "
                              f"steatosis_grade={grade} ({lo:.3f}-{hi:.3f}); change one of them")
    homog = bool(o.get("homogeneous"))
    return Liver(steatosis_grade=grade, attenuation_db_cm_mhz=att,
                 backscatter_db=config.STEATOSIS_BACKSCATTER_DB_PER_GRADE * grade
                 + (0.0 if homog else bs_noise),
                 fibrosis_stage=stage,
                 texture_db=0.0 if homog else config.FIBROSIS_TEXTURE_DB[stage],
                 texture_corr_mm=config.FIBROSIS_TEXTURE_CORR_MM[stage],
                 nodularity_mm=config.FIBROSIS_NODULARITY_MM[stage],
                 cutoffs_db_cm_mhz=cutoffs, portal_specks=not homog,
                 coarse_db=0.0 if homog else coarse + 0.3 * stage)  # type: ignore[arg-type]


def sample_wall(seed: int, liver: Liver, homogeneous: bool = False) -> Wall:
    """Draw the abdominal wall; thicker fat with higher steatosis grade."""
    rng = stream_rng(seed, "wall")
    fat = float(rng.uniform(8.0, 28.0)) + 4.0 * liver.steatosis_grade
    muscle = float(rng.uniform(6.0, 13.0))
    return Wall(skin_mm=2.0, fat_mm=fat, fascia_mm=0.8, muscle_mm=muscle, preperitoneal_mm=1.5,
                present=not homogeneous)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def sample_anatomy(seed: int, probe: Probe, wall: Wall, liver: Liver, motion_x0_mm: float,
                   view: str, overrides: dict[str, Any]) -> Anatomy:
    """Draw vessels, diaphragm, gallbladder, ribs and (F4) regenerative nodules."""
    o = overrides
    homog = bool(o.get("homogeneous"))
    rng = stream_rng(seed, "vessels")
    depth = probe.depth_mm
    top = wall.total_mm + 8.0
    vessels = []
    for _ in range(int(rng.integers(5, 10))):
        c = np.array([motion_x0_mm + rng.uniform(-70, 70), rng.uniform(-40, 40),
                      rng.uniform(top + 10, max(top + 20, depth * 0.9))])
        d = _unit(rng.normal(size=3))
        length = rng.uniform(40.0, 140.0)
        radius = float(rng.uniform(1.5, 6.0))
        portal = bool(rng.random() < 0.5)
        p0, p1 = c - d * length / 2, c + d * length / 2
        vessels.append(Vessel(tuple(map(float, p0)), tuple(map(float, p1)), radius, portal))
    if homog or o.get("vessels") is False:
        vessels = []

    rng = stream_rng(seed, "diaphragm")
    radius = float(rng.uniform(130.0, 185.0))
    apex = float(rng.uniform(115.0, 175.0))
    cx = motion_x0_mm + float(rng.uniform(-40.0, 40.0))
    dia: Diaphragm | None = Diaphragm(cx_mm=cx, cz_mm=apex - radius, radius_mm=radius,
                                      thickness_mm=float(rng.uniform(3.0, 5.0)),
                                      ripple_k=float(rng.uniform(4.0, 9.0)),
                                      ripple_phase=float(rng.uniform(0, 2 * math.pi)))
    if homog or o.get("diaphragm") is False:
        dia = None

    rng = stream_rng(seed, "gallbladder")
    has_gb = bool(rng.random() < 0.35)
    gb_c = (motion_x0_mm + float(rng.choice([-1, 1]) * rng.uniform(30, 60)),
            float(rng.uniform(-15, 15)), float(top + rng.uniform(15, 45)))
    gb_ax = (float(rng.uniform(12, 20)), float(rng.uniform(10, 16)), float(rng.uniform(7, 12)))
    gb_ang = float(rng.uniform(-0.5, 0.5))
    if o.get("gallbladder") is not None:
        has_gb = bool(o["gallbladder"])
    gb = Ellipsoid(gb_c, gb_ax, gb_ang) if has_gb and not homog else None

    rng = stream_rng(seed, "ribs")
    ribs = []
    n_ribs = int(rng.integers(1, 3))
    side = float(rng.choice([-1, 1]))
    for i in range(n_ribs):
        s = side if i == 0 else -side
        # Ribs lie under the subcutaneous fat, among the intercostal muscles.
        v = wall.skin_mm + wall.fat_mm + wall.fascia_mm + wall.muscle_mm * float(
            rng.uniform(0.3, 0.9))
        ang = probe.half_angle_rad * float(rng.uniform(0.62, 0.9))
        r_probe = probe.radius_mm + v
        ribs.append(Rib(u_mm=s * r_probe * math.sin(ang),
                        v_mm=r_probe * math.cos(ang) - probe.radius_mm,
                        radius_mm=float(rng.uniform(4.5, 6.5))))
    want_ribs = view == "intercostal"
    if o.get("ribs") is not None:
        want_ribs = bool(o["ribs"])
    if not want_ribs or homog:
        ribs = []

    rng = stream_rng(seed, "nodules")
    nodules = []
    if liver.fibrosis_stage >= 4 and not homog:
        for _ in range(int(rng.integers(15, 36))):
            nodules.append(Nodule(
                center=(motion_x0_mm + float(rng.uniform(-90, 90)), float(rng.uniform(-45, 45)),
                        float(rng.uniform(top + 5, depth * 0.95))),
                radius_mm=float(rng.uniform(3.0, 7.0)), level_db=float(rng.uniform(-3.0, 1.0))))
    # Right kidney behind the liver (hepatorenal contrast: the kidney keeps its echogenicity
    # while a fatty liver brightens).
    rng = stream_rng(seed, "kidney")
    has_kidney = bool(rng.random() < 0.45)
    k_center = (motion_x0_mm + float(rng.choice([-1, 1]) * rng.uniform(10, 45)),
                float(rng.uniform(-15, 15)), float(rng.uniform(0.5, 0.7) * depth + 20.0))
    k_axes = (float(rng.uniform(45, 58)), float(rng.uniform(25, 32)), float(rng.uniform(22, 28)))
    k_angle = float(rng.uniform(-0.35, 0.35))
    if o.get("kidney") is not None:
        has_kidney = bool(o["kidney"])
    kidney = Ellipsoid(k_center, k_axes, k_angle) if has_kidney and not homog else None
    if kidney is not None and o.get("diaphragm") is not True:
        dia = None  # the hepatorenal view; the dome is out of this plane
    return Anatomy(vessels=tuple(vessels), diaphragm=dia, gallbladder=gb, ribs=tuple(ribs),
                   nodules=tuple(nodules), kidney=kidney)
