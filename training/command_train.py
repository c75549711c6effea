"""``sonoflow train TASK --config FILE [--out DIR] [--resume]`` (needs the ``train`` extra).

Tasks (the same words in configs, docs and logs):

* ``frame``: the frame network (detection, segmentation, grading), :mod:`.tasks.frame`;
* ``lesion-classifier``: the crop classifier, :mod:`.tasks.lesion_classifier`.

Each task's ``run(config_path, out_dir, resume, progress)`` trains, keeps ``config.toml``,
``metrics.jsonl``, ``last.pt``/``best.pt`` and a held-out report in ``out_dir``.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

TASKS: dict[str, str] = {
    "frame": "sonoflow.training.tasks.frame",
    "lesion-classifier": "sonoflow.training.tasks.lesion_classifier",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=sorted(TASKS), help="what to train")
    parser.add_argument("--config", required=True, type=Path, help="TOML config file")
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder (default runs/<task>/<config stem>)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import torch  # noqa: F401  (fail here, clearly, when the train extra is missing)

    module = importlib.import_module(TASKS[args.task])
    out = args.out or Path("runs") / args.task / args.config.stem
    summary = module.run(args.config, out, resume=args.resume, progress=not args.no_progress)
    print(json.dumps({"task": args.task, "out": str(out), **{k: v for k, v in summary.items()
                                                             if k != "heldout"}},
                     indent=2, default=str))
    print(f"run folder: {out}")
    return 0
