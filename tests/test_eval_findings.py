"""Scoring rules of ``benchmarks/eval_findings.py`` on hand-made clips (no simulator, no models)."""

from __future__ import annotations

from collections import Counter


def _clip(ef, dark_frames: int, good_frames: int, reported: bool):
    """One 20 mm HCC in view on ``dark_frames`` too-dark frames, then ``good_frames`` good ones."""
    truth = {"lesions": [{"lesion_id": 1, "class": "hcc", "diameter_mm": 20.0,
                          "lirads_category": "US-3"}],
             "lirads_category": "US-3", "steatosis_grade": 0, "fibrosis_stage": 0}
    frames = []
    for i in range(dark_frames + good_frames):
        frames.append({"frame_index": i,
                       "quality_label": "too_dark" if i < dark_frames else "good",
                       "lesions": [{"lesion_id": 1, "diameter_mm": 20.0,
                                    "xyxy_px": [10, 10, 30, 30]}]})
    lesions = [{"lesion_id": 7, "class": "hcc", "malignancy": 0.9, "long_axis_mm": 20.0,
                "best_frame": dark_frames, "n_frames": good_frames}] if reported else []
    case = {"lesions": lesions, "lirads": {"category": "US-3" if reported else "US-1"},
            "steatosis": {"grade": "S0"}, "fibrosis": {"stage": "F0"},
            "frames": {"total": len(frames)}}
    run = ef.ClipRun(seed=1, truth=truth, frame_truth=frames, cases={"log_odds": case},
                     frame_visible=[{1: True} for _ in frames])
    if reported:
        run.track_votes = {7: Counter({1: good_frames})}
    return run


def test_a_lesion_seen_only_on_too_dark_frames_is_eligible_but_not_eligible_on_good_frames(
        eval_findings):
    ef = eval_findings
    run = _clip(ef, dark_frames=40, good_frames=3, reported=False)
    table = ef.truth_lesion_table(run)
    assert table[1]["frames"] == 43 and table[1]["frames_good"] == 3
    score = ef.score_clip(run, "log_odds")
    assert (score["eligible"], score["recalled"]) == (1, 0)  # the headline rule counts the miss
    assert (score["eligible_good"], score["recalled_good"]) == (0, 0)


def test_a_lesion_found_on_good_frames_counts_in_both_recalls(eval_findings):
    ef = eval_findings
    score = ef.score_clip(_clip(ef, dark_frames=5, good_frames=20, reported=True), "log_odds")
    assert (score["eligible"], score["recalled"]) == (1, 1)
    assert (score["eligible_good"], score["recalled_good"]) == (1, 1)
    assert score["false_lesions"] == 0 and score["type_hits"] == [True]
