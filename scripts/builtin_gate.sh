#!/usr/bin/env bash
# Reproduce the built-in input gate shipped in src/lungcls/builtin/gate-covidqu: the built-in lung segmenter's split
# of covidqu-infseg, its cache, and the gate's fit (feature distribution on Train, threshold on Val). A few minutes
# on 2 CPU cores. Usage: bash scripts/builtin_gate.sh [DATA_ROOT] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${LUNGCLS_DATA:-../shared/data}}
WORK=${2:-runs/gate}
mkdir -p "$WORK"
lungcls data split "$DATA/covidqu-infseg" --out "$WORK/split.csv" --test 0.15 --seed 0 --force
lungcls prepare "$WORK/split.csv" --out "$WORK/cache" --size 256
python3 -m lungcls.builtin.package_gate --cache "$WORK/cache" --out src/lungcls/builtin/gate-covidqu
lungcls models
