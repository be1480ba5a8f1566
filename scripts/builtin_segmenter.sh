#!/usr/bin/env bash
# Reproduce the built-in lung segmenter shipped in src/lungcls/builtin/unet-r18-covidqu from covidqu-infseg:
# the split (Val as published, Test carved out of Train), the cache, the training (recipe `builtin`), and
# the packaging (float16 weights of the stages used, config, image hashes, model card with Dice per set).
# About an hour on 2 CPU cores; a few minutes on a GPU (pass --device cuda through DEVICE=cuda).
# Usage: bash scripts/builtin_segmenter.sh [DATA_ROOT] [WORK_DIR]   (DATA_ROOT: $LUNGCLS_DATA, then ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${LUNGCLS_DATA:-../shared/data}}
WORK=${2:-runs/builtin}
DEVICE=${DEVICE:-auto}
NAME=unet-r18-covidqu
mkdir -p "$WORK"
lungcls data split "$DATA/covidqu-infseg" --out "$WORK/split.csv" --test 0.15 --seed 0 --force
lungcls prepare "$WORK/split.csv" --out "$WORK/cache" --size 256
lungcls train-seg "$WORK/cache" --out "$WORK/run" --recipe builtin --seed 0 --device "$DEVICE" --overwrite
python3 -m lungcls.builtin.package "$WORK/run" --name "$NAME" --cache "$WORK/cache" \
  --other "$DATA/ieee8023-v7labs427" "$DATA/ieee8023-radiologist100" --out "src/lungcls/builtin/$NAME" \
  --where "${WHERE:-on the CPU}"
lungcls models
