"""sonoflow.stream.sim: a numpy + OpenCV B-mode liver ultrasound simulator with exact truth.

Public API (see docs/simulator.md)::

    from sonoflow.stream.sim import sample_case, simulate_clip, SimFrame, Case
    case = sample_case(seed, steatosis_grade=2, n_lesions=3)
    for f in simulate_clip(case, n_frames=90, height=480, width=640, fps=30.0):
        f.image, f.lesion_ids, f.tissue, f.sector_mask, f.ui_text_mask, f.truth
"""

from sonoflow.stream.sim.case import Case, sample_case
from sonoflow.stream.sim.clip import SimFrame, simulate_clip

__all__ = ["Case", "SimFrame", "sample_case", "simulate_clip"]
