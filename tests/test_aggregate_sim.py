"""Track + aggregate on a simulated sweep (real masks and motion), detections from the truth.

The detections are the simulator's ground truth degraded by the evaluation's noise model
(``benchmarks/eval_findings.py``: misses, box jitter, noisy class probabilities, false
positives), so this checks tracking and aggregation, not the models.
"""

from __future__ import annotations

import pytest

from sonoflow.stream.messages import EosHeader, FrameHeader, Packet
from sonoflow.stream.stages.aggregate import AggregateStage
from sonoflow.stream.stages.track import TrackStage

pytestmark = pytest.mark.slow


def test_two_lesion_sweep_gives_two_lesions_with_sizes_and_lirads(eval_findings):
    sim = pytest.importorskip("sonoflow.stream.sim", reason="simulator not built yet")
    ef = eval_findings
    seed, n = 2024, 90  # an HCC (25 mm) and a cyst (21 mm), in view from frames 36 and 24
    case = sim.sample_case(seed)
    truth = case.truth()
    mm = case.mm_per_px(240, 320)
    detector = ef.GroundTruthNoiseDetector(seed, truth)
    track = TrackStage()
    agg = AggregateStage({"lirads_min_good_frames": 20})
    max_inplane: dict[int, float] = {}
    for f in sim.simulate_clip(case, n_frames=n, height=240, width=320, fps=30.0):
        for les in f.truth["lesions"]:
            lid = int(les["lesion_id"])
            max_inplane[lid] = max(max_inplane.get(lid, 0.0), float(les["diameter_mm"]))
        header = FrameHeader(stream_id="s", seq=f.frame_index, frame_index=f.frame_index,
                             pts=f.frame_index, time_base=(1, 30), capture_ns=0,
                             pixel_format="gray8", pixel_spacing_mm=mm,
                             spacing_source="simulator", source=f"sim:seed={seed}")
        infer, lesion_mask = detector.detect(f, mm)
        header.infer, header.status = infer, "analysed"
        agg.process(track.process(Packet(header, {"image": f.image,
                                                  "lesion_mask": lesion_mask})))
    (case_packet,) = agg.flush(Packet(EosHeader(stream_id="s", last_seq=n - 1,
                                                frames_total=n)))
    out = case_packet.header.case
    assert out["frames"]["total"] == n
    assert sorted(les["class"] for les in out["lesions"]) == ["cyst", "hcc"]
    by_class = {les["class"]: les for les in out["lesions"]}
    true_ids = {ef.SIM_TO_TYPE[t["class"]]: int(t["lesion_id"]) for t in truth["lesions"]}
    for cls, les in by_class.items():
        true_mm = max_inplane[true_ids[cls]]
        assert les["long_axis_mm"] == pytest.approx(true_mm, rel=0.15)
    assert out["lirads"]["category"] == "US-3"  # the 25 mm HCC
    assert set(case_packet.arrays) == {f"thumb_{les['lesion_id']}" for les in out["lesions"]}
