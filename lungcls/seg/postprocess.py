"""Stage 1 post-processing: threshold, keep the largest components, fill holes (scikit-image)."""

from __future__ import annotations

import inspect

import numpy as np
from skimage.measure import label
from skimage.morphology import remove_small_holes

from ..config import PostprocessConfig

FLAG_NO_LUNG = "no-lung"
FLAG_ONE_LUNG = "one-lung-field"
# scikit-image 0.26 renamed area_threshold to max_size
_HOLE_ARG = "max_size" if "max_size" in inspect.signature(remove_small_holes).parameters else "area_threshold"


def postprocess(prob: np.ndarray, cfg: PostprocessConfig = PostprocessConfig()) -> tuple[np.ndarray, list[str]]:
    """Turn a lung probability map into a clean mask.

    Args:
        prob: float (H, W) in [0, 1].

    Returns:
        (mask, flags): uint8 (H, W) in {0, 1}; flags ``no-lung`` when the lungs cover less than
        ``min_lung_fraction`` of the image, ``one-lung-field`` when only one component is left.
    """
    mask = prob > cfg.threshold
    if cfg.keep_largest and mask.any():
        labels = label(mask, connectivity=2)
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        keep = np.argsort(sizes)[::-1][: cfg.keep_largest]
        mask = np.isin(labels, keep[sizes[keep] > 0])
    if cfg.fill_holes and mask.any():
        mask = remove_small_holes(mask, **{_HOLE_ARG: mask.size})
    flags = []
    if mask.mean() < cfg.min_lung_fraction:
        flags.append(FLAG_NO_LUNG)
    elif label(mask, connectivity=2).max() == 1 and cfg.keep_largest >= 2:
        flags.append(FLAG_ONE_LUNG)
    return mask.astype(np.uint8), flags
