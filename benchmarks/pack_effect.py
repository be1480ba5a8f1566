"""What a lossy GPU pack changes in the figures: the same models on the original PNGs and on the unpacked archive.

Per image of a data set with lung masks: the lung segmenter's Dice against the ground truth from each copy, and
the Dice between its two predictions; per Test image of a split (``--classifier RUN --split CSV``): the
classifier's accuracy from each copy and how often the two predictions agree. Writes
``results/pack_effect.{json,md}``.

    python benchmarks/gpu_pack.py unpack .gpu_data/covidqu.tar /tmp/unpacked
    python benchmarks/pack_effect.py ../shared/data/covidqu-infseg /tmp/unpacked/covidqu-infseg \\
        --classifier /tmp/cls-raw --split /tmp/split.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np
import torch

from common import write_results

from lungcls.seg.metrics import mask_scores
from lungcls.seg.segmenter import Segmenter


def _read(paths: list[Path]) -> torch.Tensor:
    return torch.from_numpy(np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]))[:, None]


def segmenter_effect(original: Path, unpacked: Path, model: str, limit: int | None) -> dict:
    """Dice of ``model`` against the ground truth from both copies, and between its two predictions."""
    images = sorted(p for p in original.rglob("*.png") if p.parent.name == "images")[:limit]
    seg = Segmenter.load(model, device="cpu")
    dice = {"original": [], "unpacked": [], "between": []}
    for start in range(0, len(images), 256):
        chunk = images[start : start + 256]
        truth = (_read([p.parent.parent / "lung masks" / p.name for p in chunk]) > 127).to(torch.uint8)
        a = seg.masks(_read(chunk)).masks.cpu()
        b = seg.masks(_read([unpacked / p.relative_to(original) for p in chunk])).masks.cpu()
        dice["original"] += mask_scores(a, truth)["dice"].tolist()
        dice["unpacked"] += mask_scores(b, truth)["dice"].tolist()
        dice["between"] += mask_scores(a, b)["dice"].tolist()
    return {"images": len(images), "model": model, **{k: float(np.mean(v)) for k, v in dice.items()},
            "largest_change": float(np.max(np.abs(np.subtract(dice["original"], dice["unpacked"]))))}  # fmt: skip


def classifier_effect(original: Path, unpacked: Path, run: Path, split: Path) -> dict:
    """Accuracy of a trained classifier on the split's Test images from both copies, and their agreement."""
    from lungcls.cls.classifier import Classifier

    clf = Classifier.load(run, device="cpu")
    rows = [r for r in csv.DictReader(split.open()) if r["split"] == "Test"]
    paths = [Path(r["image"]) for r in rows]
    labels = np.array([clf.class_names.index(r["label"]) for r in rows])
    preds = {}
    for name, copy in (("original", lambda p: p), ("unpacked", lambda p: unpacked / p.relative_to(original))):
        out = [clf.probabilities(_read([copy(p) for p in paths[s : s + 128]]))[0].argmax(1).cpu()
               for s in range(0, len(paths), 128)]  # fmt: skip
        preds[name] = torch.cat(out).numpy()
    return {"images": len(rows), "run": str(run), "accuracy_original": float((preds["original"] == labels).mean()),
            "accuracy_unpacked": float((preds["unpacked"] == labels).mean()),
            "agreement": float((preds["original"] == preds["unpacked"]).mean())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("original", type=Path, help="the set's original folder")
    parser.add_argument("unpacked", type=Path, help="the same set unpacked from the archive")
    parser.add_argument("--segmenter", default="unet-r18-covidqu", help="a built-in name or a run folder")
    parser.add_argument("--classifier", type=Path, help="a classifier run trained on the original images")
    parser.add_argument("--split", type=Path, help="the split whose Test images the classifier is scored on")
    parser.add_argument("--limit", type=int, help="only the first N images (sorted by path)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    args.original, args.unpacked = args.original.resolve(), args.unpacked.resolve()
    result = {"segmenter": segmenter_effect(args.original, args.unpacked, args.segmenter, args.limit)}
    if args.classifier:
        result["classifier"] = classifier_effect(args.original, args.unpacked, args.classifier, args.split)
    s = result["segmenter"]
    table = ("| model | images | from the original PNGs | from the archive | between the two |\n|---|---|---|---|---|\n"
             f"| segmenter {s['model']}: mean Dice vs ground truth | {s['images']} | {s['original']:.4f} | "
             f"{s['unpacked']:.4f} | {s['between']:.4f} (largest per-image change {s['largest_change']:.4f}) |\n")  # fmt: skip
    if "classifier" in result:
        c = result["classifier"]
        table += (f"| classifier {Path(c['run']).name}: Test accuracy | {c['images']} | {c['accuracy_original']:.4f} | "
                  f"{c['accuracy_unpacked']:.4f} | agreement {c['agreement']:.4f} |\n")  # fmt: skip
    write_results("pack_effect", result, table)
    print(table)


if __name__ == "__main__":
    main()
