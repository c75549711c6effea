"""Frame-network compression benchmark: fp32 vs INT8 vs pruned fp32 vs pruned INT8 (ONNX
Runtime CPU), each also with the hflip test-time augmentation where its card has a threshold
for it, vs torch eager, on ONE thread, latency p50/p99 and held-out metrics, measured side by
side in one run.

Latency: the variants are timed round-robin (one call each per round, ``--rounds`` rounds
after ``--warmup``) on held-out simulator frames, so a load change on this shared machine hits
every variant alike. Metrics: the held-out split of the config (seeds never used in training),
good-quality frames, at each artifact's shipped heatmap threshold and at <= 0.1 FP/frame.

    .venv/bin/python benchmarks/bench_models.py --out benchmarks/results/models
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np


def percentile_ms(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1e3
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "n": int(a.size)}


def infer_stage_latency(args, search) -> dict[str, dict[str, float]]:
    """``InferStage.process`` per frame (letterbox, network, decode, mask warp, crops and the
    classifier when its artifact exists) on simulated 480 x 640 frames with lesions."""
    import numpy as np

    from sonoflow.models.errors import ModelError
    from sonoflow.models.registry import resolve
    from sonoflow.stream.errors import SonoflowError
    from sonoflow.stream.messages import FrameHeader, Packet, PreprocessResult
    from sonoflow.stream.sim import sample_case, simulate_clip
    from sonoflow.stream.stages.infer import InferStage

    frames = []
    for seed in (910001, 910002, 910003):
        case = sample_case(seed, n_lesions=3, ui=True, events=False)
        frames += list(simulate_clip(case, n_frames=10, height=480, width=640))
    try:
        resolve("lesion-cls-v1", "fp32", search)
        classifier = "lesion-cls-v1"
    except ModelError:
        classifier = ""
    out = {}
    for precision, tta in (("fp32", "none"), ("int8", "none"), ("fp32", "hflip"),
                           ("int8", "hflip")):
        cfg = {"frame_model": args.id, "classifier_model": classifier, "precision": precision,
               "classifier_precision": "fp32", "threads": 1, "tta": tta,
               "weights_dir": str(args.weights) if args.weights else ""}
        stage = InferStage(cfg)
        try:
            stage.open()
        except SonoflowError as e:  # a missing artifact: report it, time the others
            print(f"skip infer stage {precision} tta={tta}: {e}", file=sys.stderr)
            continue
        times = []
        for r in range(args.warmup + 100):
            f = frames[r % len(frames)]
            ys, xs = np.nonzero(f.sector_mask)
            h = FrameHeader(stream_id="b", seq=r, frame_index=r, pts=r, time_base=(1, 30),
                            capture_ns=0, pixel_format="gray8")
            h.preprocess = PreprocessResult(sector_xyxy_px=(int(xs.min()), int(ys.min()),
                                                            int(xs.max()) + 1, int(ys.max()) + 1))
            mask = f.sector_mask.astype(np.uint8) * 255
            pk = Packet(header=h, arrays={"gray": f.image & mask, "sector_mask": mask})
            t0 = time.perf_counter()
            stage.process(pk)
            if r >= args.warmup:
                times.append(time.perf_counter() - t0)
        stage.close()
        label = (f"{args.id}-{precision}" + (" hflip TTA" if tta == "hflip" else "")
                 + (f" + {classifier}-fp32" if classifier else ""))
        out[label] = percentile_ms(times)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=Path("training/configs/frame.toml"))
    p.add_argument("--weights", type=Path, default=None, help="default: models/weights")
    p.add_argument("--id", default="frame-v1")
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--no-metrics", action="store_true", help="latency only")
    p.add_argument("--no-stage", action="store_true", help="skip the infer-stage timing")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/models"))
    p.add_argument("--machine-note", default="",
                   help="free text stored with the machine, e.g. 'shared with other work'")
    args = p.parse_args(argv)

    import torch

    from sonoflow.models import registry, runtime
    from sonoflow.models.errors import ModelError
    from sonoflow.models.postprocess import heatmap_threshold_key
    from sonoflow.stream.bench.machine import machine
    from sonoflow.training.tasks import frame as task

    torch.set_num_threads(1)
    search = [args.weights] if args.weights else None
    cfg = task.load_config(args.config)
    norm = dict(cfg["model"]["normalisation"])
    held = task.load_split(cfg, "heldout", int(cfg["data"].get("workers", 2)))
    good = task.good_frames(held)
    frames = task.predict(lambda x: {"x": x}, held, good[:64], norm, 64)["x"]

    variants: dict[str, object] = {}
    for model_id in (args.id, f"{args.id}-pruned"):
        for precision in ("fp32", "int8"):
            try:
                path, card = registry.resolve(model_id, precision, search)
            except ModelError as e:  # report what is missing, benchmark the rest
                print(f"skip {model_id}-{precision}: {e}", file=sys.stderr)
                continue
            rt = runtime.load(path, "ort-cpu", threads=1, card=card)
            variants[f"{model_id}-{precision} ort-cpu"] = (rt, "none")
            if heatmap_threshold_key("hflip") in card.thresholds:
                variants[f"{model_id}-{precision} ort-cpu hflip TTA"] = (rt, "hflip")
    path, _ = registry.resolve(args.id, "fp32", search)
    variants[f"{args.id}-fp32 torch-eager"] = (runtime.load(path, "torch", threads=1), "none")

    # what each variant runs per frame: one call, or (hflip) two calls and the merge, exactly
    # as the infer stage does; the same functions time and score it
    outputs = {name: (task.hflip_outputs(task.ort_outputs(rt)) if tta == "hflip"
                      else task.ort_outputs(rt)) for name, (rt, tta) in variants.items()}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.warmup + args.rounds):
        x = frames[r % len(frames)][None]
        for name, fn in outputs.items():
            t0 = time.perf_counter()
            fn(x)
            if r >= args.warmup:
                times[name].append(time.perf_counter() - t0)

    results = {}
    for name, (rt, tta) in variants.items():
        card = rt.card
        thr = card.thresholds[heatmap_threshold_key(tta)]
        row = {"latency_ms": percentile_ms(times[name]), "params": card.params,
               "gflops": card.gflops, "pruning_ratio": card.pruning_ratio,
               "precision": rt.precision, "tta": tta, "heatmap_threshold": thr}
        if not args.no_metrics:
            res = task.evaluate(task.predict(outputs[name], held, good, norm), held, good, thr)
            row["heldout"] = {**task.headline(res),
                              "at_threshold": res["at_threshold"],
                              "n_frames": res["n_frames"],
                              "n_lesion_instances": res["n_lesion_instances"]}
        results[name] = row
    for rt, _ in variants.values():
        rt.close()

    stage_ms = None if args.no_stage else infer_stage_latency(args, search)
    base = results[f"{args.id}-fp32 ort-cpu"]["latency_ms"]["p50"]
    meta = {"command": "python benchmarks/bench_models.py " + " ".join(argv or sys.argv[1:]),
            "machine": machine(args.machine_note),
            "cpu": platform.processor() or platform.machine(), "date": str(date.today()),
            "threads": 1, "rounds": args.rounds, "warmup": args.warmup,
            "heldout_frames": int(len(good))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps({"meta": meta, "results": results,
                                                    "infer_stage": stage_ms},
                                                   indent=2, default=float))
    lines = ["| variant | params | GFLOPs | p50 ms | p99 ms | speed-up vs fp32 | "
             "recall >=10 mm | recall 5-10 mm | FP/frame | AP50 | lesion Dice | steatosis acc |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in results.items():
        lat = row["latency_ms"]
        h = row.get("heldout")
        if h:
            at = h["at_threshold"]
            rec = at["recall"]
            m = (f"{rec['ge10mm']['recall']:.3f} | {rec['5to10mm']['recall']:.3f} | "
                 f"{at['fp_per_frame']:.3f} | {h['ap50']:.3f} | {h['lesion_dice']:.3f} | "
                 f"{h['steatosis_accuracy']:.3f}")
        else:
            m = "- | - | - | - | - | -"
        lines.append(f"| {name} | {row['params']} | {row['gflops']:.3f} | {lat['p50']:.2f} | "
                     f"{lat['p99']:.2f} | {base / lat['p50']:.2f}x | {m} |")
    if stage_ms:
        lines += ["", "| infer stage, one 480 x 640 frame (1 thread) | p50 ms | p99 ms |",
                  "|---|---|---|"]
        lines += [f"| {k} | {v['p50']:.2f} | {v['p99']:.2f} |" for k, v in stage_ms.items()]
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
