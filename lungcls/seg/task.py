"""The segmentation Task for the shared engine: Dice + BCE on device-augmented batches."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..config import SegmenterConfig
from ..data.augment import DeviceAugment, normalize, to_unit
from ..engine.device import memory_format
from .metrics import mask_scores


class SegmentationTask:
    """Stage 1 for :func:`lungcls.engine.fit`; validation metric: mean Dice per image."""

    metric, mode = "dice", "max"

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: SegmenterConfig,
        device: torch.device,
        augment: DeviceAugment | None = None,
        channels_last: bool = True,
    ) -> None:
        import segmentation_models_pytorch as smp

        self.cfg, self.device, self.augment = cfg, device, augment
        self.format = memory_format(device, channels_last)
        self.model = model.to(device, memory_format=self.format)
        self.unused_parameters = cfg.encoder_depth < 5  # smp keeps the encoder stages a shallower U-Net skips
        self.dice_loss = smp.losses.DiceLoss("binary", from_logits=True)
        self.bce_loss = smp.losses.SoftBCEWithLogitsLoss()

    def logits(self, x01: torch.Tensor) -> torch.Tensor:
        """float (B, 1, H, W) in [0, 1] -> lung logits (B, 1, H, W), float32."""
        x = normalize(x01, self.cfg.mean, self.cfg.std).contiguous(memory_format=self.format)
        return self.model(x).float()

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Dice + BCE of logits against {0, 1} masks."""
        target = masks.float()
        return self.dice_loss(logits, target) + self.bce_loss(logits, target)

    def at_model_size(self, x01: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Resize a batch to the model's working size (area for images, nearest for masks) if it differs."""
        s = self.cfg.image_size
        if x01.shape[-2:] == (s, s):
            return x01, masks
        x = F.interpolate(x01, size=(s, s), mode="area" if x01.shape[-1] > s else "bilinear")
        return x, F.interpolate(masks.float(), size=(s, s), mode="nearest").to(masks.dtype)

    def training_loss(self, batch: Any, generator: torch.Generator) -> torch.Tensor:
        x, masks = self.at_model_size(to_unit(batch.images), batch.masks)
        if self.augment is not None:
            x, masks = self.augment(x, masks, generator)
        return self.loss(self.logits(x), masks)

    def evaluate(self, loader: Any) -> dict[str, float]:
        """Mean loss, Dice, IoU and pixel accuracy over ``loader`` at the model's size (threshold 0.5, no post-processing)."""
        total, n, scores = 0.0, 0, {"dice": [], "iou": [], "pixel_accuracy": []}
        for batch in loader:
            x, masks = self.at_model_size(to_unit(batch.images), batch.masks)
            logits = self.logits(x)
            total += float(self.loss(logits, masks)) * len(batch)
            n += len(batch)
            for k, v in mask_scores((logits > 0).long(), masks).items():
                scores[k].append(v.cpu())
        out = {k: float(torch.cat(v).mean()) for k, v in scores.items()}
        return {"loss": total / max(n, 1), **out}
