"""The classification Task: stage 2's preprocessing (crop-and-mask), loss and validation, for the shared
engine and for inference."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from ..config import ClassifierConfig
from ..data.augment import DeviceAugment
from ..engine.device import memory_format
from ..masking import crop_and_mask
from .mixing import mix_batch
from ..preprocess import normalize


class ClassificationTask:
    """Stage 2: owns how uint8 images and lung masks become the ResNet's input; validation metric: macro F1.

    Every consumer of the classifier (training, :class:`~lungcls.cls.classifier.Classifier`,
    Grad-CAM, export) goes through :meth:`prepare` and :meth:`normalize`.
    """

    metric, goal = "macro_f1", "max"  # the validation metric that picks the best epoch, and which way is better
    mix, mix_mode = 0.0, "both"  # Mixup/CutMix of training batches (see lungcls.cls.mixing); off unless set

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

    @property
    def masked(self) -> bool:
        """True when the input is masked to the lungs (outside is 0)."""
        return self.cfg.mode in ("masked", "masked-cropped")

    def prepare(
        self, images: torch.Tensor, masks: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """uint8 images (N, 1, H, W) and lung masks (or None) -> crop-and-mask on the device.

        Returns:
            (inputs float (N, 1, S, S) in [0, 1], lungs uint8 (N, 1, S, S) in the same geometry or None,
            empty bool (N,): the mask was empty and the raw image was used).
        """
        images = images.to(self.device, non_blocking=True)
        masks = masks.to(self.device, non_blocking=True) if masks is not None else None
        return crop_and_mask(images, masks, self.cfg.mode, self.cfg.image_size, self.cfg.margin)

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """float in [0, 1] -> the normalised model input (config mean/std, the run's memory format)."""
        return normalize(x01, self.cfg.mean, self.cfg.std).contiguous(memory_format=self.format)

    def inputs(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and masks -> (the ResNet's input float (N, 1, S, S) normalised, empty-mask flags (N,))."""
        x, _, empty = self.prepare(images, masks if self.cfg.mode != "raw" else None)
        return self.normalize(x), empty

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Model input -> logits float32 (N, K)."""
        return self.model(x).float()

    def training_loss(self, batch: Any, generator: torch.Generator) -> torch.Tensor:
        x, lungs, empty = self.prepare(batch.images, batch.masks if self.cfg.mode != "raw" else None)
        if self.augment is not None:
            x, lungs = self.augment(x, lungs, generator)
            if self.masked:  # photometric augmentation moved the background: outside the lungs is 0 again
                x = x * (lungs | empty[:, None, None, None]).to(x.dtype)
        if self.mix > 0:
            x, partner, lam = mix_batch(x, self.mix, self.mix_mode, generator)
            logits = self.logits(self.normalize(x))
            own = weighted_cross_entropy(logits, batch.labels, self.class_weights, self.label_smoothing)
            other = weighted_cross_entropy(logits, batch.labels[partner], self.class_weights, self.label_smoothing)
            return lam * own + (1 - lam) * other
        return weighted_cross_entropy(
            self.logits(self.normalize(x)), batch.labels, self.class_weights, self.label_smoothing
        )

    def predict(self, loader: Any) -> dict[str, torch.Tensor]:
        """Logits, labels, cache rows and empty-mask flags over ``loader`` (CPU tensors)."""
        out: dict[str, list] = {"logits": [], "labels": [], "index": [], "empty": []}
        for batch in loader:
            x, empty = self.inputs(batch.images, batch.masks)
            out["logits"].append(self.logits(x).cpu())
            out["labels"].append(batch.labels.cpu())
            out["index"].append(batch.index.cpu())
            out["empty"].append(empty.cpu())
        return {k: torch.cat(v) for k, v in out.items()}

    def evaluate(self, loader: Any) -> dict[str, float]:
        """Mean cross-entropy, accuracy and macro F1 over ``loader``."""
        p = self.predict(loader)
        k = self.cfg.num_classes
        loss = F.cross_entropy(p["logits"], p["labels"]).item()
        preds = p["logits"].argmax(dim=1)
        return {
            "loss": loss,
            "accuracy": multiclass_accuracy(preds, p["labels"], num_classes=k, average="micro").item(),
            "macro_f1": multiclass_f1_score(preds, p["labels"], num_classes=k, average="macro").item(),
        }


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy where each image weighs as its class, with label smoothing spread evenly over classes.

    ``F.cross_entropy(weight=...)`` also weights the smoothing term per class, so one rare, heavily weighted
    class pulls every image towards itself; here a batch of one class has the same loss with or without weights.
    """
    if class_weights is None:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    per_image = F.cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)
    w = class_weights[labels]
    return (per_image * w).sum() / w.sum().clamp_min(1e-12)
