#!/usr/bin/env bash
# Reproduce the shipped frame-network artifacts in models/weights/ (frame-v1-{fp32,int8},
# frame-v1-pruned-{fp32,int8}, their cards, frame-v1.pt / frame-v1-pruned.pt):
#   1. simulate the training / validation / held-out sets (cached under runs/cache/frame),
#   2. train in two stages (seeded, each time-boxed by [train].max_minutes; resumable with
#      --resume): frame.toml on 1800 cases, then frame_finetune.toml from its best weights on
#      3600 cases,
#   3. export: ONNX fp32 with the card embedded, INT8 QDQ, pruned + fine-tuned variants,
#      each evaluated on the held-out seeds through ONNX Runtime.
# Usage: tools/build_models.sh   (runs/frame/frame, then runs/frame/frame_finetune; the second
# stage's config names the first stage's best.pt as its init)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
nice -n 5 "$BIN/sonoflow" train frame --config training/configs/frame.toml --out runs/frame/frame
nice -n 5 "$BIN/sonoflow" train frame --config training/configs/frame_finetune.toml \
    --out runs/frame/frame_finetune
nice -n 5 "$BIN/sonoflow" export frame --run runs/frame/frame_finetune \
    --config training/configs/frame_finetune.toml --out models/weights
