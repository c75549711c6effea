"""Compare track / aggregate settings on cached clips, side by side in one run.

``benchmarks/eval_findings.py --cache DIR`` stores what the detector produced on each clip
(simulation, preprocess, quality and the models are the slow part). This script reads those
files once and replays every setting of a grid through ``track`` and ``aggregate`` only, so a
grid of tens of settings over 40 clips takes minutes, and every row sees the same frames.

Usage (tuning clips only; report on fresh seeds with eval_findings.py afterwards)::

    .venv/bin/python benchmarks/eval_findings.py --detector models --clips 40 \\
        --first-seed 930001 --cache runs/findings_cache --out runs/tuning
    .venv/bin/python benchmarks/tune_findings.py --clips 40 --first-seed 930001 \\
        --cache runs/findings_cache --grid '[{}, {"aggregate": {"min_track_frames": 6}}]' \\
        --out runs/tune_grid

Each grid entry is ``{"track": {...}, "aggregate": {...}}`` (either may be left out: the
stages' defaults). Writes ``<out>.json`` and ``<out>.md`` (the log-odds pooling's figures).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

_here = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("eval_findings", _here / "eval_findings.py")
ef = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("eval_findings", ef)
_spec.loader.exec_module(ef)

COLUMNS = (  # (label, lesion_level / case_level key, percent)
    ("recall >= 10 mm", "recall", True),
    ("recall (good frames)", "recall_good", True),
    ("false lesions / clip", "false_lesions_per_clip", False),
    ("false mimics / clip", "false_mimics_per_clip", False),
    ("fragmentation", "fragmentation", False),
    ("type accuracy", "type_accuracy", True),
    ("long axis within 15 %", "long_axis_within_15pct", True),
    ("US LI-RADS agreement", "lirads_agreement_case_truth", True),
    ("abstained", "lirads_abstained", None),
)


def headline(summary: dict[str, Any], method: str = "log_odds") -> dict[str, Any]:
    m = summary["methods"][method]
    both = {**m["lesion_level"], **m["case_level"]}
    return {key: both.get(key) for _, key, _ in COLUMNS}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--first-seed", type=int, required=True)
    ap.add_argument("--detector", default="models")
    ap.add_argument("--infer-config", type=json.loads, default=None,
                    help="the infer config the cache was made with (part of its key)")
    ap.add_argument("--quality-config", type=json.loads, default=None,
                    help="the quality config the cache was made with (part of its key)")
    ap.add_argument("--no-prep", action="store_true")
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--grid", type=json.loads, required=True,
                    help='JSON list of {"track": {...}, "aggregate": {...}}')
    ap.add_argument("--out", type=Path, required=True, help="output path without suffix")
    args = ap.parse_args(argv)
    stage_keys = [] if args.no_prep else ["preprocess", "quality"]
    seeds = range(args.first_seed, args.first_seed + args.clips)
    rows = {}
    for seed in seeds:
        path = ef._cache_path(args.cache, seed, args.frames, args.detector, stage_keys,
                              args.infer_config,
                              {"quality": args.quality_config} if args.quality_config else None)
        if not path.exists():
            raise SystemExit(f"tune_findings: {path} is missing: run benchmarks/eval_findings.py "
                             f"with the same --clips/--first-seed/--frames/--infer-config/"
                             f"--quality-config and "
                             f"--cache {args.cache} first")
        rows[seed] = ef.cached_rows(path)
    results = []
    t0 = time.perf_counter()
    for entry in args.grid:
        runs = [ef.replay_clip(seed, ef.frames_from_rows(rows[seed]), entry.get("track"),
                               entry.get("aggregate")) for seed in seeds]
        summary = ef.summarise(runs)
        results.append({"setting": entry, "log_odds": headline(summary),
                        "attention": headline(summary, "attention"),
                        "frame_level": summary["frame_level"],
                        "missed_by_cause": summary["methods"]["log_odds"]["lesion_level"][
                            "missed_by_cause"]})
        print(json.dumps(entry), json.dumps(results[-1]["log_odds"]), flush=True)
    seconds = time.perf_counter() - t0
    doc = {"clips": args.clips, "first_seed": args.first_seed, "frames": args.frames,
           "infer_config": args.infer_config, "cache": str(args.cache),
           "command": " ".join([".venv/bin/python", "benchmarks/tune_findings.py",
                                *[a if " " not in a else f"'{a}'" for a in
                                  (argv if argv is not None else sys.argv[1:])]]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "seconds": round(seconds, 1), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=str))
    head = "| setting | " + " | ".join(c for c, _, _ in COLUMNS) + " |"
    lines = [f"Clips: seeds {args.first_seed}..{args.first_seed + args.clips - 1}, "
             f"{args.frames} frames; infer config {args.infer_config or 'default'}; "
             f"log-odds pooling.  ", f"Command: `{doc['command']}`", "", head,
             "|" + "---|" * (len(COLUMNS) + 1)]
    for r in results:
        cells = []
        for _, key, pct in COLUMNS:
            v = r["log_odds"][key]
            cells.append(str(v) if pct is None else ef._f(v, pct))
        lines.append(f"| `{json.dumps(r['setting'])}` | " + " | ".join(cells) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
