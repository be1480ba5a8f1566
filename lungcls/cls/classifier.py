"""Stage 2 at inference: a trained ResNet-50 and its crop-and-mask settings, batched on the device."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import load_model, read_json
from ..config import ClassifierConfig, from_dict
from ..engine.device import autocast, inference_batch_size, resolve_device
from ..errors import CheckpointError
from ..models import build_classifier
from .task import ClassificationTask


class Classifier:
    """A trained classifier.

    Args:
        model: the ResNet-50; cfg: its config (input mode, margin, sizes, class names).
        seg_model: the stage-1 run it was trained with (from its config), if any.
        batch_size: images per forward pass (default 256 on a GPU, 8 on CPU).
        compile: run predictions through ``torch.compile`` (faster on a GPU after a warm-up).
    """

    def __init__(
        self, model: torch.nn.Module, cfg: ClassifierConfig, device: str | torch.device = "auto",
        amp: bool = True, batch_size: int | None = None, seg_model: str | None = None, compile: bool = False,
    ) -> None:  # fmt: skip
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.cfg, self.amp, self.seg_model = cfg, amp, seg_model
        self.batch_size = inference_batch_size(self.device, batch_size, on_gpu=256)
        self.task = ClassificationTask(model.eval(), cfg, self.device)
        self.model = self.task.model  # the plain module (explanations, export, saving)
        if compile:  # predictions go through the compiled forward
            self.task.model = torch.compile(self.model)
        self.run: Path | None = None  # the run folder it was loaded from

    @classmethod
    def load(cls, run: str | Path, device: str | torch.device = "auto", **kwargs) -> Classifier:
        """Load a run folder written by ``train-cls`` (``config.json`` + ``model.safetensors``), or a bundle."""
        run = Path(run)
        if (run / "pipeline.json").is_file():  # a bundle: take its classifier
            run = run / "classifier"
        config = read_json(run / "config.json")
        if config.get("kind") != "classifier":
            raise CheckpointError(f"{run}: not a classification run (kind {config.get('kind')!r})")
        cfg = from_dict(ClassifierConfig, config["model"])
        model = load_model(run / "model.safetensors", build_classifier(cfg))
        obj = cls(model, cfg, device, seg_model=config.get("seg_model"), **kwargs)
        obj.run = run
        return obj

    @property
    def needs_masks(self) -> bool:
        """True unless the classifier reads raw images."""
        return self.cfg.mode != "raw"

    @torch.inference_mode()
    def probabilities(
        self, images: torch.Tensor, masks: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities.

        Args:
            images: uint8 (N, 1, H, W) at the working size; masks: (N, 1, H, W) lung masks, or
                None for a ``raw`` classifier.

        Returns:
            (probs float32 (N, K) on CPU, empty bool (N,): mask empty, raw image used instead).
        """
        probs, empty = [], []
        for k in range(0, len(images), self.batch_size):
            x = images[k : k + self.batch_size].to(self.device, non_blocking=True)
            m = masks[k : k + self.batch_size].to(self.device, non_blocking=True) if masks is not None else None
            with autocast(self.device, self.amp):
                x01, e = self.task.inputs(x, m)
                probs.append(torch.softmax(self.task.logits(x01), dim=1).float().cpu())
            empty.append(e.cpu())
        if not probs:
            return torch.empty(0, self.cfg.num_classes), torch.empty(0, dtype=torch.bool)
        return torch.cat(probs), torch.cat(empty)
