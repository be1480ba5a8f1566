"""The classification Task for the shared engine: crop-and-mask, device augmentation, cross-entropy."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from ..config import ClassifierConfig
from ..data.augment import DeviceAugment, normalize
from ..engine.device import memory_format
from ..masking import crop_and_mask


class ClassificationTask:
    """Stage 2 for :func:`lungcls.engine.fit`; validation metric: macro F1."""

    metric, mode = "macro_f1", "max"

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: ClassifierConfig,
        device: torch.device,
        augment: DeviceAugment | None = None,
        channels_last: bool = True,
        label_smoothing: float = 0.0,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        self.cfg, self.device, self.augment, self.label_smoothing = cfg, device, augment, label_smoothing
        self.format = memory_format(device, channels_last)
        self.model = model.to(device, memory_format=self.format)
        self.class_weights = class_weights.to(device) if class_weights is not None else None

    def inputs(self, images: torch.Tensor, masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and masks -> (crop-and-masked float (N, 1, S, S) in [0, 1], empty-mask flags)."""
        return crop_and_mask(images, masks, self.cfg.mode, self.cfg.image_size, self.cfg.margin)

    def logits(self, x01: torch.Tensor) -> torch.Tensor:
        """float (N, 1, S, S) in [0, 1] -> logits (N, num_classes), float32."""
        x = normalize(x01, self.cfg.mean, self.cfg.std).contiguous(memory_format=self.format)
        return self.model(x).float()

    def training_loss(self, batch: Any, generator: torch.Generator) -> torch.Tensor:
        x, _ = self.inputs(batch.images, batch.masks)
        if self.augment is not None:
            x, _ = self.augment(x, None, generator)
        return F.cross_entropy(
            self.logits(x), batch.labels, weight=self.class_weights, label_smoothing=self.label_smoothing
        )

    def predict(self, loader: Any) -> dict[str, torch.Tensor]:
        """Probabilities, labels, cache rows and empty-mask flags over ``loader`` (CPU tensors)."""
        out: dict[str, list] = {"probs": [], "labels": [], "index": [], "empty": []}
        for batch in loader:
            x, empty = self.inputs(batch.images, batch.masks)
            out["probs"].append(torch.softmax(self.logits(x), dim=1).cpu())
            out["labels"].append(batch.labels.cpu())
            out["index"].append(batch.index.cpu())
            out["empty"].append(empty.cpu())
        return {k: torch.cat(v) for k, v in out.items()}

    def evaluate(self, loader: Any) -> dict[str, float]:
        """Mean cross-entropy, accuracy and macro F1 over ``loader``."""
        p = self.predict(loader)
        k = self.cfg.num_classes
        loss = F.nll_loss(torch.log(p["probs"].clamp_min(1e-12)), p["labels"]).item()
        preds = p["probs"].argmax(dim=1)
        return {
            "loss": loss,
            "accuracy": multiclass_accuracy(preds, p["labels"], num_classes=k, average="micro").item(),
            "macro_f1": multiclass_f1_score(preds, p["labels"], num_classes=k, average="macro").item(),
        }
