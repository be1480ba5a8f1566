"""The segmentation Task: stage 1's preprocessing, loss and validation, for the shared engine and for inference."""

from __future__ import annotations

from typing import Any

import torch

from ..config import SegmenterConfig
from ..data.augment import DeviceAugment
from ..engine.device import memory_format
from ..preprocess import normalize, resize, resize_masks, to_unit
from .metrics import mask_scores


class SegmentationTask:
    """Stage 1: owns how a uint8 batch becomes the U-Net's input; validation metric: mean Dice per image.

    Every consumer of the U-Net (training, :class:`~lungcls.seg.segmenter.Segmenter`, export) goes
    through :meth:`inputs` (or :meth:`prepare` + :meth:`normalize` where augmentation sits between).
    """

    metric, goal = "dice", "max"  # the validation metric that picks the best epoch, and which way is better

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
        self.dice_loss = smp.losses.DiceLoss("binary", from_logits=True)
        self.bce_loss = smp.losses.SoftBCEWithLogitsLoss()

    def prepare(
        self, images: torch.Tensor, masks: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 (B, 1, H, W) (and {0, 1} masks) -> float in [0, 1] at the model's size (and masks resized)."""
        s = self.cfg.image_size
        x = resize(to_unit(images.to(self.device, non_blocking=True)), s)
        return x, (resize_masks(masks.to(self.device, non_blocking=True), s) if masks is not None else None)

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """float in [0, 1] -> the normalised model input (config mean/std, the run's memory format)."""
        return normalize(x01, self.cfg.mean, self.cfg.std).contiguous(memory_format=self.format)

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 1, H, W), any H and W -> the U-Net's input: float (B, 1, S, S) normalised."""
        return self.normalize(self.prepare(images)[0])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Model input -> lung logits float32 (B, 1, S, S)."""
        return self.model(x).float()

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Dice + BCE of logits against {0, 1} masks."""
        target = masks.float()
        return self.dice_loss(logits, target) + self.bce_loss(logits, target)

    def training_loss(self, batch: Any, generator: torch.Generator) -> torch.Tensor:
        x, masks = self.prepare(batch.images, batch.masks)
        if self.augment is not None:
            x, masks = self.augment(x, masks, generator)
        return self.loss(self.logits(self.normalize(x)), masks)

    def evaluate(self, loader: Any) -> dict[str, float]:
        """Mean loss, Dice, IoU and pixel accuracy over ``loader`` at the model's size (threshold 0.5, no
        post-processing)."""
        total, n, scores = 0.0, 0, {"dice": [], "iou": [], "pixel_accuracy": []}
        for batch in loader:
            x, masks = self.prepare(batch.images, batch.masks)
            logits = self.logits(self.normalize(x))
            total += float(self.loss(logits, masks)) * len(batch)
            n += len(batch)
            for k, v in mask_scores((logits > 0).long(), masks).items():
                scores[k].append(v.cpu())
        out = {k: float(torch.cat(v).mean()) for k, v in scores.items()}
        return {"loss": total / max(n, 1), **out}
