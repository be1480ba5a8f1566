"""Augmentation on the device, on whole batches, image and mask together.

The geometric part is one random affine per image (rotation, scale, shift, optional horizontal
flip) applied with ``affine_grid`` + ``grid_sample``: bilinear for images, nearest for masks, so
mask and image stay aligned. The photometric part (brightness, contrast) touches images only.
The settings are an :class:`lungcls.config.AugmentConfig` (saved with every run).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import AugmentConfig


class DeviceAugment:
    """Random affine + brightness/contrast for CXR batches; runs wherever the batch is.

    Args:
        cfg: rotation (degrees), scale (min, max zoom), translate (fraction of the size), brightness
            (additive, fraction of the range), contrast (relative, around the image mean), hflip
            (probability; off by default, it moves the heart), p (probability an image is augmented).
    """

    def __init__(self, cfg: AugmentConfig | None = None) -> None:
        self.cfg = cfg or AugmentConfig()

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment a batch.

        Args:
            images: float (B, C, H, W) in [0, 1] (call before normalising).
            masks: optional (B, 1, H, W) mask of any dtype; returned in the same dtype.
            generator: a generator on the batch's device, for reproducible draws.

        Returns:
            (images, masks) of the same shapes; images clipped to [0, 1].
        """
        c, b, device = self.cfg, images.shape[0], images.device

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return torch.rand(b, device=device, generator=generator) * (hi - lo) + lo

        on = uniform(0, 1) < c.p
        angle = uniform(-c.rotation, c.rotation) * math.pi / 180 * on
        zoom = torch.where(on, uniform(*c.scale), torch.ones(b, device=device))
        shift = torch.stack([uniform(-c.translate, c.translate), uniform(-c.translate, c.translate)], 1)
        shift = shift * 2 * on[:, None]  # grid coordinates span [-1, 1]
        flip = torch.where(on & (uniform(0, 1) < c.hflip), -1.0, 1.0)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        images = F.grid_sample(
            images, grid.to(images.dtype), mode="bilinear", padding_mode="zeros", align_corners=False
        )
        if masks is not None:
            warped = F.grid_sample(masks.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
            masks = warped.to(masks.dtype)
        gain = 1 + uniform(-c.contrast, c.contrast) * on
        offset = uniform(-c.brightness, c.brightness) * on
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = (images - mean) * gain[:, None, None, None] + mean + offset[:, None, None, None]
        return images.clamp_(0, 1), masks
