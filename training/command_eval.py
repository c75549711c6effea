"""``sonoflow eval``: evaluate the shipped models on simulator clips or real data.

    sonoflow eval --data DIR --out DIR [--model ID ...] [--precision fp32|int8]
                  [--backend ort-cpu] [--kfold K --checkpoint best.pt --config FILE]

``--data`` is either a folder of simulator clips (``<clip>.npz`` or ``.mp4`` with
``<clip>.gt.json`` and ``<clip>.masks.npz``, as ``sonoflow simulate`` writes them) or real
data in any form ``sonoflow.training.data.real`` reads (the ``liver_lesions`` layout, image +
mask folders, COCO JSON, DICOM). Writes ``eval.json`` (simulator) or ``real_eval.json`` (real)
plus PNG plots (confusion matrices, calibration curves, ROC) into ``--out``.

``--model`` names the artifacts to evaluate (repeatable; ``lesion-cls-*`` ids are the
classifier, ``frame-*`` the frame network). Without it every shipped model is evaluated; a
model named explicitly that is not shipped is an error, never skipped. ``--kfold K`` (real
data only, needs torch) also fine-tunes the classifier checkpoint on the real images, K-fold
stratified, and reports the out-of-fold AUC next to the synthetic-only one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_CLASSIFIER = "lesion-cls-v1"
DEFAULT_FRAME = "frame-v1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="simulator clip folder or real-data path")
    parser.add_argument("--out", required=True, help="output folder (JSON + PNG)")
    parser.add_argument("--model", action="append", default=None,
                        help="model id to evaluate (repeatable); default: every shipped model")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"))
    parser.add_argument("--backend", default="ort-cpu",
                        help="ort-cpu | ort-cuda | ort-tensorrt | tensorrt")
    parser.add_argument("--max-fp-per-frame", type=float, default=0.1,
                        help="detection operating point (issue 5: 0.1)")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for CIs")
    parser.add_argument("--kfold", type=int, default=0,
                        help="real data: also fine-tune the classifier K-fold (needs torch)")
    parser.add_argument("--kfold-steps", type=int, default=150,
                        help="optimiser steps per fold (batch 32) for --kfold")
    parser.add_argument("--checkpoint", default=None, help="classifier best.pt for --kfold")
    parser.add_argument("--config", default="training/configs/lesion_classifier.toml",
                        help="classifier config for --kfold")


def _pick_models(requested: list[str] | None, precision: str) -> tuple[str | None, str | None]:
    """(classifier id, frame id) to evaluate; explicit ids must exist."""
    from sonoflow.models.registry import available
    from sonoflow.stream.errors import ConfigError

    shipped = {m for m, p, _ in available() if p == precision}
    if requested:
        cls = [m for m in requested if m.startswith("lesion-cls")]
        frm = [m for m in requested if m.startswith("frame")]
        other = [m for m in requested if m not in cls + frm]
        if other or len(cls) > 1 or len(frm) > 1:
            raise ConfigError(f"--model {requested}: expected at most one lesion-cls-* and one "
                              f"frame-* id; shipped at {precision}: {sorted(shipped) or 'none'}")
        return (cls[0] if cls else None), (frm[0] if frm else None)
    return ((DEFAULT_CLASSIFIER if DEFAULT_CLASSIFIER in shipped else None),
            (DEFAULT_FRAME if DEFAULT_FRAME in shipped else None))


def run(args: argparse.Namespace) -> int:
    from sonoflow.stream.errors import ConfigError
    from sonoflow.training import evaluate

    data, out = Path(args.data), Path(args.out)
    if not data.exists():
        raise ConfigError(f"--data {data}: no such file or folder")
    cls_id, frame_id = _pick_models(args.model, args.precision)
    is_sim = data.is_dir() and any(data.glob("*.gt.json"))
    if not (cls_id or frame_id):
        raise ConfigError(f"no model to evaluate: none shipped at {args.precision} and none "
                          "named with --model; build them with tools/build_models.sh")
    if is_sim:
        rep = evaluate.evaluate_sim_folder(data, out, cls_id, frame_id, args.precision,
                                           args.backend, args.max_fp_per_frame, args.n_boot)
    else:
        rep = evaluate.evaluate_real_folder(data, out, cls_id, frame_id, args.precision,
                                            args.backend, args.n_boot)
        if args.kfold:
            if not args.checkpoint:
                raise ConfigError("--kfold needs --checkpoint (the classifier's best.pt)")
            from sonoflow.training.tasks.lesion_classifier import kfold_real, load_config

            rep["kfold"] = kfold_real(load_config(args.config), args.checkpoint, data,
                                      k=args.kfold, steps=args.kfold_steps,
                                      n_boot=args.n_boot)
            evaluate.write_json(out / "real_eval.json", rep)
    print(json.dumps(evaluate._clean(evaluate.summary_lines(rep)), indent=2))
    return 0
