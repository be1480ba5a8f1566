"""The pixel arithmetic of model inputs, on the device: uint8 -> [0, 1] -> normalised, and resizing.

Only the stage Tasks (:mod:`lungcls.seg.task`, :mod:`lungcls.cls.task`) call these; everything that
feeds a model (training, inference, explanations, export) goes through its Task. The mean and std
come from the model's config, so they live in one place: :mod:`lungcls.config`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) in [0, 255] -> float32 in [0, 1]."""
    return images.float() / 255.0


def normalize(x01: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """float in [0, 1] -> ``(x - mean) / std``."""
    return (x01 - mean) / std


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize float (B, C, H, W) to (size, size): area averaging when shrinking, bilinear when enlarging
    (the reader's rule for files, here on the device)."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if h * w > size * size:
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def resize_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (B, 1, H, W) masks of any dtype to (size, size) by nearest neighbour; same dtype."""
    if masks.shape[-2:] == (size, size):
        return masks
    return F.interpolate(masks.float(), size=(size, size), mode="nearest").to(masks.dtype)
