"""Stage 1 post-processing: threshold, keep the largest components (scikit-image), fill holes (SciPy)."""

from __future__ import annotations

import numpy as np
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
        keep = np.argsort(sizes)[::-1][: cfg.keep_largest]
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
