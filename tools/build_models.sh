#!/usr/bin/env bash
# Reproduce the shipped frame-network artifacts in models/weights/ (frame-v1-{fp32,int8},
# frame-v1-pruned-{fp32,int8}, their cards, frame-v1.pt / frame-v1-pruned.pt):
#   1. simulate the training / validation / held-out sets (cached under runs/cache/frame),
#   2. train (seeded, time-boxed by [train].max_minutes; resumable with --resume),
#   3. export: ONNX fp32 with the card embedded, INT8 QDQ, pruned + fine-tuned variants,
#      each evaluated on the held-out seeds through ONNX Runtime.
# Usage: tools/build_models.sh [RUN_DIR]   (default runs/frame/frame)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RUN=${1:-runs/frame/frame}
CONFIG=training/configs/frame.toml
nice -n 5 "$BIN/sonoflow" train frame --config "$CONFIG" --out "$RUN"
nice -n 5 "$BIN/sonoflow" export frame --run "$RUN" --config "$CONFIG" --out models/weights
