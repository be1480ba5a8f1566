#!/usr/bin/env bash
# The figures that need a GPU, in two calls that fit a 15-minute device budget (the machine's start, 2-4 min,
# included: 390 + 245 s of commands) and the 64 MiB a call can carry. Every step reads its data from DATA (nothing beside the
# checkout is used) and writes its results to OUT_DIR as soon as it ends; each step has its own time limit,
# and the limits of a part add up to less than the part's budget, so one archive always comes back.
#
#   part 1 (~6 min, eager, no compile): DATA holds the four shared PNG sets (ieee8023-radiologist100,
#     ieee8023-v7labs427, nih-cxr8, covid19-radiography; ~57 MiB). One patient-grouped split of the four sets,
#     made once (data split), shared by both stages. Stage 1 default recipe -> Dice/IoU/HD95 per set on Test;
#     stage 2 default recipe, raw and masked (stage-1 masks) -> the full reference tables on Test; the eager
#     speed table (throughput.py: U-Net and ResNet-50 training and inference, the whole Pipeline.predict, one
#     classifier epoch of 21,715 images, each beside a naive baseline).
#   part 2 (~4 min): DATA holds covidqu-infseg, a stated subset that fits a call (gpu_prepare.sh: its whole Val
#     split and a class-stratified part of Train). Test carved out of Train (data split); stage 1 default
#     recipe -> Dice on Val and on the carved Test; stage 2 raw and masked -> the seed's table on the carved
#     Test; then the data-throughput comparison and, while time is left, the compiled speed table with
#     torch.profiler tables.
#
# Usage: bash benchmarks/gpu_check.sh PART DATA OUT_DIR
#   SMOKE=1: a rehearsal with tiny models and 1 epoch, on whatever device there is (CPU included); the test
#   suite runs it from a copy of the repository with nothing beside it (tests/test_gpu_check.py).
# Through the device tool (prepare here first: bash benchmarks/gpu_prepare.sh; it prints both calls):
#   call 1: carry [".whl", ".gpu_data/shared"], timeout_s 420, command
#     timeout 390 bash benchmarks/gpu_check.sh 1 .gpu_data/shared /tmp/gpu1; tar czf $OUT/gpu1.tgz -C /tmp gpu1
#   call 2: carry [".whl", ".gpu_data/covidqu"], timeout_s 270, command
#     timeout 245 bash benchmarks/gpu_check.sh 2 .gpu_data/covidqu /tmp/gpu2; tar czf $OUT/gpu2.tgz -C /tmp gpu2
# Packages: wheels in .whl/ are installed to /tmp/site (offline machines); else an installed lungcls; else pip install -e .
set -uo pipefail
cd "$(dirname "$0")/.."
PART=${1:?usage: gpu_check.sh PART DATA OUT_DIR}
DATA=${2:?usage: gpu_check.sh PART DATA OUT_DIR}
RESULTS=${3:?usage: gpu_check.sh PART DATA OUT_DIR}
RUNS=${RUNS:-/tmp/lungcls-gpu-runs}
[ -d "$DATA" ] || { echo "no data folder $DATA"; exit 2; }
mkdir -p "$RESULTS" "$RUNS"
export PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}  # the checkout's lungcls (src layout), whatever else is installed
python3 -c "import lungcls, segmentation_models_pytorch" 2>/dev/null || python3 -m pip install -q -e .
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi (CPU)"
  python3 -c "import torch, lungcls; print('torch', torch.__version__, 'lungcls', lungcls.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$RESULTS/gpu.txt"

if [ "${SMOKE:-0}" = 1 ]; then  # tiny versions of every step: the script end to end in a few CPU minutes
  SEG_ARGS="--recipe demo --encoder-depth 3 --decoder-channels 8,8,8 --image-size 32 --epochs 1 --batch-size 8"
  CLS_ARGS="--recipe demo --image-size 32 --epochs 1 --batch-size 8"
  TP_ARGS="--images 8 --epochs 1 --batch-size 4 --cls-batch-size 4 --repeats 1 --encoder resnet18 --image-size 64 --cls-arch resnet18 --cls-image-size 32 --cls-epoch-images 16 --workers 0"
  DATA_ARGS="--epochs 1 --workers 0 --batch-size 8"
  COMPILE="--stages seg"  # eager here: compiling on a CPU takes minutes (tests/test_cuda_paths.py compiles a tiny model)
  SCALE=0  # no step limits in a rehearsal: it must run to the end
else  # the defaults of train-seg / train-cls are the recipes under test: pass nothing that changes them
  # (SEG_ARGS / CLS_ARGS in the environment add options, e.g. CLS_ARGS="--ema-epochs 2" to try a variant)
  SEG_ARGS=${SEG_ARGS:-} CLS_ARGS=${CLS_ARGS:-}
  TP_ARGS="--images 2048 --epochs 3 --batch-size 64 --cls-batch-size 256 --cls-epoch-images 21715 --repeats 5"
  DATA_ARGS=""
  COMPILE="--compile"
  SCALE=1
fi
step() { echo; echo "== $* ($(date +%T))"; }
timed() {  # timed LIMIT NAME CMD...: run CMD under LIMIT seconds (none when SMOKE), log to RESULTS/NAME.log
  local limit=$1 name=$2; shift 2
  local start=$SECONDS
  if [ "$SCALE" = 1 ]; then timeout "$limit" "$@" > "$RESULTS/$name.log" 2>&1; else "$@" > "$RESULTS/$name.log" 2>&1; fi
  local rc=$?
  grep -v -E "batch/s|it/s\]|img/s\]|USDT" "$RESULTS/$name.log" | tail -25
  echo "$name: exit $rc, $((SECONDS - start)) s (limit $limit s)" | tee -a "$RESULTS/steps.txt"
}
keep() {  # keep RUN PREFIX FILES...: copy a run's results next to the logs as they appear
  local run=$1 prefix=$2; shift 2
  for f in "$@"; do cp "$run/$f" "$RESULTS/${prefix}_$f" 2>/dev/null; done
}
split_once() {  # split_once NAME LIMIT SETS...: one split for both stages, written once
  # shellcheck disable=SC2068
  timed "$2" "split_$1" python3 -m lungcls data split ${@:3} --out "$RUNS/split-$1.csv" --test 0.2 --seed 0 --force
}
stage1() {  # stage1 NAME LIMIT: the default recipe on the split, evaluated on Val and Test
  # shellcheck disable=SC2086
  timed "$2" "train_seg_$1" python3 -m lungcls train-seg "$RUNS/split-$1.csv" --out "$RUNS/seg-$1" --cache "$RUNS/cache-$1" --overwrite -q $SEG_ARGS
  keep "$RUNS/seg-$1" "seg_$1" config.json history.csv eval_seg_val.md eval_seg_test.md eval_seg_val.json eval_seg_test.json outlines_test.png
}
stage2() {  # stage2 NAME MODE LIMIT: the default recipe on the same split (masked: the stage-1 run's masks)
  local masks=""; [ "$2" != raw ] && masks="--seg-model $RUNS/seg-$1"
  # shellcheck disable=SC2086
  timed "$3" "train_cls_$1_$2" python3 -m lungcls train-cls "$RUNS/split-$1.csv" --out "$RUNS/cls-$1-$2" --mode "$2" $masks --cache "$RUNS/cache-$1" --overwrite -q $CLS_ARGS
  keep "$RUNS/cls-$1-$2" "cls_$1_$2" config.json history.csv eval_test.md eval_test.json eval_val.md reliability_test.png
}

if [ "$PART" = 1 ]; then
  SETS="$DATA/ieee8023-radiologist100 $DATA/ieee8023-v7labs427 $DATA/nih-cxr8 $DATA/covid19-radiography"
  step "1. one split of the four shared sets (both stages use it)"; split_once shared 30 $SETS
  step "2. stage 1 default recipe, Dice per set on Test"; stage1 shared 60
  step "3. stage 2 default recipe, raw"; stage2 shared raw 80
  step "4. stage 2 default recipe, masked (stage-1 masks)"; stage2 shared masked 80
  step "5. eager speed table (every row, beside naive baselines)"
  # shellcheck disable=SC2086
  timed 110 throughput_eager python3 benchmarks/throughput.py --data $SETS --out "$RESULTS" $TP_ARGS
elif [ "$PART" = 2 ]; then
  step "1. covidqu-infseg: Val kept, Test carved out of Train"; split_once covidqu 20 "$DATA/covidqu-infseg"
  step "2. stage 1 default recipe on COVID-QU-Ex lung masks, Dice on Val and Test"; stage1 covidqu 50
  step "3. stage 2 raw"; stage2 covidqu raw 45
  step "4. stage 2 masked"; stage2 covidqu masked 45
  step "5. data throughput: PNG DataLoader vs packed cache + device augmentation"
  # shellcheck disable=SC2086
  timed 25 data_throughput python3 benchmarks/data_throughput.py --data "$DATA/covidqu-infseg" --out "$RESULTS" $DATA_ARGS
  step "6. compiled speed table and profiler tables, while time is left"
  # shellcheck disable=SC2086
  timed 45 throughput_compiled python3 benchmarks/throughput.py --data "$DATA/covidqu-infseg" --out "$RESULTS/compiled" --profile $COMPILE $TP_ARGS
else
  echo "PART must be 1 or 2, not $PART"; exit 2
fi
echo; cat "$RESULTS/steps.txt"; ls -la "$RESULTS"
