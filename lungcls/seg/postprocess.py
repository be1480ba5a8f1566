"""Stage 1 post-processing: threshold, keep the largest components, fill holes, flag implausible masks.

Two implementations of the same steps: :func:`postprocess` for one NumPy map (scikit-image and
SciPy, used on CPU) and :func:`postprocess_batch` for a batch of maps on the device (the GPU path,
:mod:`lungcls.seg.components`). They give the same masks and flags; ties between components of
equal size go to the one whose first pixel comes first in raster order.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import binary_fill_holes  # scipy comes with scikit-image
from skimage.measure import label

from ..config import PostprocessConfig

FLAG_NO_LUNG = "no-lung"
FLAG_ONE_LUNG = "one-lung-field"
FLAG_TOO_LARGE = "implausible-lung-area"


def postprocess(prob: np.ndarray, cfg: PostprocessConfig = PostprocessConfig()) -> tuple[np.ndarray, list[str]]:
    """Turn a lung probability map into a clean mask.

    Args:
        prob: float (H, W) in [0, 1].

    Returns:
        (mask, flags): uint8 (H, W) in {0, 1}; flags ``no-lung`` when the lungs cover less than
        ``min_lung_fraction`` of the image, ``implausible-lung-area`` above ``max_lung_fraction``,
        ``one-lung-field`` when only one component is left.
    """
    mask = prob > cfg.threshold
    if cfg.keep_largest and mask.any():
        labels = label(mask, connectivity=2)
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        keep = np.lexsort((np.arange(len(sizes)), -sizes))[: cfg.keep_largest]  # largest first, then raster order
        mask = np.isin(labels, keep[sizes[keep] > 0])
    if cfg.fill_holes and mask.any():
        mask = binary_fill_holes(mask)
    flags = []
    if mask.mean() < cfg.min_lung_fraction:
        flags.append(FLAG_NO_LUNG)
    elif mask.mean() > cfg.max_lung_fraction:
        flags.append(FLAG_TOO_LARGE)
    elif label(mask, connectivity=2).max() == 1 and cfg.keep_largest >= 2:
        flags.append(FLAG_ONE_LUNG)
    return mask.astype(np.uint8), flags


def postprocess_batch(
    probs: torch.Tensor, cfg: PostprocessConfig = PostprocessConfig()
) -> tuple[torch.Tensor, list[list[str]]]:
    """:func:`postprocess` for a batch, on the batch's device.

    Args:
        probs: float (B, 1, H, W) in [0, 1], ``H * W <= 2**23``.

    Returns:
        (masks uint8 (B, 1, H, W) in {0, 1} on the same device, flags per image).
    """
    from .components import count_components, fill_holes, keep_largest, label_components

    mask = probs > cfg.threshold
    if cfg.keep_largest:
        mask = keep_largest(mask, cfg.keep_largest)
    if cfg.fill_holes:
        mask = fill_holes(mask)
    fraction = mask.float().mean(dim=(1, 2, 3))
    one_field = torch.zeros_like(fraction, dtype=torch.bool)
    if cfg.keep_largest >= 2:
        one_field = count_components(label_components(mask, 8)) == 1
    flags = []
    for f, one in zip(fraction.tolist(), one_field.tolist()):
        if f < cfg.min_lung_fraction:
            flags.append([FLAG_NO_LUNG])
        elif f > cfg.max_lung_fraction:
            flags.append([FLAG_TOO_LARGE])
        else:
            flags.append([FLAG_ONE_LUNG] if one else [])
    return mask.to(torch.uint8), flags
