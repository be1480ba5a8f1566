"""``lungcls demo``: both stages end to end in a few CPU minutes, raw vs masked, with figures and a report.

Without data it runs on SYNTHETIC phantoms that lungcls generates (see
:mod:`lungcls.data.phantoms`); with ``data`` on any dataset lungcls reads. Small models and few
epochs: the demo shows the mechanics and the outputs, not the accuracy the full recipes reach.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .atomic import write_text
from .checkpoint import read_json
from .cls.train import train_classifier
from .config import ClassifierConfig, SegmenterConfig, TrainConfig
from .data.cache import PackedCache
from .data.phantoms import write_phantom_set
from .data.training_data import open_training_data
from .pipeline import Pipeline
from .plots import outline_grid, plot_curves
from .seg.evaluate import evaluate_segmenter
from .seg.segmenter import Segmenter
from .seg.train import train_segmenter

log = logging.getLogger(__name__)


@dataclass
class DemoSettings:
    """Sizes and budgets of the demo (defaults: about two minutes on a 2-core CPU)."""

    working_size: int = 128  # images are cached and shown at this size
    per_class: int = 60  # synthetic phantoms per class
    seg_size: int = 64  # the U-Net works at this size (its masks are resized back)
    seg_epochs: int = 6
    cls_epochs: int = 15
    cls_size: int = 64
    device: str = "auto"
    seed: int = 0


def run_demo(
    data: Sequence[str | Path] | None, out: str | Path, settings: DemoSettings | None = None, progress: bool = True
) -> dict:
    """Train a small U-Net and two small classifiers (raw, masked), evaluate, and write figures + ``report.md``.

    Returns:
        The headline figures (also in the report).
    """
    s = settings or DemoSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    synthetic = data is None
    if synthetic:
        data = [write_phantom_set(out / "data", per_class=s.per_class, size=s.working_size, seed=s.seed)]
    cache = out / "cache"
    seg_cfg = SegmenterConfig(
        encoder_name="resnet18", encoder_depth=3, decoder_channels=[32, 16, 8], image_size=s.seg_size
    )
    train = TrainConfig(epochs=s.seg_epochs, batch_size=16, lr=3e-3, warmup_epochs=0.5, device=s.device, seed=s.seed)
    seg_cache = open_training_data(data, cache, size=s.working_size, split_seed=s.seed, progress=progress)
    train_segmenter([cache], out / "segmenter", seg_cfg, train, progress=progress)
    segmenter = Segmenter.load(out / "segmenter", device=s.device)
    seg_eval = evaluate_segmenter(segmenter, seg_cache, seg_cache.indices("Test", with_mask=True), progress=progress)
    _seg_figure(segmenter, seg_cache, out / "segmentation_test.png", synthetic)
    results = {"segmentation_test_dice": seg_eval["summary"]["dice"]}
    cls_train = TrainConfig(epochs=s.cls_epochs, batch_size=16, lr=1e-3, warmup_epochs=1, label_smoothing=0.1,
                            class_weighting=True, device=s.device, seed=s.seed)  # fmt: skip
    for mode in ("raw", "masked"):
        cfg = ClassifierConfig(arch="resnet18", image_size=s.cls_size, mode=mode)
        seg = out / "segmenter" if mode != "raw" else None
        train_classifier([cache], out / f"classifier-{mode}", cfg, cls_train, seg_model=seg, progress=progress)
        shutil.copyfile(out / f"classifier-{mode}" / "confusion_test.png", out / f"confusion_{mode}.png")
        results[f"{mode}_test"] = read_json(out / f"classifier-{mode}" / "eval_test.json")
    histories = {
        name: read_json(out / name / "last.json")["history"]
        for name in ("segmenter", "classifier-raw", "classifier-masked")
    }
    plot_curves(histories, out / "curves.png", "SYNTHETIC phantoms" if synthetic else "")
    pipe = Pipeline.load(out / "classifier-masked", device=s.device)
    pipe.save(out / "bundle", metrics={"test_accuracy": results["masked_test"]["accuracy"]})
    write_text(out / "report.md", _report(results, synthetic, data, out))
    return results


def _seg_figure(segmenter: Segmenter, cache: PackedCache, path: Path, synthetic: bool, n: int = 12) -> None:
    rows = cache.indices("Test", with_mask=True)[:n]
    if len(rows) == 0:
        rows = cache.indices("Test")[:n]
    images = np.array(cache.images[rows])
    results = segmenter.segment(torch.from_numpy(images)[:, None])
    from .seg.metrics import mask_scores

    titles, truth = [], []
    for k, r in enumerate(rows):
        true = np.array(cache.masks[r]) if cache.has_mask[r] else None
        truth.append(true)
        if true is not None:
            d = mask_scores(torch.from_numpy(results[k].mask)[None, None], torch.from_numpy(true)[None, None])[
                "dice"
            ].item()
            titles.append(f"Dice {d:.3f}")
        else:
            titles.append("no ground truth")
    name = "SYNTHETIC phantoms: " if synthetic else ""
    outline_grid(
        images,
        [r.mask for r in results],
        truth,
        titles,
        path,
        title=f"{name}green predicted lungs, red ground truth (Test)",
    )


def _report(results: dict, synthetic: bool, data: Sequence, out: Path) -> str:
    d = results["segmentation_test_dice"]
    lines = ["# lungcls demo report", ""]
    if synthetic:
        lines += ["**All images in this demo are SYNTHETIC phantoms generated by lungcls, not patients.** They show",
                  "the mechanics of the pipeline; their numbers say nothing about real chest X-rays.", ""]  # fmt: skip
    else:
        lines += [f"Data: {', '.join(str(p) for p in data)}. Small models and few epochs: not the full recipes.", ""]
    lines += [
        "Research use only: lungcls is not a diagnostic device.",
        "",
        "## Stage 1: lung segmentation (Test split)",
        "",
        f"Dice mean {d['mean']:.4f}, median {d['median']:.4f}, 5th percentile {d['p5']:.4f} over {d['n']} images.",
        "Outlines: `segmentation_test.png`.",
        "",
        "## Stage 2: raw vs masked classifier (Test split)",
        "",
        "| input | accuracy | 95% CI | macro F1 | 95% CI |",
        "|---|---|---|---|---|",
    ]
    for mode in ("raw", "masked"):
        r = results[f"{mode}_test"]
        ci = r["ci95"]
        lines.append(f"| {mode} | {r['accuracy']:.3f} | [{ci['accuracy'][0]:.3f}, {ci['accuracy'][1]:.3f}] | "
                     f"{r['macro_avg']['f1']:.3f} | [{ci['macro_f1'][0]:.3f}, {ci['macro_f1'][1]:.3f}] |")  # fmt: skip
    lines += [
        "",
        "Full tables: `classifier-raw/eval_test.md`, `classifier-masked/eval_test.md`; confusion matrices:",
        "`confusion_raw.png`, `confusion_masked.png`; training curves: `curves.png`.",
        f"A saved pipeline (masked mode): `bundle/` — `Pipeline.load('{out / 'bundle'}')`.",
    ]
    return "\n".join(lines) + "\n"
