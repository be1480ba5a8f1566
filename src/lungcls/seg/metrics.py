"""Segmentation metrics per image: Dice, IoU, pixel accuracy (smp) and Hausdorff-95 (torchmetrics)."""

from __future__ import annotations

import math

import numpy as np
import torch


def mask_scores(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image Dice, IoU and pixel accuracy.

    Args:
        pred, target: (N, 1, H, W) in {0, 1} (any integer or bool dtype).

    Returns:
        {"dice", "iou", "pixel_accuracy"}: float (N,) each; an image where both masks are empty scores 1.
    """
    import segmentation_models_pytorch as smp

    tp, fp, fn, tn = smp.metrics.get_stats(pred.long(), target.long(), mode="binary")
    return {
        "dice": smp.metrics.f1_score(tp, fp, fn, tn, reduction="none", zero_division=1.0)[:, 0].float(),
        "iou": smp.metrics.iou_score(tp, fp, fn, tn, reduction="none", zero_division=1.0)[:, 0].float(),
        "pixel_accuracy": smp.metrics.accuracy(tp, fp, fn, tn, reduction="none")[:, 0].float(),
    }


def hausdorff95(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Symmetric 95th-percentile Hausdorff distance in pixels, per image (NaN when a mask is empty).

    Built from torchmetrics' ``mask_edges`` and ``distance_transform`` (SciPy engine: its default
    PyTorch engine is quadratic in the pixels, about 20 s for one 256 px mask): the 95th percentile
    of the distances from each mask's edge to the other's, then the larger of the two (the usual HD95).

    Args:
        pred, target: (N, 1, H, W) in {0, 1}.
    """
    from torchmetrics.functional.segmentation.utils import distance_transform, mask_edges

    out = []
    for p, t in zip(pred[:, 0].bool().cpu(), target[:, 0].bool().cpu()):
        if not p.any() or not t.any():
            out.append(math.nan)
            continue
        edge_p, edge_t = (e.bool() for e in mask_edges(p, t, crop=False))
        to_t = torch.as_tensor(
            distance_transform((~edge_t).float(), engine="scipy")
        )  # every pixel's distance to t's edge
        to_p = torch.as_tensor(distance_transform((~edge_p).float(), engine="scipy"))
        d_pt, d_tp = to_t[edge_p].double(), to_p[edge_t].double()
        out.append(max(torch.quantile(d_pt, 0.95).item(), torch.quantile(d_tp, 0.95).item()))
    return torch.tensor(out, dtype=torch.float64)


def summarize(values: list[float] | np.ndarray) -> dict[str, float]:
    """Mean, median and 5th percentile (NaN entries dropped), plus how many were counted."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"mean": math.nan, "median": math.nan, "p5": math.nan, "n": 0}
    return {"mean": float(v.mean()), "median": float(np.median(v)), "p5": float(np.percentile(v, 5)), "n": int(v.size)}
