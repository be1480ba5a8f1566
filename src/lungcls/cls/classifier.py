"""Stage 2 at inference: a trained ResNet, its crop-and-mask settings and its calibration, batched on the device."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from ..checkpoint import load_state
from ..config import ClassifierConfig, to_dict
from ..engine.device import autocast
from ..errors import CheckpointError, ConfigError
from ..models.classifiers import build_classifier
from ..store import linked_segmenter, read_model, write_model
from ..trained import TrainedModel
from .calibration import calibrated
from .task import ClassificationTask


class Classifier(TrainedModel):
    """A trained classifier.

    Args:
        model: the network; cfg: its config (input mode, margin, sizes, class names, temperature).
        batch_size: images per forward pass (default 256 on a GPU, 8 on CPU).
        compile: run predictions through ``torch.compile`` (faster on a GPU after a warm-up).
        info: where the model came from and how it was trained (the rest of its ``config.json``),
            including ``segmenter``: the stage-1 model whose masks it was trained on.
        images: content hashes of its Train/Val/Test images, if recorded.
    """

    kind = "classifier"

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: ClassifierConfig,
        device: str | torch.device = "auto",
        amp: bool = True,
        batch_size: int | None = None,
        compile: bool = False,
        info: dict | None = None,
        images: dict[str, list[str]] | None = None,
    ) -> None:
        self.cfg = cfg
        self._place(partial(ClassificationTask, model.eval(), cfg), device, amp, batch_size, 256, compile, info, images)

    @classmethod
    def load(cls, spec: str | Path, device: str | torch.device = "auto", **kwargs) -> Classifier:
        """Load a ``train-cls`` run folder or a bundle's classifier, checked by the model store. Only the
        architecture is rebuilt: no ImageNet or other initial weights are read, so pretrained runs load offline too.

        Raises:
            CheckpointError: ``spec`` is neither (the message says what it found), or its files do not pass
                the store's checks (SHA-256, value ranges).
        """
        files = read_model(spec, "classifier")
        cfg = files.section(ClassifierConfig, "model")
        try:
            model = build_classifier(cfg)
        except ConfigError as e:
            raise CheckpointError(f"{files.where}: {e}") from None
        load_state(model, files.weights, files.name)
        return cls(model, cfg, device, info=files.info, images=files.images, **kwargs)

    def to_config(self, segmenter: dict | None = None) -> dict:
        """Its ``config.json``: what it is and how it was trained; ``segmenter``: record this stage-1 model instead."""
        info = {k: v for k, v in self.info.items() if k not in ("kind", "source", "folder")}
        if segmenter is not None:
            info["segmenter"] = segmenter
        return {"kind": self.kind, "model": to_dict(self.cfg), **info}

    def save(self, folder: str | Path, segmenter: dict | None = None) -> str:
        """Write ``config.json``, ``model.safetensors`` (and ``images.json``) into ``folder``; returns the weights'
        SHA-256.

        Args:
            segmenter: what to record as its stage-1 model (default: what it was loaded or trained with).
        """
        return write_model(folder, self.to_config(segmenter), self.model.state_dict(), self.images)

    def segmenter_spec(self) -> str | Path | None:
        """The stage-1 model it was trained with, for :meth:`Segmenter.load`
        (see :func:`lungcls.store.linked_segmenter`):
        a built-in name or a folder; None for raw or dataset masks.

        Raises:
            CheckpointError: the segmenter is no longer where the run says; the message says how to go on.
        """
        return linked_segmenter(self.info.get("segmenter"), self.info.get("folder"))

    @property
    def class_names(self) -> list[str]:
        """Class names, in the order of the probabilities."""
        return list(self.cfg.class_names)

    @property
    def needs_masks(self) -> bool:
        """True unless the classifier reads raw images."""
        return self.cfg.mode != "raw"

    @torch.inference_mode()
    def logits(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Uncalibrated logits float32 (N, K) on CPU, and empty bool (N,) (mask empty: raw image used).

        Args:
            images: uint8 (N, 1, H, W) at the working size; masks: (N, 1, H, W) lung masks, or None for
                a ``raw`` classifier.
        """
        out, empty = [], []
        for k in range(0, len(images), self.batch_size):
            m = masks[k : k + self.batch_size] if masks is not None and self.needs_masks else None
            with autocast(self.device, self.amp):
                x, e = self.task.inputs(images[k : k + self.batch_size], m)
                out.append(self.forward(x).float().cpu())
            empty.append(e.cpu())
        if not out:
            return torch.empty(0, self.cfg.num_classes), torch.empty(0, dtype=torch.bool)
        return torch.cat(out), torch.cat(empty)

    def probabilities(
        self, images: torch.Tensor, masks: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities float32 (N, K) on CPU, calibrated by the saved temperature, and the empty flags.

        See :meth:`logits` for the arguments.
        """
        logits, empty = self.logits(images, masks)
        return calibrated(logits, self.cfg.temperature), empty
