#!/usr/bin/env bash
# The figures that need a GPU, in one 15-minute device window (benchmarks/README.md, "The GPU plan"): each
# call carries ONE archive made here by gpu_pack.py (prepare both with gpu_prepare.sh) and gets a budget in
# seconds, which it shares out to trainings that each end inside their share (--time-budget): nothing is
# killed, and every run evaluates and saves.
#
#   PART covidqu: ARCHIVE = covidqu-infseg, all 4,384 images (WebP q90, masks exact) and the split made from
#     the original PNGs (Val kept, Test carved out of Train). The recipe study (recipe_study.py): stage-1 grid,
#     stage-2 grid ranked on Val (Test for the chosen point only), then the seed experiment (raw, masked-gt,
#     masked, masked-cropped x 5 seeds) with the chosen recipes, analysed as the masked-vs-raw study analyses its
#     runs (analyse_runs.py: clusters, two-level intervals, non-inferiority, power, calibration; 90 s kept).
#     Beside the study, on the same GPU: the infection segmenter at 256 px (recipe infection-gpu, started from the
#     built-in lung segmenter's weights) on the infection split carried in the archive, within INFECTION_SHARE % of
#     the study's seconds, packaged there (float16, 6 MB) into OUT_DIR/infection-candidate/ (its run's history and
#     reports in OUT_DIR/infection-run/); here it is packaged again from the original PNGs, which also records their
#     content hashes: python -m lungcls.builtin.package_infection OUT_DIR/infection-candidate --name
#     unet-r18-infection --cache runs/infection/cache --out src/lungcls/builtin/unet-r18-infection --results
#     benchmarks/results/builtin_infection.md.
#   PART shared: ARCHIVE = the four small shared sets (WebP q95, masks exact) and their split. The chosen recipes
#     (WINNER_SEG / WINNER_CLS: JSON overrides, from part covidqu's winner_*.json; default: the default recipes)
#     trained on them: stage 1, then stage 2 raw, masked and masked-cropped x 3 seeds, evaluated on Test.
#
# Usage: bash benchmarks/gpu_check.sh PART ARCHIVE OUT_DIR BUDGET_SECONDS
#   SMOKE=1: the same on whatever device there is (a CPU too), tiny models; tests/test_gpu_check.py runs it from
#   a copy of the repository with nothing beside it, with archives made by gpu_pack.py from small real data.
# Packages: wheels in .whl/ are installed to /tmp/site (offline machines); else an installed lungcls; else pip install -e .
set -uo pipefail
cd "$(dirname "$0")/.."
PART=${1:?usage: gpu_check.sh PART ARCHIVE OUT_DIR BUDGET_SECONDS}
ARCHIVE=${2:?usage: gpu_check.sh PART ARCHIVE OUT_DIR BUDGET_SECONDS}
RESULTS=${3:?usage: gpu_check.sh PART ARCHIVE OUT_DIR BUDGET_SECONDS}
BUDGET=${4:?usage: gpu_check.sh PART ARCHIVE OUT_DIR BUDGET_SECONDS}
WORK=${WORK:-/tmp/lungcls-gpu-$PART}
START=$SECONDS
[ -f "$ARCHIVE" ] || { echo "no archive $ARCHIVE (make it with benchmarks/gpu_prepare.sh)"; exit 2; }
mkdir -p "$RESULTS" "$WORK"
export PYTHONUNBUFFERED=1
export TORCHINDUCTOR_FX_GRAPH_CACHE=1 TORCHINDUCTOR_CACHE_DIR=$WORK/inductor  # compile caches shared by the runs
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}  # the checkout's lungcls (src layout), whatever else is installed
python3 -c "import lungcls, segmentation_models_pytorch" 2>/dev/null || python3 -m pip install -q -e .
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi (CPU)"
  python3 -c "import torch, lungcls; print('torch', torch.__version__, 'lungcls', lungcls.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$RESULTS/gpu.txt"

echo "== unpack $ARCHIVE ($(date +%T))"
python3 benchmarks/gpu_pack.py unpack "$ARCHIVE" "$WORK/data" > "$RESULTS/unpack.json" || exit 3
if [ "${SMOKE:-0}" = 1 ]; then
  STUDY="--grid smoke --parallel 4 --seeds 1 --max-epochs 2 --fixed-guess 10"
  SEEDS=1
  INFECTION_SMOKE="--epochs 1 --image-size 64 --batch-size 4"
else
  STUDY="--grid gpu --parallel 8 --seeds 2 --max-epochs 300"
  SEEDS=5
fi
ANALYSIS=0  # seconds kept for the seed experiment's statistics (part covidqu), on the CPUs
[ "$PART" = covidqu ] && { [ "${SMOKE:-0}" = 1 ] && ANALYSIS=10 || ANALYSIS=90; }
LEFT=$((BUDGET - (SECONDS - START) - 15 - ANALYSIS))  # 15 s kept for copying the results
echo "== $PART: ${LEFT} s for the study ($(date +%T))"
infection() {  # the infection segmenter beside the study (issue 24): prepare, train within $1 s, copy the run back
  local W=$WORK/infection
  lungcls prepare "$WORK/data/split-infection.csv" --masks infection --out "$W/cache" --size 256 -q --force &&
  # shellcheck disable=SC2086
  lungcls train-seg "$W/cache" --out "$W/run" --recipe infection-gpu --seed 0 --overwrite -q --time-budget "$1" \
    --encoder-weights src/lungcls/builtin/unet-r18-covidqu/model.safetensors ${INFECTION_SMOKE:-}
  local rc=$?
  [ $rc = 0 ] && { python3 -m lungcls.builtin.package_infection "$W/run" --name unet-r18-infection --cache "$W/cache" \
    --out "$RESULTS/infection-candidate" --where "on one $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null \
    || echo CPU) (GPU plan, WebP q90 images)"; rc=$?; }
  mkdir -p "$RESULTS/infection-run"
  cp "$W/run"/{config.json,history.csv,eval_*.md,eval_*.json} "$RESULTS/infection-run/" 2>/dev/null
  echo "infection: exit $rc" >> "$RESULTS/infection-run/steps.txt"
}
INF_PID=
if [ "$PART" = covidqu ] && [ -f "$WORK/data/split-infection.csv" ]; then
  infection $((LEFT * ${INFECTION_SHARE:-70} / 100 - 20)) > "$RESULTS/infection.log" 2>&1 &
  INF_PID=$!
fi
if [ "$PART" = covidqu ]; then
  # shellcheck disable=SC2086
  python3 benchmarks/recipe_study.py --split "$WORK/data/split.csv" --out "$WORK/study" --budget "$LEFT" \
    --experiment-seeds "$SEEDS" $STUDY 2>&1 | tee "$RESULTS/study.log"
  rc=${PIPESTATUS[0]}
  # the statistics within their reserve (a guard: the runs' results are copied below whatever happens here)
  timeout "$ANALYSIS" python3 benchmarks/analyse_runs.py "$WORK/study/experiment" --cache "$WORK/study/cache" \
    --out "$RESULTS" > "$RESULTS/analysis.log" 2>&1 || echo "analysis failed or ran out of its $ANALYSIS s: see analysis.log"
elif [ "$PART" = shared ]; then
  [ "${SMOKE:-0}" = 1 ] || SEEDS=3
  EMPTY='{}'  # no winner given: the default recipe
  # shellcheck disable=SC2086
  python3 benchmarks/recipe_study.py --split "$WORK/data/split.csv" --out "$WORK/study" --budget "$LEFT" \
    --winner-seg "${WINNER_SEG:-$EMPTY}" --winner-cls "${WINNER_CLS:-$EMPTY}" --modes raw masked masked-cropped \
    --experiment-seeds "$SEEDS" $STUDY 2>&1 | tee "$RESULTS/study.log"
  rc=${PIPESTATUS[0]}
else
  echo "PART must be covidqu or shared, not $PART"; exit 2
fi
[ -n "$INF_PID" ] && { wait "$INF_PID"; echo "== infection segmenter: $(cat "$RESULTS/infection-run/steps.txt" 2>/dev/null)"; }
cp "$WORK/study"/recipe_study.* "$WORK/study"/winner_*.json "$WORK/study/runs.jsonl" "$RESULTS/" 2>/dev/null
for run in "$WORK"/study/{seg,cls,experiment}/*/; do  # each run's record and reports, small files only
  [ -d "$run" ] || continue
  dest="$RESULTS/runs/$(basename "$(dirname "$run")")-$(basename "$run")"; mkdir -p "$dest"
  cp "$run"/{config.json,history.csv,eval_*.md,eval_*.json,train.log} "$dest/" 2>/dev/null
done
echo "study: exit $rc, $((SECONDS - START)) s of a $BUDGET s budget" | tee "$RESULTS/steps.txt"
exit "$rc"
