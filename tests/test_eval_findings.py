"""Scoring rules of ``benchmarks/eval_findings.py`` on hand-made clips, its cache and
``benchmarks/tune_findings.py`` on short simulated clips (the noisy-truth detector, no models)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest


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


def test_a_missed_lesion_is_explained_by_its_frame_detections(eval_findings):
    ef = eval_findings
    run = _clip(ef, dark_frames=0, good_frames=20, reported=False)
    # the network found it on 4 frames, all in one track that was never reported
    run.frame_dets = [{"lesion_id": 1, "confidence": c, "track_id": 3}
                      for c in (0.3, 0.5, 0.4, 0.2)]
    score = ef.score_clip(run, "log_odds")
    (m,) = score["missed"]
    assert (m["lesion_id"], m["class"], m["frames_in_view"], m["frames_good"]) == (1, "hcc", 20, 20)
    assert (m["frames_detected"], m["tracks_matched"], m["max_confidence"]) == (4, 1, 0.5)
    assert ef.miss_cause(m).startswith("detected on some frames")
    assert ef.miss_cause({**m, "frames_detected": 0}).startswith("never detected")
    assert ef.miss_cause({**m, "frames_good": 0}).startswith("no good-quality frame")
    assert score["false_lesion_detail"] == []


def test_a_cached_clip_scores_exactly_as_the_uncached_run(eval_findings, tmp_path):
    ef = eval_findings
    args = (900002, 30, "gt-noise", ["preprocess", "quality"])
    agg = {"min_track_frames": 3}
    fresh = ef.run_clip(*args, aggregate_config=agg)
    assert fresh.frame_dets and fresh.cases["log_odds"]["lesions"]  # something to compare
    first = ef.run_clip(*args, aggregate_config=agg, cache=tmp_path)  # writes the cache
    (path,) = tmp_path.glob("900002_*.msgpack")
    stamp = path.stat().st_mtime_ns
    again = ef.run_clip(*args, aggregate_config=agg, cache=tmp_path)
    assert path.stat().st_mtime_ns == stamp  # read back, not recomputed
    for run in (first, again):
        assert run.frame_truth == fresh.frame_truth and run.frame_visible == fresh.frame_visible
        assert run.track_votes == fresh.track_votes and run.frame_dets == fresh.frame_dets
        for m in ("log_odds", "attention"):
            assert ef.score_clip(run, m) == ef.score_clip(fresh, m)
    # another frame count is another file
    ef.run_clip(900002, 12, "gt-noise", ["preprocess", "quality"], cache=tmp_path)
    assert len(list(tmp_path.glob("900002_*.msgpack"))) == 2


def test_a_lesion_listed_as_a_mimic_is_found_and_a_false_mimic_is_not_a_false_lesion(
        eval_findings):
    ef = eval_findings
    run = _clip(ef, dark_frames=0, good_frames=20, reported=True)
    case = run.cases["log_odds"]
    case["mimics"], case["lesions"] = case["lesions"], []  # the true lesion, listed as a mimic
    case["mimics"].append({"lesion_id": 9, "class": "other", "malignancy": 0.01,
                           "long_axis_mm": 12.0, "best_frame": 3, "n_frames": 15})
    run.track_votes[9] = Counter({0: 15})  # a track on no true lesion
    score = ef.score_clip(run, "log_odds")
    assert (score["eligible"], score["recalled"], score["recalled_as_mimic_only"]) == (1, 1, 1)
    assert (score["false_lesions"], score["false_mimics"]) == (0, 1)


def test_tune_findings_replays_a_grid_over_cached_clips(eval_findings, tmp_path):
    ef = eval_findings
    cache = tmp_path / "cache"
    agg = {"min_track_frames": 3}
    strict_agg = {"min_track_frames": 20}
    direct = {}
    for name, cfg in (("same", agg), ("strict", strict_agg)):
        runs = [ef.run_clip(s, 30, "gt-noise", ["preprocess", "quality"], aggregate_config=cfg,
                            cache=cache) for s in (900002, 900003)]
        direct[name] = ef.summarise(runs)["methods"]["log_odds"]
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "tune_findings.py"
    spec = importlib.util.spec_from_file_location("tune_findings", path)
    tf = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("tune_findings", tf)
    spec.loader.exec_module(tf)
    grid = [{"aggregate": agg}, {"aggregate": strict_agg}]
    out = tmp_path / "grid"
    assert tf.main(["--clips", "2", "--frames", "30", "--first-seed", "900002",
                    "--detector", "gt-noise", "--cache", str(cache), "--grid", json.dumps(grid),
                    "--out", str(out)]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    rows = dict(zip(("same", "strict"), (r["log_odds"] for r in doc["results"]), strict=True))
    for name, row in rows.items():  # each grid row = the full evaluation with that setting
        both = {**direct[name]["lesion_level"], **direct[name]["case_level"]}
        assert row == {k: both.get(k) for k in row}
    assert rows["same"]["false_lesions_per_clip"] != rows["strict"]["false_lesions_per_clip"] \
        or rows["same"]["recall"] != rows["strict"]["recall"]  # the setting mattered
    assert "min_track_frames" in out.with_suffix(".md").read_text()
    # a clip that was never cached is named, not silently skipped
    with pytest.raises(SystemExit, match="missing"):
        tf.main(["--clips", "3", "--frames", "30", "--first-seed", "900002", "--detector",
                 "gt-noise", "--cache", str(cache), "--grid", "[{}]", "--out", str(out)])
