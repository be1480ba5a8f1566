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
#: an infection segmenter's: Dice, IoU and HD95 on the images with infection (NaN on the others), and on the images
#: without infection the predicted (false-positive) share of the image and of the lungs, and whether there is any
INFECTION_METRICS = ("dice", "iou", "hd95", "dice_raw", "fp_share", "fp_lung_share", "any_fp")


@dataclass
class SegmentationReport:
    """A segmenter on one set of images with ground-truth masks.

    Attributes:
        name: what was evaluated (``val``, ``test``, ``all`` ...).
        summary: {metric: {mean, median, p5, n}} over all images; by_source: the same per source set.
        images: per image: image path, source, split, dice, iou, pixel_accuracy, hd95, dice_raw, flags, and the
            estimated Dice (``dice_estimate``, what ``mask_dice_estimate`` says where there is no ground truth).
        outlines_png: a grid of predicted (green) and true (red) outlines with each image's Dice, as PNG
            (not in the JSON).
        warnings: the segmenter's card warnings, shown above the table.
        target: ``lungs`` or ``infection`` (then also ``by_class``: the summary per class, and the lungs that the
            false-positive share of the lungs is measured in, in ``lungs_from``).
    """

    name: str
    summary: dict[str, dict[str, float]]
    by_source: dict[str, dict[str, dict[str, float]]]
    images: list[dict] = field(default_factory=list)
    outlines_png: bytes | None = None
    warnings: list[str] = field(default_factory=list)
    target: str = "lungs"
    by_class: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    lungs_from: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready (without the figure)."""
        return {
            "name": self.name,
            "target": self.target,
            "summary": self.summary,
            "by_source": self.by_source,
            **({"by_class": self.by_class, "lungs_from": self.lungs_from} if self.target == "infection" else {}),
            "images": self.images,
            "warnings": self.warnings,
        }

    def markdown(self) -> str:
        """One row per source set and one for all: Dice mean (median, 5th percentile), IoU, pixel accuracy, HD95
        (for infection: :meth:`infection_markdown`)."""
        if self.target == "infection":
            return self.infection_markdown()
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

    def infection_markdown(self) -> str:
        """Per source and class: Dice and IoU on the images with infection; on the others, the predicted share of
        the image and of the lungs (false positives) and how many have any."""
        head = (
            "| set | with infection | Dice mean | Dice median | Dice p5 | IoU mean | without infection | "
            "FP share of image | FP share of lungs | images with any FP |\n|---|---|---|---|---|---|---|---|---|---|\n"
        )

        def row(name: str, s: dict) -> str:
            d, fp = s["dice"], s["fp_share"]
            pos = (
                f"{d['n']} | {d['mean']:.4f} | {d['median']:.4f} | {d['p5']:.4f} | {s['iou']['mean']:.4f}"
                if d["n"]
                else "0 | - | - | - | -"
            )
            neg = (f"{fp['n']} | {fp['mean']:.4f} | {s['fp_lung_share']['mean']:.4f} | {s['any_fp']['mean']:.3f}"
                   if fp["n"] else "0 | - | - | -")  # fmt: skip
            return f"| {name} | {pos} | {neg} |\n"

        groups = {**self.by_source, **{f"class {k}": v for k, v in self.by_class.items()}}
        lungs = f"\nShares of the lungs are measured in the lungs of {self.lungs_from}.\n" if self.lungs_from else ""
        warned = "".join(f"> **WARNING {w}.**\n\n" for w in self.warnings)
        return (
            warned
            + head
            + "".join(row(k or "(unnamed)", v) for k, v in groups.items())
            + row("**all**", self.summary)
            + lungs
        )


def evaluate_segmenter(
    segmenter: Segmenter,
    cache: PackedCache,
    rows: np.ndarray,
    name: str = "",
    progress: bool = True,
    grid: int = 12,
    lungs: Segmenter | None = None,
) -> SegmentationReport:
    """Score ``segmenter`` on cache ``rows`` (those without a mask are skipped), at the cache's size.

    Metrics are computed after post-processing (the masks every lungcls command uses); ``dice_raw``
    is the Dice of the plain 0.5 threshold, for comparison. An infection segmenter is scored on the images with
    infection (Dice, IoU) and on those without (false-positive share of the image, and of the lungs that
    ``lungs``, a lung segmenter, finds; see :data:`INFECTION_METRICS`).
    """

    rows = np.asarray([r for r in rows if cache.has_mask[r]], dtype=np.int64)
    target = segmenter.cfg.target
    images, grid_items = [], []
    step = max(segmenter.batch_size, 32)
    bar = progress_bar(total=len(rows), desc=f"evaluating {name}".strip(), unit="img", enabled=progress)
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        images += _score(segmenter, cache, chunk, grid_items, grid, lungs if target == "infection" else None)
        bar.update(len(chunk))
    bar.close()
    metrics = INFECTION_METRICS if target == "infection" else METRICS
    report = SegmentationReport(
        warnings=model_warnings(segmenter),
        name=name,
        summary={m: summarize([r[m] for r in images]) for m in metrics},
        by_source=_grouped(images, "source", metrics),
        images=images,
        target=target,
        by_class=_grouped(images, "label", metrics) if target == "infection" else {},
        lungs_from=(lungs.info.get("source", {}).get("name") or "the lung segmenter")
        if lungs and target == "infection"
        else None,
    )
    if grid_items:
        pics, pred, true, dice = zip(*grid_items)
        what = "lungs" if target == "lungs" else "infection"
        title = f"{name}: green predicted {what}, red ground truth".strip(": ")
        report.outlines_png = figure_png(outline_grid(pics, pred, true, [f"Dice {d:.3f}" for d in dice], title=title))
    return report


def _grouped(images: list[dict], key: str, metrics: tuple[str, ...]) -> dict[str, dict[str, dict[str, float]]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in images:
        groups[r[key]].append(r)
    return {g: {m: summarize([r[m] for r in rs]) for m in metrics} for g, rs in sorted(groups.items())}


def _score(
    segmenter: Segmenter, cache: PackedCache, chunk: np.ndarray, grid_items: list, grid: int, lungs: Segmenter | None
) -> list[dict]:
    """One record per cache row of ``chunk``; the first ``grid`` images also go to ``grid_items`` for the figure
    (for infection, images with infection first)."""
    pixels = np.asarray(cache.images[chunk])[:, None]
    truth = torch.from_numpy(np.asarray(cache.masks[chunk]))[:, None]
    batch = segmenter.masks(pixels, keep_probs=True)
    masks, flags, probs = batch.masks.cpu(), batch.flags, batch.probs.float().cpu()
    scores = mask_scores(masks, truth)
    raw = mask_scores((probs > segmenter.post.threshold).long(), truth)["dice"]
    hd = hausdorff95(masks, truth)
    infection = segmenter.cfg.target == "infection"
    if infection:
        lung = lungs.masks(pixels).masks.cpu() if lungs is not None else None
        extra = _infection_scores(masks, truth, lung)
    out = []
    for k, row in enumerate(chunk.tolist()):
        s = cache.samples[row]
        record = {
            "row": row,
            "image": s.image,
            "source": s.source,
            "split": s.split,
            **{m: float(v[k]) for m, v in scores.items()},
            "hd95": float(hd[k]),
            "dice_raw": float(raw[k]),
            "flags": flags[k],
            "dice_estimate": batch.dice_estimates[k],
        }
        if infection:
            record.update(label=s.label, **{m: v[k] for m, v in extra.items()})
            if not truth[k].any():  # Dice and IoU say nothing where there is nothing to find
                record.update(dice=float("nan"), iou=float("nan"), hd95=float("nan"), dice_raw=float("nan"))
        out.append(record)
        if len(grid_items) < grid and (not infection or truth[k].any()):
            grid_items.append((pixels[k, 0], masks[k, 0].numpy(), truth[k, 0].numpy(), float(scores["dice"][k])))
    return out


def _infection_scores(pred: torch.Tensor, truth: torch.Tensor, lungs: torch.Tensor | None) -> dict[str, list]:
    """Per image: Dice, IoU and HD95 kept only where there is infection (NaN elsewhere); where there is none, the
    predicted share of the image and of the lungs (NaN without lungs), and whether anything was predicted; and for
    every image ``infected_share``, the predicted infected share of the lungs (what COVID-19 is detected from)."""
    nan = float("nan")
    infected = truth.flatten(1).any(1)
    area = pred.flatten(1).float().mean(1)
    lung_area = lungs.flatten(1).float().sum(1).clamp_min(1) if lungs is not None else None
    in_lungs = (pred * lungs).flatten(1).float().sum(1) / lung_area if lungs is not None else None
    out: dict[str, list] = {"fp_share": [], "fp_lung_share": [], "any_fp": [], "infected_share": []}
    for k, pos in enumerate(infected.tolist()):
        out["infected_share"].append(nan if in_lungs is None else float(in_lungs[k]))
        out["fp_share"].append(nan if pos else float(area[k]))
        out["fp_lung_share"].append(nan if pos or in_lungs is None else float(in_lungs[k]))
        out["any_fp"].append(nan if pos else float(area[k] > 0))
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
