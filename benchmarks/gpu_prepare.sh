#!/usr/bin/env bash
# Run HERE (the machine with internet and the shared data), before a GPU run through the device tool:
# fetches the wheels the GPU image lacks into .whl/ and copies the four PNG sets into .gpu_data/, both
# git-ignored (never committed), then prints the size that will travel and the call to make.
# Usage: bash benchmarks/gpu_prepare.sh [DATA_ROOT]   (default $LUNGCLS_DATA, then ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${LUNGCLS_DATA:-../shared/data}}
for d in /.whl/ /.gpu_data/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
# the GPU image has torch, torchvision, timm, safetensors, torchmetrics, typer, scikit-image, opencv;
# it lacks these (albumentations is not needed there: no step of gpu_check.sh imports it)
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl segmentation_models_pytorch==0.6.0
python3 -m pip wheel -q --no-deps -w .whl grad-cam==1.5.7 ttach==0.0.3  # pure Python, published as sdists
rm -rf .gpu_data && mkdir -p .gpu_data
for s in ieee8023-radiologist100 ieee8023-v7labs427 nih-cxr8 covid19-radiography; do
  cp -r "$DATA/$s" .gpu_data/
done
travel=$( (git ls-files -z | xargs -0 cat; find .whl .gpu_data -type f -exec cat {} +) | wc -c)
echo "will travel: $((travel / 1048576)) MiB of 64 MiB"
echo 'device run: carry [".whl", ".gpu_data"], timeout_s 600, command:'
echo '  timeout 580 bash benchmarks/gpu_check.sh .gpu_data /tmp/gpu; tar czf $OUT/gpu.tgz -C /tmp gpu'
