#!/usr/bin/env bash
# Run HERE (the machine with internet and the shared data), before the GPU check through the device tool:
# fetches the wheels the GPU image lacks into .whl/ and copies the data of each call into .gpu_data/ (both
# git-ignored, never committed), then prints what will travel and the two calls to make.
#   .gpu_data/shared:  the four shared PNG sets as they are (~57 MiB), but for a STATED SUBSET of
#                      covid19-radiography when the checkout leaves less room (about 90% of it today)
#   .gpu_data/covidqu: a STATED SUBSET of covidqu-infseg, in its Kaggle layout: the whole Val split and a
#                      class-stratified part of Train (every k-th image of each class, by file name), as many
#                      as fit beside the checkout in one call's 64 MiB (lossless WebP would gain only ~12%).
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
rm -rf .gpu_data && mkdir -p .gpu_data/shared .gpu_data/covidqu
for s in ieee8023-radiologist100 ieee8023-v7labs427 nih-cxr8 covid19-radiography; do
  cp -r "$DATA/$s" .gpu_data/shared/
done
checkout=$(git ls-files -z | xargs -0 cat | wc -c)
wheels=$(cat .whl/*.whl | wc -c)
# the four sets are ~57 MiB and the checkout (with the built-in model) ~8 MiB: when together they pass 63 MiB,
# a STATED SUBSET of covid19-radiography travels (an even share of each class left out, labels.csv to match)
python3 - .gpu_data/shared $((63 * 1048576 - checkout - wheels)) <<'SUBSET'
import csv, sys
from pathlib import Path

root, budget = Path(sys.argv[1]), int(sys.argv[2])
size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
if size > budget:
    s = root / "covid19-radiography"
    rows = list(csv.DictReader((s / "labels.csv").open()))
    files = lambda r: [s / r["filename"], s / r["filename"].replace("/images/", "/lung masks/")]  # noqa: E731
    weight = lambda r: sum(f.stat().st_size for f in files(r) if f.is_file())  # noqa: E731
    share = min(1.0, (size - budget) / sum(weight(r) for r in rows) * 1.05)
    by_class = {}
    for r in sorted(rows, key=lambda r: r["filename"]):
        by_class.setdefault(r["class"], []).append(r)
    drop = set()
    for rs in by_class.values():
        drop |= {rs[int(i / share)]["filename"] for i in range(int(len(rs) * share) + 1) if int(i / share) < len(rs)}
    for r in rows:
        if r["filename"] in drop:
            for f in files(r):
                f.unlink(missing_ok=True)
    with (s / "labels.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(r for r in rows if r["filename"] not in drop)
    print(f"covid19-radiography subset: {len(rows) - len(drop)} of {len(rows)} images (every {1 / share:.1f}-th "
          "image per class left out) so that call 1 fits in 64 MiB")
SUBSET
python3 - "$DATA/covidqu-infseg" .gpu_data/covidqu/covidqu-infseg $((64 * 1048576 - checkout - wheels - 2 * 1048576)) <<'EOF'
import shutil, sys
from pathlib import Path

src, dst, budget = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
part = Path("COVID-QU-Ex Dataset/Infection Segmentation Data/Infection Segmentation Data")
pairs = {}  # (split, class) -> [(image, lung mask)], sorted by name
for img in sorted((src / part).glob("*/*/images/*.png")):
    pairs.setdefault((img.parents[2].name, img.parents[1].name), []).append((img, img.parents[1] / "lung masks" / img.name))
size = lambda ps: sum(a.stat().st_size + b.stat().st_size for a, b in ps)  # noqa: E731
chosen = [p for (split, _), ps in pairs.items() if split == "Val" for p in ps]
left = budget - size(chosen)
train = {k: ps for k, ps in pairs.items() if k[0] == "Train"}
total = sum(size(ps) for ps in train.values())
share = min(1.0, left / total)
for ps in train.values():
    step = 1 / share
    chosen += [ps[int(i * step)] for i in range(int(len(ps) * share))]
for img, mask in chosen:
    for f in (img, mask):
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, out)
n_val = sum(len(ps) for k, ps in pairs.items() if k[0] == "Val")
print(f"covidqu-infseg subset: Val {n_val} (all), Train {len(chosen) - n_val} of {sum(len(p) for p in train.values())} "
      f"(every {1 / share:.2f}-th image per class), {size(chosen) / 1048576:.1f} MiB")
EOF
for part in shared covidqu; do
  travel=$( (git ls-files -z | xargs -0 cat; find .whl ".gpu_data/$part" -type f -exec cat {} +) | wc -c)
  echo "call with .gpu_data/$part will carry: $((travel / 1048576)) MiB of 64 MiB"
done
cat <<'EOF'
device calls (one after the other, on the same machine):
  1. carry [".whl", ".gpu_data/shared"], timeout_s 420:
     timeout 390 bash benchmarks/gpu_check.sh 1 .gpu_data/shared /tmp/gpu1; tar czf $OUT/gpu1.tgz -C /tmp gpu1
  2. carry [".whl", ".gpu_data/covidqu"], timeout_s 270:
     timeout 245 bash benchmarks/gpu_check.sh 2 .gpu_data/covidqu /tmp/gpu2; tar czf $OUT/gpu2.tgz -C /tmp gpu2
then: mkdir -p benchmarks/results/gpu && tar xzf gpu1.tgz gpu2.tgz into it, and read steps.txt of each
EOF
