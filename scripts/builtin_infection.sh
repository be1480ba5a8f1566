#!/usr/bin/env bash
# Reproduce the built-in infection segmenter shipped in src/lungcls/builtin/unet-r18-infection from covidqu-infseg:
# the split (the built-in lung segmenter's: Val as published, Test carved out of Train with the same seed, so
# neither model saw a Test image), the cache of infection masks, the training (recipe `infection`, started from
# the built-in lung segmenter's weights, within a time budget), and the packaging (float16 weights, config,
# image hashes, model card with the figures).
# About 90 minutes on 2 CPU cores (at most TIME_BUDGET seconds, default 5400: fewer epochs when the CPU is slower);
# minutes on a GPU (DEVICE=cuda).
# Usage: bash scripts/builtin_infection.sh [DATA_ROOT] [WORK_DIR]   (DATA_ROOT: $LUNGCLS_DATA, then ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${LUNGCLS_DATA:-../shared/data}}
WORK=${2:-runs/infection}
DEVICE=${DEVICE:-auto}
NAME=unet-r18-infection
mkdir -p "$WORK"
lungcls data split "$DATA/covidqu-infseg" --masks infection --out "$WORK/split.csv" --test 0.15 --seed 0 --force
lungcls prepare "$WORK/split.csv" --masks infection --out "$WORK/cache" --size 256
lungcls train-seg "$WORK/cache" --out "$WORK/run" --recipe infection --seed 0 --device "$DEVICE" --overwrite \
  --encoder-weights src/lungcls/builtin/unet-r18-covidqu/model.safetensors --time-budget "${TIME_BUDGET:-5400}"
python3 -m lungcls.builtin.package_infection "$WORK/run" --name "$NAME" --cache "$WORK/cache" --out "src/lungcls/builtin/$NAME" \
  --where "${WHERE:-on the CPU here ($(nproc) cores, torch $(python3 -c "import torch; print(torch.__version__)"))}" --results benchmarks/results/builtin_infection.md
lungcls models
