"""``sonoflow export TASK --run DIR --config FILE [--out DIR] [--no-prune] [--no-int8]``.

Turns a trained run into shipped artifacts: ONNX fp32 with the model card embedded, static
INT8 QDQ (calibrated on simulator frames), a structurally pruned + fine-tuned variant of each,
and the torch checkpoint (for ``--backend torch``). Held-out metrics in every card are
measured through ONNX Runtime on the exported file itself.
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
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--run", required=True, type=Path, help="training run folder (best.pt)")
    parser.add_argument("--config", required=True, type=Path, help="the run's TOML config")
    parser.add_argument("--out", type=Path, default=Path("models/weights"),
                        help="where artifacts go (default models/weights)")
    parser.add_argument("--no-prune", action="store_true", help="skip the pruned variant")
    parser.add_argument("--no-int8", action="store_true", help="skip INT8 quantization")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="which checkpoint of the run to export (frame task)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from sonoflow.models.errors import ModelError

    module = importlib.import_module(TASKS[args.task])
    if not hasattr(module, "export_run"):
        raise ModelError(f"sonoflow export {args.task}: {TASKS[args.task]} has no export_run(); "
                         f"that task exports at the end of `sonoflow train {args.task}`")
    kwargs = {"checkpoint": args.checkpoint} if args.checkpoint != "best" else {}
    report = module.export_run(args.run, args.config, args.out, prune=not args.no_prune,
                               int8=not args.no_int8, progress=not args.no_progress, **kwargs)
    for name, a in report.get("artifacts", {}).items():
        print(json.dumps({"artifact": name, "bytes": a["bytes"], "gflops": round(a["gflops"], 4),
                          "params": a["params"]}))
    print(f"artifacts in {args.out}; report in {Path(args.run) / 'export_report.json'}")
    return 0
