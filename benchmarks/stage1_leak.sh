#!/usr/bin/env bash
# How much a stage-1 leak flatters masked-mode Test accuracy: the same CPU recipes and seed, the same
# classifier split (four shared sets, split once), with stage 1 trained either on its own split of the two
# ieee8023 sets (what the README's recipe did before lungcls had one split for both stages: some of the
# classifier's Test images were in the segmenter's Train or Val) or on the shared split (no leak).
# Writes benchmarks/results/stage1_leak.{json,md}. About 15 minutes on 2 CPU cores.
# Usage: bash benchmarks/stage1_leak.sh [DATA_ROOT] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-${LUNGCLS_DATA:-../shared/data}}
W=${2:-runs/stage1_leak}
mkdir -p "$W"
SETS="$D/ieee8023-radiologist100 $D/ieee8023-v7labs427 $D/nih-cxr8 $D/covid19-radiography"
# shellcheck disable=SC2086
lungcls data split $SETS --out "$W/split.csv" --seed 0 --force -q
lungcls train-seg "$D/ieee8023-radiologist100" "$D/ieee8023-v7labs427" --out "$W/seg-own-split" --recipe cpu --cpu --overwrite -q
lungcls train-seg "$W/split.csv" --out "$W/seg-shared-split" --recipe cpu --cpu --overwrite -q
for s in own shared; do
  lungcls train-cls "$W/split.csv" --out "$W/cls-$s" --mode masked --seg-model "$W/seg-$s-split" --recipe cpu \
    --cache "$W/cache-cls" --cpu --overwrite -q 2>&1 | grep -E "LEAK|best val" || true
done
python3 - "$W" "$D" <<'PY'
import json, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from common import write_results
w = Path(sys.argv[1])
rows, payload = [], {}
for s, label in (("own", "before: stage 1 split on its own (leaks into the classifier's Test)"), ("shared", "after: one split for both stages")):
    r = json.loads((w / f"cls-{s}" / "eval_test.json").read_text())
    images = json.loads((w / f"seg-{s}-split" / "images.json").read_text())
    seen = set(images["Train"]) | set(images["Val"])
    test = [im for im in r["images"]]
    leaked = [im for im in test if im["hash"] in seen]
    acc = lambda ims: sum(im["pred"] == im["label"] for im in ims) / max(len(ims), 1)
    clean = [im for im in test if im["hash"] not in seen]
    payload[s] = {"accuracy": r["accuracy"], "ci95": r["ci95"]["accuracy"], "test_images": len(test), "seen_by_stage1": len(leaked),
                  "accuracy_on_seen": acc(leaked) if leaked else None, "accuracy_on_unseen": acc(clean)}
    rows.append(f"| {label} | {r['accuracy']:.3f} [{r['ci95']['accuracy'][0]:.3f}, {r['ci95']['accuracy'][1]:.3f}] | {len(test)} | "
                f"{len(leaked)} | {acc(leaked):.3f} |" if leaked else f"| {label} | {r['accuracy']:.3f} [{r['ci95']['accuracy'][0]:.3f}, "
                f"{r['ci95']['accuracy'][1]:.3f}] | {len(test)} | 0 | - |")
table = ("| stage 1 | masked-mode Test accuracy [95% CI] | Test images | of them in stage 1's Train/Val | accuracy on those |\n"
         "|---|---|---|---|---|\n" + "\n".join(rows) + "\n\nCPU recipes `cpu` of lungcls.recipes (U-Net resnet18 at 128 px, 12 epochs; "
         "ResNet-18 at 128 px, 8 epochs), seed 0; the classifier's split is the same in both rows.")
print(table)
write_results("stage1_leak", payload, table, command=f"bash benchmarks/stage1_leak.sh {sys.argv[2]} {sys.argv[1]}")
PY
