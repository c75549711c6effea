"""A montage of simulated frames: every steatosis grade, lesion class and quality event.

    .venv/bin/python -m sonoflow.stream.sim.montage --out docs/sim_montage.png

Tiles are rendered at 480x640 and shown at half size with a caption; nothing is drawn on
the images themselves (what a person sees is what a model gets).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from sonoflow.stream.sim.case import sample_case
from sonoflow.stream.sim.clip import simulate_clip

TILE_H, TILE_W, CAPTION_PX = 240, 320, 18


def _frame_with(case, label: str | None, n_frames: int = 45, lesion: bool = False,
                fps: float = 30.0):
    """The first frame with quality ``label`` (or, for lesions, the largest cut)."""
    best = None
    for f in simulate_clip(case, n_frames=n_frames, height=480, width=640, fps=fps):
        if label is not None and f.truth["quality_label"] == label:
            return f
        if lesion and f.truth["lesions"]:
            area = max(les["area_px"] for les in f.truth["lesions"])
            if best is None or area > best[0]:
                best = (area, f)
        if label is None and not lesion:
            return f
    if best is not None:
        return best[1]
    raise LookupError(f"no frame labelled {label!r} in {n_frames} frames of seed {case.seed}")


def _tile(image: np.ndarray, caption: str) -> np.ndarray:
    small = cv2.resize(image, (TILE_W, TILE_H), interpolation=cv2.INTER_AREA)
    band = np.full((CAPTION_PX, TILE_W), 40, np.uint8)
    cv2.putText(band, caption, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1, cv2.LINE_AA)
    return np.vstack([band, small])


def build_montage() -> np.ndarray:
    """Render all tiles and assemble them, 5 per row.

    Returns:
        ``(rows * 258, 1600)`` uint8 grey image.
    """
    still = dict(events=False, sweep=False, n_lesions=0)
    tiles = []
    for grade in range(4):
        case = sample_case(200 + grade, steatosis_grade=grade, fibrosis_stage=0,
                           view="subcostal", ui=grade == 0, **still)
        a = case.liver.attenuation_db_cm_mhz
        tiles.append(_tile(_frame_with(case, None).image, f"steatosis S{grade} ({a:.2f} dB/cm/MHz)"))
    case = sample_case(210, fibrosis_stage=4, steatosis_grade=0, ui=False, **still)
    tiles.append(_tile(_frame_with(case, None).image, "cirrhosis F4 (nodular surface)"))
    for i, cls in enumerate(("cyst", "hemangioma", "metastasis", "hcc", "fat_sparing")):
        extra = {"steatosis_grade": 3} if cls == "fat_sparing" else {}
        case = sample_case(220 + i, n_lesions=1, lesion_classes=[cls],
                           lesion_diameters_mm=[26.0 if cls != "hemangioma" else 18.0],
                           events=False, ui=False, sweep=True, view="subcostal", **extra)
        f = _frame_with(case, None, n_frames=40, lesion=True, fps=4.0)
        tiles.append(_tile(f.image, f"{cls} ({case.lesions[0].subtype})"))
    events = ("frozen", "black", "no_contact", "partial_contact", "too_bright", "too_dark",
              "motion_blur")
    for i, ev in enumerate(events):
        case = sample_case(240 + i, events=[ev], ui=True, n_lesions=1)
        tiles.append(_tile(_frame_with(case, ev).image, f"event: {ev}"))
    case = sample_case(260, view="intercostal", ribs=True, events=False, ui=False, n_lesions=0)
    tiles.append(_tile(_frame_with(case, None).image, "intercostal view: rib shadows"))
    case = sample_case(261, depth_mm=200, steatosis_grade=3, events=False, ui=True,
                       diaphragm=True, n_lesions=0, view="subcostal")
    tiles.append(_tile(_frame_with(case, None).image, "S3 at 20 cm: lost penetration"))
    case = sample_case(262, depth_mm=160, steatosis_grade=2, events=False, ui=False,
                       gallbladder=True, kidney=True, n_lesions=0, view="subcostal")
    tiles.append(_tile(_frame_with(case, None).image, "S2: gallbladder, vessels, kidney"))
    while len(tiles) % 5:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i:i + 5]) for i in range(0, len(tiles), 5)]
    return np.vstack(rows)


def main(argv: list[str] | None = None) -> int:
    """Render the montage to ``--out``."""
    ap = argparse.ArgumentParser(description="render the simulator montage PNG")
    ap.add_argument("--out", default="docs/sim_montage.png")
    args = ap.parse_args(argv)
    img = build_montage()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({img.shape[1]}x{img.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
