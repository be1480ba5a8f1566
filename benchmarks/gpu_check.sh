#!/usr/bin/env bash
# One command for the figures that need a GPU (run it on a CUDA machine from the repo root):
#   1. stage 1 default recipe (U-Net resnet34, 256 px, 40 epochs, bf16, device augmentation) trained on
#      both ieee8023 sets with a patient-grouped split, then Dice/IoU/HD95 per set on the Test split;
#   2. stage 2 default recipe (ResNet-50, 224 px, 80 epochs, bf16) on the four PNG sets in raw mode,
#      patient-grouped split; the reference table on Test, per source set too;
#   3. benchmarks/throughput.py: every row of the speed issue's table (U-Net and ResNet-50 training and
#      inference, the whole Pipeline.predict, one classifier epoch of 21,715 images), each beside a naive
#      baseline, compiled, with peak GPU memory and a torch.profiler table per stage;
#   4. stage 2 in masked mode (stage-1 predicted masks), as in 2;
#   5. benchmarks/data_throughput.py (PNG DataLoader vs packed cache + device augmentation);
#   6. with STUDY=1 only: the full benchmarks/masked_vs_raw.py study (4 modes x 3 seeds; long).
# Steps run in that order, each under its own time limit (STEP_LIMITS), so a slow one cannot starve the rest;
# results go to OUT_DIR as each step ends. Expected on one H100: 7-9 minutes in all (torch.compile of the
# throughput step: about 1 minute per model and mode; a stage that fails to compile is measured eager).
#
# Usage: bash benchmarks/gpu_check.sh [DATA_ROOT] [OUT_DIR]
#   DATA_ROOT defaults to $LUNGCLS_DATA, then ../shared/data; OUT_DIR to benchmarks/results/gpu.
#   SMOKE=1: a rehearsal with tiny models and 1-2 epochs, on whatever device there is (CPU included), to
#   check the script end to end before spending GPU time: SMOKE=1 bash benchmarks/gpu_check.sh
# Through the device tool: run `bash benchmarks/gpu_prepare.sh` here first (wheels into .whl/, the four PNG
#   sets into .gpu_data/, both git-ignored, about 57 MiB), then call run with carry [".whl", ".gpu_data"],
#   timeout_s 600 and the command
#     timeout 580 bash benchmarks/gpu_check.sh .gpu_data /tmp/gpu; tar czf $OUT/gpu.tgz -C /tmp gpu
#   (one file comes back even if a step overran; unpack it with tar xzf).
# Packages: wheels in .whl/ are installed to /tmp/site (offline machines); else an installed lungcls; else pip install -e .
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${LUNGCLS_DATA:-../shared/data}}
RESULTS=${2:-benchmarks/results/gpu}
RUNS=${RUNS:-/tmp/lungcls-gpu-runs}
mkdir -p "$RESULTS" "$RUNS"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import lungcls, segmentation_models_pytorch" 2>/dev/null || python3 -m pip install -q -e .
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi (CPU)"
  python3 -c "import torch, lungcls; print('torch', torch.__version__, 'lungcls', lungcls.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$RESULTS/gpu.txt"

# step limits in seconds: seg, cls raw, throughput, cls masked, data throughput
read -r L_SEG L_RAW L_TP L_MASKED L_DATA <<< "${STEP_LIMITS:-100 130 300 130 50}"
if [ "${SMOKE:-0}" = 1 ]; then  # tiny versions of every step (minutes on a CPU)
  SEG_ARGS="--encoder resnet18 --encoder-depth 3 --image-size 64 --epochs 1 --batch-size 16"
  CLS_ARGS="--arch resnet18 --image-size 64 --epochs 1 --batch-size 32"
  TP_ARGS="--images 16 --epochs 2 --batch-size 4 --cls-batch-size 4 --repeats 1 --encoder resnet18 --image-size 64 --cls-arch resnet18 --cls-image-size 64 --cls-epoch-images 40 --workers 2 --profile"
  DATA_ARGS="--epochs 1 --workers 2"
  L_SEG=600 L_RAW=600 L_TP=600 L_MASKED=600 L_DATA=600
else  # the defaults of train-seg / train-cls are the recipes under test: pass nothing that changes them
  # (SEG_ARGS / CLS_ARGS in the environment add options, e.g. CLS_ARGS="--ema-epochs 2" to try a variant)
  SEG_ARGS=${SEG_ARGS:-} CLS_ARGS=${CLS_ARGS:-}
  TP_ARGS="--images 2048 --epochs 3 --batch-size 64 --cls-batch-size 256 --cls-epoch-images 21715 --repeats 5 --compile --profile"
  DATA_ARGS=""
fi
step() { echo; echo "== $* ($(date +%T))"; }
timed() {  # timed LIMIT NAME CMD...: run CMD under LIMIT seconds, log to RESULTS/NAME.log, record its wall time
  local limit=$1 name=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$RESULTS/$name.log" 2>&1
  local rc=$?
  grep -v -E "batch/s|it/s\]|USDT" "$RESULTS/$name.log" | tail -25
  echo "$name: exit $rc, $((SECONDS - start)) s (limit $limit s)" | tee -a "$RESULTS/steps.txt"
}
SETS="$DATA/ieee8023-radiologist100 $DATA/ieee8023-v7labs427 $DATA/nih-cxr8 $DATA/covid19-radiography"

step "1. stage 1 default recipe"
# shellcheck disable=SC2086
timed "$L_SEG" train_seg python3 -m lungcls train-seg "$DATA/ieee8023-radiologist100" "$DATA/ieee8023-v7labs427" \
  --out "$RUNS/seg-default" --cache "$RUNS/cache-ieee" $SEG_ARGS
cp "$RUNS/seg-default/config.json" "$RESULTS/seg_default_config.json" 2>/dev/null
cp "$RUNS/seg-default/history.csv" "$RESULTS/seg_default_history.csv" 2>/dev/null
timed 60 evaluate_seg python3 -m lungcls evaluate-seg "$RUNS/cache-ieee" --model "$RUNS/seg-default" --split Test --out "$RESULTS"

cls_mode() {  # cls_mode MODE LIMIT [extra args]
  local mode=$1 limit=$2; shift 2
  # shellcheck disable=SC2086
  timed "$limit" "train_cls_$mode" python3 -m lungcls train-cls $SETS --out "$RUNS/cls-$mode" --mode "$mode" \
    --cache "$RUNS/cache-cls" $CLS_ARGS "$@"
  for f in eval_test.json eval_test.md eval_val.md history.csv config.json; do
    cp "$RUNS/cls-$mode/$f" "$RESULTS/cls_${mode}_$f" 2>/dev/null
  done
}
step "2. stage 2 default recipe, raw"
cls_mode raw "$L_RAW"

step "3. throughput (every row of the speed table)"
# shellcheck disable=SC2086
timed "$L_TP" throughput python3 benchmarks/throughput.py --out "$RESULTS" $TP_ARGS

step "4. stage 2 default recipe, masked (stage-1 predicted masks)"
cls_mode masked "$L_MASKED" --seg-model "$RUNS/seg-default"

step "5. data throughput"
# shellcheck disable=SC2086
timed "$L_DATA" data_throughput python3 benchmarks/data_throughput.py --out "$RESULTS" $DATA_ARGS

if [ "${STUDY:-0}" = 1 ]; then  # the full masked-vs-raw study: 4 modes x 3 seeds x 80 epochs (long; off by default)
  step "6. masked vs raw study"
  # shellcheck disable=SC2086
  timed 3600 study python3 benchmarks/masked_vs_raw.py $SETS --seg-model "$RUNS/seg-default" --out "$RESULTS/study"
fi
echo; cat "$RESULTS/steps.txt"; ls -la "$RESULTS"
