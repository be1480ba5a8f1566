#!/usr/bin/env bash
# Run HERE (the machine with the shared data and pip's index), before the GPU window: fetches the wheels the GPU
# image lacks into .whl/ and packs the data of each call into ONE archive in .gpu_data/ (both git-ignored, never
# committed), each checked to fit a call (checkout + wheels + archive, counted in 4 KiB blocks as the device tool
# counts, with a 4 MiB margin), then prints the calls of the plan (benchmarks/README.md, "The GPU plan").
#   .gpu_data/covidqu.tar: all of covidqu-infseg (4,384 images as WebP q90, largest error stated in the archive;
#                          lung and infection masks exact), its split and the infection split made from the
#                          original PNGs
#   .gpu_data/shared.tar:  the four small shared sets as WebP q95 (lossless no longer fits beside the checkout's
#                          built-in models), masks exact, and their split
# Usage: bash benchmarks/gpu_prepare.sh [DATA_ROOT]   (default $LUNGCLS_DATA, then ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${LUNGCLS_DATA:-../shared/data}}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
# the GPU image has torch, torchvision, timm, safetensors, torchmetrics, typer, scikit-image, opencv;
# it lacks these (albumentations is not needed there: no step of the plan imports it)
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl segmentation_models_pytorch==0.6.0
python3 -m pip wheel -q --no-deps -w .whl grad-cam==1.5.7 ttach==0.0.3  # pure Python, published as sdists
python3 benchmarks/gpu_pack.py pack "$DATA/covidqu-infseg" --out .gpu_data/covidqu.tar --quality 90 --split --infection-split --carry .whl --force
python3 benchmarks/gpu_pack.py pack "$DATA"/{ieee8023-radiologist100,ieee8023-v7labs427,nih-cxr8,covid19-radiography} \
  --out .gpu_data/shared.tar --quality 95 --split --carry .whl --force
for part in covidqu shared; do
  echo "call with .gpu_data/$part.tar: $(python3 benchmarks/gpu_pack.py size --carry .whl .gpu_data/$part.tar)"
done
cat <<'EOF'
The GPU plan (15 minutes of device time, the machine's start of 1-4 min included):
  1. carry [".whl", ".gpu_data/covidqu.tar"], timeout_s 560:
     bash benchmarks/gpu_check.sh covidqu .gpu_data/covidqu.tar /tmp/gpu1 520; tar czf $OUT/gpu1.tgz -C /tmp gpu1
  2. at once (the machine stays warm 30 s), only if status says >= 150 s are left; BUDGET = those seconds - 40,
     WINNER_* = gpu1/winner_seg.json and gpu1/winner_cls.json on one line each:
     carry [".whl", ".gpu_data/shared.tar"], timeout_s BUDGET + 30:
     WINNER_SEG='...' WINNER_CLS='...' bash benchmarks/gpu_check.sh shared .gpu_data/shared.tar /tmp/gpu2 BUDGET; tar czf $OUT/gpu2.tgz -C /tmp gpu2
  then give_back, and unpack both into benchmarks/results/gpu-<date>/
EOF
