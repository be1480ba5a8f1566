"""Normalisation and augmentation on the device, on whole batches, image and mask together.

The geometric part is one random affine per image (rotation, scale, shift, optional horizontal
flip) applied with ``affine_grid`` + ``grid_sample``: bilinear for images, nearest for masks, so
mask and image stay aligned. The photometric part (brightness, contrast) touches images only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) in [0, 255] -> float32 in [0, 1]."""
    return images.float() / 255.0


def normalize(x: torch.Tensor, mean: float = 0.5, std: float = 0.25) -> torch.Tensor:
    """float in [0, 1] -> ``(x - mean) / std``."""
    return (x - mean) / std


def to_float(images: torch.Tensor, mean: float = 0.5, std: float = 0.25) -> torch.Tensor:
    """uint8 (B, C, H, W) in [0, 255] -> float32 normalised as ``(x / 255 - mean) / std``."""
    return normalize(to_unit(images), mean, std)


@dataclass
class DeviceAugment:
    """Random affine + brightness/contrast for CXR batches; runs wherever the batch is.

    Attributes:
        rotation: maximum rotation in degrees (uniform in [-rotation, rotation]).
        scale: (min, max) zoom factor.
        translate: maximum shift as a fraction of the image size.
        brightness: maximum additive change, as a fraction of the full range.
        contrast: maximum relative change of contrast around the image mean.
        hflip: probability of a horizontal flip (off by default: it moves the heart).
        p: probability that an image is augmented at all.
    """

    rotation: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.06
    brightness: float = 0.1
    contrast: float = 0.1
    hflip: float = 0.0
    p: float = 1.0

    @classmethod
    def from_config(cls, cfg) -> DeviceAugment:
        """From an :class:`lungcls.config.AugmentConfig`."""
        return cls(cfg.rotation, tuple(cfg.scale), cfg.translate, cfg.brightness, cfg.contrast, cfg.hflip, cfg.p)

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
        b, device = images.shape[0], images.device

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return torch.rand(b, device=device, generator=generator) * (hi - lo) + lo

        on = uniform(0, 1) < self.p
        angle = uniform(-self.rotation, self.rotation) * math.pi / 180 * on
        zoom = torch.where(on, uniform(*self.scale), torch.ones(b, device=device))
        shift = torch.stack([uniform(-self.translate, self.translate), uniform(-self.translate, self.translate)], 1)
        shift = shift * 2 * on[:, None]  # grid coordinates span [-1, 1]
        flip = torch.where(on & (uniform(0, 1) < self.hflip), -1.0, 1.0)
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
        gain = 1 + uniform(-self.contrast, self.contrast) * on
        offset = uniform(-self.brightness, self.brightness) * on
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = (images - mean) * gain[:, None, None, None] + mean + offset[:, None, None, None]
        return images.clamp_(0, 1), masks
