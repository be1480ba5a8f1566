"""Segmentation post-processing: threshold, drop small regions, keep the largest, fill holes; mask-quality flags.

The steps have two kernels with the same result (tested equal, ties between components of equal
size going to the one whose first pixel comes first in raster order): :func:`postprocess_cpu`
(scikit-image and SciPy, about 10x faster on a CPU) and :func:`postprocess_device` (batched torch
ops, :mod:`lungcls.seg.components`, for the GPU). :func:`postprocess` picks by device. The flags are
computed once, by :func:`mask_flags`, on the final masks wherever they are.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import binary_fill_holes  # scipy comes with scikit-image
from skimage.measure import label

from ..config import PostprocessConfig
from .components import MAX_PIXELS, drop_small, fill_holes, keep_largest

FLAG_NO_LUNG = "no-lung"
FLAG_TOO_LARGE = "implausible-lung-area"
FLAG_ONE_LUNG = "one-lung-field"
FLAG_JOINED = "lung-fields-joined"
FLAG_MISALIGNED = "lung-fields-misaligned"
FLAG_UNCERTAIN = "uncertain-lungs"
FLAGS = (FLAG_NO_LUNG, FLAG_TOO_LARGE, FLAG_ONE_LUNG, FLAG_JOINED, FLAG_MISALIGNED, FLAG_UNCERTAIN)


def postprocess(probs: torch.Tensor, cfg: PostprocessConfig | None = None) -> tuple[torch.Tensor, list[list[str]]]:
    """Probabilities float (N, 1, H, W) -> (masks uint8 (N, 1, H, W) in {0, 1} on the same device, flags).

    On the CPU (or for images too large for the device kernel) each map goes through scikit-image;
    elsewhere the whole batch goes through the device kernel.
    """

    cfg = cfg or PostprocessConfig()
    if probs.device.type != "cpu" and probs.shape[-2] * probs.shape[-1] <= MAX_PIXELS:
        masks = postprocess_device(probs, cfg)
    elif len(probs):
        done = [postprocess_cpu(p, cfg) for p in probs[:, 0].float().cpu().numpy()]
        masks = torch.from_numpy(np.stack(done))[:, None].to(probs.device)
    else:
        masks = torch.zeros(probs.shape, dtype=torch.uint8, device=probs.device)
    return masks, mask_flags(masks, cfg, probs)


def postprocess_cpu(prob: np.ndarray, cfg: PostprocessConfig) -> np.ndarray:
    """One map float (H, W) in [0, 1] -> mask uint8 (H, W) in {0, 1} (scikit-image and SciPy)."""
    mask = prob > cfg.threshold
    if cfg.min_region and mask.any():
        labels = label(mask, connectivity=2)
        sizes = np.bincount(labels.ravel())
        mask = (sizes >= cfg.min_region * mask.size)[labels] & mask
    if cfg.keep_largest and mask.any():
        labels = label(mask, connectivity=2)
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        keep = np.lexsort((np.arange(len(sizes)), -sizes))[: cfg.keep_largest]  # largest first, then raster order
        mask = np.isin(labels, keep[sizes[keep] > 0])
    if cfg.fill_holes and mask.any():
        mask = binary_fill_holes(mask)
    return mask.astype(np.uint8)


def postprocess_device(probs: torch.Tensor, cfg: PostprocessConfig) -> torch.Tensor:
    """A batch float (B, 1, H, W) in [0, 1], ``H * W <= 2**23`` -> masks uint8 (B, 1, H, W) on the same device."""

    mask = probs > cfg.threshold
    if cfg.min_region:
        mask = drop_small(mask, cfg.min_region * probs.shape[-2] * probs.shape[-1])
    if cfg.keep_largest:
        mask = keep_largest(mask, cfg.keep_largest)
    if cfg.fill_holes:
        mask = fill_holes(mask)
    return mask.to(torch.uint8)


def mask_flags(
    masks: torch.Tensor, cfg: PostprocessConfig | None = None, probs: torch.Tensor | None = None
) -> list[list[str]]:
    """What looks wrong with each lung mask, from its row and column profiles (cheap, on any device), and,
    with the probabilities, from how sure the segmenter was.

    Args:
        masks: (N, 1, H, W), nonzero is lung; probs: float (N, 1, H, W) in [0, 1] the masks came from.

    Returns:
        Per image a list of :data:`FLAGS` (empty when the mask looks like two lungs): ``no-lung`` alone
        when there is (almost) no lung; otherwise any of ``implausible-lung-area``, ``one-lung-field``,
        ``lung-fields-joined``, ``lung-fields-misaligned``, ``uncertain-lungs`` (see :class:`PostprocessConfig`).
    """
    cfg = cfg or PostprocessConfig()
    m = (masks[:, 0] != 0).float()
    n, h, w = m.shape
    if n == 0 or not cfg.flags:
        return [[] for _ in range(n)]
    fraction = m.mean(dim=(1, 2))
    halves = torch.stack([m[:, :, : w // 2].sum(dim=(1, 2)), m[:, :, w // 2 :].sum(dim=(1, 2))], 1)
    side_ratio = halves.min(1).values / halves.max(1).values.clamp_min(1)
    columns = m.sum(dim=1)
    midline = columns[:, int(0.3 * w) : max(int(0.7 * w), int(0.3 * w) + 1)].min(1).values
    midline_share = midline / columns.max(1).values.clamp_min(1)
    rows = torch.arange(h, device=m.device, dtype=m.dtype)[None, :, None]
    centre_y = torch.stack([(m[:, :, : w // 2] * rows).sum(dim=(1, 2)), (m[:, :, w // 2 :] * rows).sum(dim=(1, 2))], 1)
    offset = (centre_y / halves.clamp_min(1)).diff(dim=1)[:, 0].abs() / h
    uncertain = torch.zeros_like(fraction, dtype=torch.bool)
    if probs is not None:
        p = probs[:, 0].float()
        area = m.sum(dim=(1, 2)).clamp_min(1)
        hesitant = ((p > 0.2) & (p < 0.8)).float().sum(dim=(1, 2)) / area
        confidence = (p * m).sum(dim=(1, 2)) / area
        uncertain = (hesitant > cfg.max_uncertain_share) | (confidence < cfg.min_mean_confidence)
    checks = torch.stack(
        [
            fraction > cfg.max_lung_fraction,
            side_ratio < cfg.min_side_ratio,
            midline_share > cfg.max_midline_share,
            (offset > cfg.max_centre_offset) & (side_ratio >= cfg.min_side_ratio),
            uncertain,
        ],
        1,
    ).tolist()
    out = []
    for f, row in zip(fraction.tolist(), checks):
        if f < cfg.min_lung_fraction:
            out.append([FLAG_NO_LUNG])
        else:
            out.append([name for name, bad in zip(FLAGS[1:], row) if bad])
    return out
