#!/usr/bin/env bash
# Reproduce the input gate's threshold shipped in src/lungcls/builtin/unet-r18-covidqu/config.json (section "gate"):
# the built-in lung segmenter's split of covidqu-infseg, its cache, and the 99.5th percentile of the gate's feature
# distance on its Val images. A few minutes on 2 CPU cores. Usage: bash scripts/builtin_gate.sh [DATA_ROOT] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${LUNGCLS_DATA:-../shared/data}}
WORK=${2:-runs/gate}
mkdir -p "$WORK"
lungcls data split "$DATA/covidqu-infseg" --out "$WORK/split.csv" --test 0.15 --seed 0 --force
lungcls prepare "$WORK/split.csv" --out "$WORK/cache" --size 256
python3 -m lungcls.builtin.package_gate --cache "$WORK/cache"
