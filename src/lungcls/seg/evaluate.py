"""Evaluate a segmenter on cached images with masks: Dice, IoU, pixel accuracy, HD95, per source; and the
report's one writer."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_bytes, write_json, write_text
from ..data.cache import PackedCache
from ..model_card import model_warnings
from ..plots import figure_png, outline_grid
from ..progress import progress_bar
from .metrics import hausdorff95, mask_scores, summarize
from .segmenter import Segmenter

METRICS = ("dice", "iou", "pixel_accuracy", "hd95", "dice_raw")


@dataclass
class SegmentationReport:
    """A segmenter on one set of images with ground-truth masks.

    Attributes:
        name: what was evaluated (``val``, ``test``, ``all`` ...).
        summary: {metric: {mean, median, p5, n}} over all images; by_source: the same per source set.
        images: per image: image path, source, split, dice, iou, pixel_accuracy, hd95, dice_raw, flags.
        outlines_png: a grid of predicted (green) and true (red) outlines with each image's Dice, as PNG
            (not in the JSON).
        warnings: the segmenter's card warnings, shown above the table.
    """

    name: str
    summary: dict[str, dict[str, float]]
    by_source: dict[str, dict[str, dict[str, float]]]
    images: list[dict] = field(default_factory=list)
    outlines_png: bytes | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready (without the figure)."""
        return {
            "name": self.name,
            "summary": self.summary,
            "by_source": self.by_source,
            "images": self.images,
            "warnings": self.warnings,
        }

    def markdown(self) -> str:
        """One row per source set and one for all: Dice mean (median, 5th percentile), IoU, pixel accuracy, HD95."""
        head = (
            "| set | images | Dice mean | Dice median | Dice p5 | IoU mean | pixel acc. | HD95 mean (px) | "
            "Dice, threshold only |\n|---|---|---|---|---|---|---|---|---|\n"
        )

        def row(name: str, s: dict) -> str:
            d = s["dice"]
            return (
                f"| {name} | {d['n']} | {d['mean']:.4f} | {d['median']:.4f} | {d['p5']:.4f} | {s['iou']['mean']:.4f} | "
                f"{s['pixel_accuracy']['mean']:.4f} | {s['hd95']['mean']:.2f} | {s['dice_raw']['mean']:.4f} |\n"
            )

        warned = "".join(f"> **WARNING {w}.**\n\n" for w in self.warnings)
        return (
            warned
            + head
            + "".join(row(k or "(unnamed)", v) for k, v in self.by_source.items())
            + row("**all**", self.summary)
        )


def evaluate_segmenter(
    segmenter: Segmenter, cache: PackedCache, rows: np.ndarray, name: str = "", progress: bool = True, grid: int = 12
) -> SegmentationReport:
    """Score ``segmenter`` on cache ``rows`` (those without a mask are skipped), at the cache's size.

    Metrics are computed after post-processing (the masks every lungcls command uses); ``dice_raw``
    is the Dice of the plain 0.5 threshold, for comparison.
    """

    rows = np.asarray([r for r in rows if cache.has_mask[r]], dtype=np.int64)
    images, grid_items = [], []
    step = max(segmenter.batch_size, 32)
    bar = progress_bar(total=len(rows), desc=f"evaluating {name}".strip(), unit="img", enabled=progress)
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        images += _score(segmenter, cache, chunk, grid_items, grid)
        bar.update(len(chunk))
    bar.close()
    by_source: dict[str, list[dict]] = defaultdict(list)
    for r in images:
        by_source[r["source"]].append(r)
    report = SegmentationReport(
        warnings=model_warnings(segmenter),
        name=name,
        summary={m: summarize([r[m] for r in images]) for m in METRICS},
        by_source={src: {m: summarize([r[m] for r in rs]) for m in METRICS} for src, rs in sorted(by_source.items())},
        images=images,
    )
    if grid_items:
        pics, pred, true, dice = zip(*grid_items)
        title = f"{name}: green predicted lungs, red ground truth".strip(": ")
        report.outlines_png = figure_png(outline_grid(pics, pred, true, [f"Dice {d:.3f}" for d in dice], title=title))
    return report


def _score(segmenter: Segmenter, cache: PackedCache, chunk: np.ndarray, grid_items: list, grid: int) -> list[dict]:
    """One record per cache row of ``chunk``; the first ``grid`` images also go to ``grid_items`` for the figure."""
    pixels = np.asarray(cache.images[chunk])[:, None]
    truth = torch.from_numpy(np.asarray(cache.masks[chunk]))[:, None]
    batch = segmenter.masks(pixels, keep_probs=True)
    masks, flags, probs = batch.masks.cpu(), batch.flags, batch.probs.float().cpu()
    scores = mask_scores(masks, truth)
    raw = mask_scores((probs > segmenter.post.threshold).long(), truth)["dice"]
    hd = hausdorff95(masks, truth)
    out = []
    for k, row in enumerate(chunk.tolist()):
        s = cache.samples[row]
        out.append(
            {
                "row": row,
                "image": s.image,
                "source": s.source,
                "split": s.split,
                **{m: float(v[k]) for m, v in scores.items()},
                "hd95": float(hd[k]),
                "dice_raw": float(raw[k]),
                "flags": flags[k],
            }
        )
        if len(grid_items) < grid:
            grid_items.append((pixels[k, 0], masks[k, 0].numpy(), truth[k, 0].numpy(), float(scores["dice"][k])))
    return out


def write_segmentation_report(report: SegmentationReport, folder: str | Path, name: str | None = None) -> list[Path]:
    """The one writer: ``eval_seg_<name>.json``, ``.md`` and ``outlines_<name>.png`` into ``folder``."""

    folder, name = Path(folder), name or report.name or "all"
    paths = [folder / f"eval_seg_{name}.json", folder / f"eval_seg_{name}.md"]
    write_json(paths[0], report.to_dict())
    write_text(paths[1], report.markdown())
    if report.outlines_png:
        paths.append(folder / f"outlines_{name}.png")
        write_bytes(paths[-1], report.outlines_png)
    return paths
