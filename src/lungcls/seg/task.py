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
    # (for infection, "dice" is the mean Dice of the images with infection less the mean false-positive share of the
    # images without: see evaluate)

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
        """Dice + BCE of logits against {0, 1} masks. For infection, the Dice term is the mean soft Dice of the
        images that have infection (each image counts alike, small infections as much as large ones), and the
        images without infection are learnt from through the BCE (every pixel predicted there costs)."""
        target = masks.float()
        if self.cfg.target == "infection":
            return infected_dice_loss(logits, target) + self.bce_loss(logits, target)
        return self.dice_loss(logits, target) + self.bce_loss(logits, target)

    def training_loss(self, batch: Any, generator: torch.Generator) -> torch.Tensor:
        x, masks = self.prepare(batch.images, batch.masks)
        if self.augment is not None:
            x, masks = self.augment(x, masks, generator)
        return self.loss(self.logits(self.normalize(x)), masks)

    def evaluate(self, loader: Any) -> dict[str, float]:
        """Mean loss, Dice, IoU and pixel accuracy over ``loader`` at the model's size (threshold 0.5, no
        post-processing). For infection, ``dice_infected`` is the mean Dice of the images with infection, ``fp_share``
        the mean predicted share of the others, ``dice_pooled`` the Dice over every pixel of every image, and ``dice``
        (the metric that picks the best epoch) is ``dice_infected - fp_share``: the two targets of an infection
        segmenter, Dice on infected images and next to nothing on the others."""
        total, n, scores = 0.0, 0, {"dice": [], "iou": [], "pixel_accuracy": [], "pred": [], "true": [], "both": []}
        for batch in loader:
            x, masks = self.prepare(batch.images, batch.masks)
            logits = self.logits(self.normalize(x))
            total += float(self.loss(logits, masks)) * len(batch)
            n += len(batch)
            pred = (logits > 0).long()
            for k, v in mask_scores(pred, masks).items():
                scores[k].append(v.cpu())
            for k, v in (("pred", pred), ("true", masks), ("both", pred * masks)):
                scores[k].append(v.float().flatten(1).sum(1).cpu())
        s = {k: torch.cat(v) for k, v in scores.items()}
        out = {"loss": total / max(n, 1), **{k: float(s[k].mean()) for k in ("dice", "iou", "pixel_accuracy")}}
        if self.cfg.target == "infection":
            infected, pixels = s["true"] > 0, self.cfg.image_size**2
            pooled = 2 * s["both"].sum() / (s["pred"].sum() + s["true"].sum()).clamp_min(1)
            dice = float(s["dice"][infected].mean()) if infected.any() else 1.0
            fp = float((s["pred"][~infected] / pixels).mean()) if (~infected).any() else 0.0
            out.update(dice=dice - fp, dice_infected=dice, fp_share=fp, dice_pooled=float(pooled))
        return out


def infected_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - the mean soft Dice of the images whose target is not empty (0 when none is): (N, 1, H, W) logits and
    {0, 1} float targets."""
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.flatten(1)
    infected = t.sum(1) > 0
    if not infected.any():
        return logits.sum() * 0.0
    dice = (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)
    return 1 - dice[infected].mean()
