#!/usr/bin/env bash
# One command for the figures that need a GPU (run it on a CUDA machine from the repo root):
#   1. stage 1 default recipe (U-Net resnet34, 256 px, 40 epochs, bf16, device augmentation) trained on
#      both ieee8023 sets with a patient-grouped split, then Dice/IoU/HD95 per set on the Test split;
#   2. stage 2 default recipe (ResNet-50, 224 px, 80 epochs, bf16) on the four PNG sets, raw and masked
#      (stage-1 predicted masks), patient-grouped split; the reference table on Test, per source set too;
#   3. benchmarks/throughput.py (U-Net and ResNet-50 training and inference img/s beside a naive baseline);
#   4. benchmarks/data_throughput.py (PNG DataLoader vs packed cache + device augmentation);
#   5. with STUDY=1 only: the full benchmarks/masked_vs_raw.py study (4 modes x 3 seeds; long).
# Usage: bash benchmarks/gpu_check.sh [DATA_ROOT] [OUT_DIR]
# Through the device tool (at most 8 files come back): copy the four PNG sets into .gpu_data/ (git-ignored),
#   carry it, and run: bash benchmarks/gpu_check.sh .gpu_data /tmp/gpu; tar czf $OUT/gpu.tgz -C /tmp gpu
#   DATA_ROOT defaults to $LUNGCLS_DATA, then ../shared/data; OUT_DIR to $OUT, then benchmarks/results/gpu.
# Packages: uses an installed lungcls if importable; else wheels in .whl/ (offline machines), else pip install -e .
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${LUNGCLS_DATA:-../shared/data}}
OUT=${2:-${OUT:-benchmarks/results/gpu}}
RUNS=${RUNS:-/tmp/lungcls-gpu-runs}
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import lungcls, segmentation_models_pytorch, albumentations" 2>/dev/null || python3 -m pip install -q -e .
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, lungcls; print('torch', torch.__version__, 'lungcls', lungcls.__version__)" | tee -a "$OUT/gpu.txt"

step() { echo; echo "== $*"; }
step "stage 1 default recipe"
start=$(date +%s)
python3 -m lungcls train-seg "$DATA/ieee8023-radiologist100" "$DATA/ieee8023-v7labs427" \
  --out "$RUNS/seg-default" --cache "$RUNS/cache-ieee-256" 2>&1 | grep -v "batch/s" | tee "$OUT/train_seg.log"
echo "train-seg wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/train_seg.log"
cp "$RUNS/seg-default/config.json" "$OUT/seg_default_config.json"
cp "$RUNS/seg-default/history.csv" "$OUT/seg_default_history.csv"
python3 -m lungcls evaluate-seg "$RUNS/cache-ieee-256" --model "$RUNS/seg-default" --split Test --out "$OUT" 2>&1 | grep -v "batch/s"

step "stage 2 default recipe, raw and masked"
SETS="$DATA/ieee8023-radiologist100 $DATA/ieee8023-v7labs427 $DATA/nih-cxr8 $DATA/covid19-radiography"
for mode in raw masked; do
  extra=""; [ "$mode" = raw ] || extra="--seg-model $RUNS/seg-default"
  start=$(date +%s)
  python3 -m lungcls train-cls $SETS --out "$RUNS/cls-$mode" --mode $mode $extra --cache "$RUNS/cache-cls-256" 2>&1 \
    | grep -v "batch/s" | tail -40 | tee "$OUT/train_cls_$mode.log"
  echo "train-cls $mode wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/train_cls_$mode.log"
  cp "$RUNS/cls-$mode/eval_test.json" "$OUT/cls_${mode}_eval_test.json"
  cp "$RUNS/cls-$mode/eval_test.md" "$OUT/cls_${mode}_eval_test.md"
done

step "throughput"
python3 benchmarks/throughput.py --device cuda --images 2048 --batch-size 64 --epochs 3 --out "$OUT" 2>&1 | tail -12
if [ "${STUDY:-0}" = 1 ]; then  # the full masked-vs-raw study: 4 modes x 3 seeds x 80 epochs (long; off by default)
  step "masked vs raw study"
  python3 benchmarks/masked_vs_raw.py $SETS --seg-model "$RUNS/seg-default" --device cuda --out "$OUT/study" 2>&1 \
    | grep -v "batch/s" | tail -30
fi

step "data throughput"
python3 benchmarks/data_throughput.py --device cuda --out "$OUT" 2>&1 | tail -12
ls -la "$OUT"
