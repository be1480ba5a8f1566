"""Evaluate a segmenter on cached images with masks: Dice, IoU, pixel accuracy, HD95, per source."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..data.cache import PackedCache
from ..data.loader import CacheLoader
from .metrics import hausdorff95, mask_scores, summarize
from .segmenter import Segmenter

METRICS = ("dice", "iou", "pixel_accuracy", "hd95", "dice_raw")


def evaluate_segmenter(segmenter: Segmenter, cache: PackedCache, rows: np.ndarray, progress: bool = True) -> dict:
    """Score ``segmenter`` on cache ``rows`` (those without a mask are skipped).

    Metrics are computed after post-processing (what ``lungcls segment`` writes); ``dice_raw``
    is the Dice of the plain 0.5 threshold, for comparison.

    Returns:
        {"summary": {metric: {mean, median, p5, n}}, "by_source": {source: {...}}, "images": [...]}
    """
    from ..progress import progress_bar

    rows = np.asarray([r for r in rows if cache.has_mask[r]], dtype=np.int64)
    loader = CacheLoader(cache, rows, segmenter.batch_size, "cpu", with_masks=True)
    images = []
    for batch in progress_bar(loader, desc="evaluating", unit="batch", enabled=progress):
        probs = segmenter.probabilities(batch.images).float()
        post = segmenter.postprocess(probs)[0].cpu()
        probs = probs.cpu()
        scores = mask_scores(post, batch.masks)
        raw = mask_scores((probs > segmenter.post.threshold).long(), batch.masks)["dice"]
        hd = hausdorff95(post, batch.masks)
        for k, row in enumerate(batch.index.tolist()):
            s = cache.samples[row]
            images.append({"image": s.image, "source": s.source, "split": s.split,
                           **{m: float(v[k]) for m, v in scores.items()}, "hd95": float(hd[k]), "dice_raw": float(raw[k])})  # fmt: skip
    by_source: dict[str, list[dict]] = defaultdict(list)
    for r in images:
        by_source[r["source"]].append(r)
    return {
        "summary": {m: summarize([r[m] for r in images]) for m in METRICS},
        "by_source": {
            src: {m: summarize([r[m] for r in rs]) for m in METRICS} for src, rs in sorted(by_source.items())
        },
        "images": images,
    }


def format_table(result: dict) -> str:
    """A Markdown table: one row per source and one for all, mean (median, 5th percentile)."""
    head = "| set | images | Dice mean | Dice median | Dice p5 | IoU mean | pixel acc. | HD95 mean (px) | Dice, raw threshold |\n"
    head += "|---|---|---|---|---|---|---|---|---|\n"

    def row(name: str, s: dict) -> str:
        d = s["dice"]
        return (f"| {name} | {d['n']} | {d['mean']:.4f} | {d['median']:.4f} | {d['p5']:.4f} | {s['iou']['mean']:.4f} | "
                f"{s['pixel_accuracy']['mean']:.4f} | {s['hd95']['mean']:.2f} | {s['dice_raw']['mean']:.4f} |\n")  # fmt: skip

    return head + "".join(row(k, v) for k, v in result["by_source"].items()) + row("**all**", result["summary"])
