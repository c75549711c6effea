#!/usr/bin/env bash
# Reproduce the shipped frame-network artifacts in models/weights/ (frame-v1-{fp32,int8},
# frame-v1-pruned-{fp32,int8}, their cards, frame-v1.pt / frame-v1-pruned.pt):
#   1. simulate the training / validation / held-out sets (cached under runs/cache/frame),
#   2. train in four stages (seeded, each time-boxed by [train].max_minutes; resumable with
#      --resume), each config naming the previous stage's checkpoint as its [train] init:
#        frame.toml          1800 cases from random weights        -> runs/frame/frame
#        frame_finetune.toml 3600 cases, from stage 1's best.pt     -> runs/frame/frame_finetune
#        frame_stage3b.toml  7200 cases, from stage 2's best.pt     -> runs/frame/s7
#        frame_stage4.toml  10800 cases, from stage 3b's last.pt    -> runs/frame/s8
#      (stage 4 validates on 300 cases with BatchNorm recalibrated before each validation),
#   3. export stage 4: ONNX fp32 with the card embedded, INT8 QDQ, pruned + fine-tuned
#      variants, each evaluated on the held-out seeds through ONNX Runtime,
#   4. export it again with frame_stage4_prune_long.toml (the pruned model's fine-tune given
#      110 minutes, session 7) and ship that export's pruned artifacts; the unpruned ones are
#      the same weights, and stay those of step 3 (their cards name stage 4's config hash).
# About 5 hours on the idle 2-core Intel Xeon VM (50 + 50 + 25 + 40 minutes of training, plus
# simulation, a 45-minute export and a 2-hour one).
# The lesion classifier is built separately:
#   sonoflow train lesion-classifier --config training/configs/lesion_classifier_6k.toml \
#       --out runs/cls/v6k && cp runs/cls/v6k/export/lesion-cls-v1-* models/weights/
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
train() { nice -n 5 "$BIN/sonoflow" train frame --config "training/configs/$1" --out "$2"; }
train frame.toml runs/frame/frame
train frame_finetune.toml runs/frame/frame_finetune
train frame_stage3b.toml runs/frame/s7
train frame_stage4.toml runs/frame/s8
nice -n 5 "$BIN/sonoflow" export frame --run runs/frame/s8 \
    --config training/configs/frame_stage4.toml --out models/weights
nice -n 5 "$BIN/sonoflow" export frame --run runs/frame/s8 \
    --config training/configs/frame_stage4_prune_long.toml --out runs/export_pruned_long
cp runs/export_pruned_long/frame-v1-pruned* models/weights/
