"""A simulated case: everything about one patient and one clip, sampled from one seed.

``sample_case(seed, **overrides)`` draws the probe, body wall, liver (steatosis, fibrosis),
anatomy, focal lesions, motion and quality-event settings in a fixed order from named random
streams (:mod:`sonoflow.stream.sim.seeding`), so a seed always gives the same case.
Lengths are millimetres in the *liver frame*: X lateral, Y elevational (across the imaging
plane), Z depth below the centre of the probe face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sonoflow.stream.errors import ConfigError
from sonoflow.stream.sim import config
from sonoflow.stream.sim.geometry import Probe, sector_layout
from sonoflow.stream.sim.lesions import Lesion, lirads_for_case, sample_lesions
from sonoflow.stream.sim.seeding import stream_rng
from sonoflow.stream.sim.tissue import (
    Anatomy,
    Liver,
    Wall,
    sample_anatomy,
    sample_liver,
    sample_wall,
)

_FIRST = ("Anna", "Jonas", "Mei", "Omar", "Lena", "Ravi", "Sofia", "Tomas", "Ines", "Kenji")
_LAST = ("Testperson", "Phantom", "Synthetic", "Example", "Sample", "Muster", "Demo")


@dataclass(frozen=True)
class Motion:
    """Probe and breathing motion of a clip.

    Attributes:
        x0_mm, y0_mm: probe position at the start (lateral, elevational).
        phi0_rad: in-plane probe rotation.
        sweep: whether the probe sweeps elevationally.
        sweep_speed_mm_s: signed sweep speed; the sweep bounces inside ``sweep_range_mm``.
        sweep_range_mm: length of the elevational range covered by the sweep.
        breath_amp_mm, breath_period_s, breath_phase_rad: breathing excursion model
            ``A * ((1 - cos(2 pi t / T + phase)) / 2) ** 1.5``.
        breath_dir: unit vector (lateral, elevational, depth) of the breathing excursion.
        tremor_mm: standard deviation of the per-frame hand tremor.
    """

    x0_mm: float
    y0_mm: float
    phi0_rad: float
    sweep: bool
    sweep_speed_mm_s: float
    sweep_range_mm: float
    breath_amp_mm: float
    breath_period_s: float
    breath_phase_rad: float
    breath_dir: tuple[float, float, float]
    tremor_mm: float


@dataclass(frozen=True)
class Imaging:
    """Display-chain settings: gain, TGC, noise, clutter, persistence, grey map.

    Attributes:
        gain_db: overall gain offset.
        tgc: whether time-gain compensation is applied (False for physics tests).
        tgc_kappa: fraction of the liver's excess attenuation the sonographer compensates.
        tgc_user_db: 4 coefficients of a smooth user TGC curve (dB).
        noise_db: electronic noise level before TGC (dB re. normal-liver speckle); None = off.
        clutter: whether near-field haze and reverberation are added.
        haze_db: haze level at the skin; haze_decay_mm: its decay length.
        persistence: temporal IIR weight of the previous frame (0..0.35).
    """

    gain_db: float
    tgc: bool
    tgc_kappa: float
    tgc_user_db: tuple[float, float, float, float]
    noise_db: float | None
    clutter: bool
    haze_db: float
    haze_decay_mm: float
    persistence: float


@dataclass(frozen=True)
class Patient:
    """Fake identifiers burned into the UI (never real data)."""

    name: str
    patient_id: str
    date: str
    preset: str


@dataclass(frozen=True)
class Case:
    """One sampled case. Build with :func:`sample_case`; immutable.

    Attributes:
        seed: the seed it was sampled from.
        probe: convex probe geometry and PSF.
        wall: abdominal wall layers.
        liver: diffuse liver state (steatosis, fibrosis, texture).
        anatomy: vessels, diaphragm, gallbladder, ribs, regenerative nodules.
        lesions: focal lesions (ids 1..n).
        motion: probe and breathing motion.
        imaging: gain, TGC, noise, clutter, persistence.
        patient: fake identifiers for the burned-in UI.
        ui: burn a scanner UI outside the sector.
        events: quality events: True (random), False (none) or a tuple of forced event names.
        view: "subcostal" or "intercostal" (intercostal views have rib shadows).
    """

    seed: int
    probe: Probe
    wall: Wall
    liver: Liver
    anatomy: Anatomy
    lesions: tuple[Lesion, ...]
    motion: Motion
    imaging: Imaging
    patient: Patient
    ui: bool
    events: bool | tuple[str, ...]
    view: str

    def mm_per_px(self, height: int = 480, width: int = 640) -> tuple[float, float]:
        """Pixel spacing ``(x, y)`` in mm of frames rendered at ``height x width``."""
        lay = sector_layout(self.probe, height, width)
        return (lay.mm_per_px, lay.mm_per_px)

    def truth(self) -> dict[str, Any]:
        """The per-clip ``"case"`` entry of the ground-truth JSON (plain JSON types)."""
        lesions = [les.truth() for les in self.lesions]
        return {
            "seed": int(self.seed),
            "steatosis_grade": int(self.liver.steatosis_grade),
            "attenuation_db_cm_mhz": round(float(self.liver.attenuation_db_cm_mhz), 5),
            "steatosis_cutoffs_db_cm_mhz": list(self.liver.cutoffs_db_cm_mhz),
            "steatosis_cutoffs_source": config.STEATOSIS_CUTOFFS_SOURCE,
            "liver_backscatter_db": round(float(self.liver.backscatter_db), 3),
            "fibrosis_stage": int(self.liver.fibrosis_stage),
            "lesions": lesions,
            "lirads_category": lirads_for_case(self.lesions),
            "any_malignant": any(les.malignant for les in self.lesions),
            "view": self.view,
            "probe": self.probe.truth(),
            "wall": {"fat_mm": round(self.wall.fat_mm, 2), "muscle_mm": round(self.wall.muscle_mm, 2)},
            "anatomy": {
                "n_vessels": len(self.anatomy.vessels),
                "diaphragm": self.anatomy.diaphragm is not None,
                "gallbladder": self.anatomy.gallbladder is not None,
                "n_ribs": len(self.anatomy.ribs),
                "n_regenerative_nodules": len(self.anatomy.nodules),
                "kidney": self.anatomy.kidney is not None,
            },
            "motion": {
                "sweep": self.motion.sweep,
                "sweep_speed_mm_s": round(self.motion.sweep_speed_mm_s, 3),
                "sweep_range_mm": round(self.motion.sweep_range_mm, 3),
                "breath_amp_mm": round(self.motion.breath_amp_mm, 3),
                "breath_period_s": round(self.motion.breath_period_s, 3),
            },
            "imaging": {
                "gain_db": round(self.imaging.gain_db, 3),
                "tgc": self.imaging.tgc,
                "persistence": round(self.imaging.persistence, 4),
                "noise_db": None if self.imaging.noise_db is None else round(self.imaging.noise_db, 2),
            },
            "ui": self.ui,
            "events": self.events if isinstance(self.events, bool) else list(self.events),
        }


#: Overrides accepted by :func:`sample_case`, with what they set.
OVERRIDES = {
    "steatosis_grade": "steatosis grade 0..3",
    "attenuation_db_cm_mhz": "liver attenuation (must lie in the grade's bin when both given)",
    "fibrosis_stage": "fibrosis stage 0..4",
    "n_lesions": "number of focal lesions 0..8",
    "lesion_classes": "list of lesion classes, cycled over the lesions",
    "lesion_diameters_mm": "list of lesion diameters (3-50 mm), cycled",
    "ui": "burned-in UI (bool)",
    "events": "quality events: bool or list of event names",
    "depth_mm": "imaging depth 120-200 mm",
    "freq_mhz": "centre frequency 2.5-5 MHz",
    "sweep": "elevational sweep (bool)",
    "breathing": "breathing motion (bool)",
    "tremor": "hand tremor (bool)",
    "tgc": "time-gain compensation (bool)",
    "noise": "electronic noise (bool)",
    "clutter": "haze and reverberation clutter (bool)",
    "vessels": "vessels (bool)",
    "diaphragm": "diaphragm (bool)",
    "gallbladder": "gallbladder (bool or None = random)",
    "ribs": "rib shadows (bool or None = by view)",
    "kidney": "right kidney behind the liver (bool or None = random, 45 %)",
    "view": "'subcostal' or 'intercostal'",
    "gain_db": "overall gain offset (dB)",
    "persistence": "temporal persistence 0..0.9",
    "homogeneous": "True: liver only (no wall layers, anatomy, lesions, clutter) for physics tests",
    "steatosis_cutoffs_db_cm_mhz": "S1, S2, S3 cut-offs",
}


def _check_overrides(overrides: dict[str, Any]) -> None:
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise ConfigError(
            f"sample_case: unknown override(s) {unknown}; expected some of {sorted(OVERRIDES)}")
    checks = {
        "steatosis_grade": lambda v: v in (0, 1, 2, 3),
        "fibrosis_stage": lambda v: v in (0, 1, 2, 3, 4),
        "n_lesions": lambda v: isinstance(v, int) and 0 <= v <= 8,
        "depth_mm": lambda v: 120.0 <= float(v) <= 200.0,
        "freq_mhz": lambda v: 2.5 <= float(v) <= 5.0,
        "view": lambda v: v in ("subcostal", "intercostal"),
        "persistence": lambda v: 0.0 <= float(v) <= 0.9,
    }
    for key, ok in checks.items():
        if key in overrides and overrides[key] is not None and not ok(overrides[key]):
            raise ConfigError(f"sample_case: {key}={overrides[key]!r} is out of range; "
                              f"expected {OVERRIDES[key]}")
    for cls in overrides.get("lesion_classes") or ():
        if cls not in config.LESION_CLASSES:
            raise ConfigError(f"sample_case: lesion class {cls!r} is unknown; expected one of "
                              f"{list(config.LESION_CLASSES)}")
    for d in overrides.get("lesion_diameters_mm") or ():
        if not config.LESION_MIN_MM <= float(d) <= config.LESION_MAX_MM:
            raise ConfigError(f"sample_case: lesion diameter {d} mm is outside "
                              f"{config.LESION_MIN_MM}-{config.LESION_MAX_MM} mm")
    ev = overrides.get("events")
    if ev is not None and not isinstance(ev, bool):
        bad = [e for e in ev if e not in config.EVENT_KINDS]
        if bad:
            raise ConfigError(f"sample_case: unknown event(s) {bad}; expected some of "
                              f"{list(config.EVENT_KINDS)}")


def _sample_probe(seed: int, o: dict[str, Any]) -> Probe:
    rng = stream_rng(seed, "probe")
    depth = float(rng.choice([120.0, 140.0, 160.0, 160.0, 180.0, 200.0]))
    freq = float(rng.uniform(2.5, 5.0))
    dr = float(rng.uniform(52.0, 72.0))
    gamma = float(rng.uniform(1.0, 1.35))
    axial = float(rng.uniform(0.55, 0.85))
    lateral = float(rng.uniform(0.7, 1.0))
    focus = float(rng.uniform(0.4, 0.65))
    radius = float(rng.uniform(45.0, 60.0))
    half_angle = float(rng.uniform(32.0, 38.0))
    depth = float(o.get("depth_mm") or depth)
    freq = float(o.get("freq_mhz") or freq)
    # Higher frequency: finer axial resolution (bandwidth scales with f0).
    axial *= 3.5 / freq
    return Probe(radius_mm=radius, half_angle_deg=half_angle, depth_mm=depth, freq_mhz=freq,
                 dynamic_range_db=dr, grey_gamma=gamma, axial_fwhm_mm=axial,
                 lateral_fwhm_deg=lateral, focus_mm=focus * depth)


def _sample_motion(seed: int, o: dict[str, Any]) -> Motion:
    rng = stream_rng(seed, "motion")
    sweep = bool(rng.random() < 0.65)
    speed = float(rng.uniform(6.0, 14.0)) * (1.0 if rng.random() < 0.5 else -1.0)
    sweep_range = float(rng.uniform(40.0, 70.0))
    amp = float(rng.uniform(4.0, 16.0))
    period = float(rng.uniform(3.0, 5.0))
    phase = float(rng.uniform(0.0, 2.0 * math.pi))
    e = np.array([rng.normal(0.0, 0.4), 1.0, rng.normal(0.3, 0.3)])
    e /= np.linalg.norm(e)
    x0 = float(rng.normal(0.0, 8.0))
    phi0 = float(rng.normal(0.0, 0.06))
    if o.get("sweep") is not None:
        sweep = bool(o["sweep"])
    if o.get("breathing") is False:
        amp = 0.0
    tremor = 0.0 if o.get("tremor") is False else 0.15
    return Motion(x0_mm=x0, y0_mm=0.0, phi0_rad=phi0, sweep=sweep,
                  sweep_speed_mm_s=speed if sweep else 0.0, sweep_range_mm=sweep_range,
                  breath_amp_mm=amp, breath_period_s=period, breath_phase_rad=phase,
                  breath_dir=(float(e[0]), float(e[1]), float(e[2])), tremor_mm=tremor)


def _sample_imaging(seed: int, o: dict[str, Any]) -> Imaging:
    rng = stream_rng(seed, "imaging")
    gain = float(rng.normal(0.0, 2.0))
    kappa = float(rng.uniform(0.2, 0.8))
    user = tuple(float(v) for v in rng.normal(0.0, 1.5, size=4))
    noise = float(rng.uniform(-88.0, -80.0))
    haze = float(rng.normal(-18.0, 4.0))
    decay = float(rng.uniform(18.0, 35.0))
    pers = float(rng.uniform(0.0, 0.35))
    if o.get("gain_db") is not None:
        gain = float(o["gain_db"])
    if o.get("persistence") is not None:
        pers = float(o["persistence"])
    homog = bool(o.get("homogeneous"))
    return Imaging(gain_db=gain, tgc=o.get("tgc", True) is not False, tgc_kappa=kappa,
                   tgc_user_db=user,  # type: ignore[arg-type]
                   noise_db=None if o.get("noise") is False else noise,
                   clutter=not (o.get("clutter") is False or homog),
                   haze_db=haze, haze_decay_mm=decay, persistence=pers)


def _sample_patient(seed: int, probe: Probe) -> Patient:
    rng = stream_rng(seed, "patient")
    name = f"{_LAST[rng.integers(len(_LAST))].upper()}^{_FIRST[rng.integers(len(_FIRST))]}"
    pid = f"SIM{int(rng.integers(0, 10**7)):07d}"
    day = int(rng.integers(0, 365 * 6))
    y, rem = 2020 + day // 365, day % 365
    date = f"{y:04d}-{1 + rem // 31 % 12:02d}-{1 + rem % 28:02d}"
    preset = f"ABD LIVER  C5-2  {probe.freq_mhz:.1f}MHz  D{probe.depth_mm / 10:.0f}cm"
    return Patient(name=name, patient_id=pid, date=date, preset=preset)


def sample_case(seed: int, **overrides: Any) -> Case:
    """Sample one case from a seed.

    Args:
        seed: non-negative integer; the same seed (and overrides) always gives the same case.
        **overrides: fixed values for parts of the case; see :data:`OVERRIDES`
            (e.g. ``steatosis_grade=2, n_lesions=3, lesion_classes=["cyst"], ui=True,
            events=True, depth_mm=160, freq_mhz=3.5, sweep=True``).

    Returns:
        The case.

    Raises:
        ConfigError: an override is unknown, out of range, or contradicts another one
            (e.g. ``fat_sparing`` with a steatosis grade below 2).
    """
    if int(seed) < 0:
        raise ConfigError(f"sample_case: seed must be >= 0, got {seed}")
    seed = int(seed)
    _check_overrides(overrides)
    homog = bool(overrides.get("homogeneous"))
    probe = _sample_probe(seed, overrides)
    rng_view = stream_rng(seed, "view")
    view = "intercostal" if rng_view.random() < 0.4 else "subcostal"
    view = overrides.get("view") or view
    liver = sample_liver(seed, overrides)
    wall = sample_wall(seed, liver, homogeneous=homog)
    motion = _sample_motion(seed, overrides)
    anatomy = sample_anatomy(seed, probe, wall, liver, motion_x0_mm=motion.x0_mm, view=view,
                             overrides=overrides)
    lesions = sample_lesions(seed, probe, wall, liver, anatomy, motion, overrides)
    imaging = _sample_imaging(seed, overrides)
    patient = _sample_patient(seed, probe)
    ev = overrides.get("events", True)
    events: bool | tuple[str, ...] = ev if isinstance(ev, bool) else tuple(ev)
    return Case(seed=seed, probe=probe, wall=wall, liver=liver, anatomy=anatomy,
                lesions=tuple(lesions), motion=motion, imaging=imaging, patient=patient,
                ui=bool(overrides.get("ui", True)), events=events, view=view)
