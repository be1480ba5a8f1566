"""What a stage's model at inference holds, whatever the stage: its Task on a device, its batch size, where it
came from and which images it saw; saved and read through the model store. :class:`~lungcls.seg.segmenter.Segmenter`
and :class:`~lungcls.cls.classifier.Classifier` are the two kinds today."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .engine.device import inference_batch_size, resolve_device
from .store import write_model


class TrainedModel:
    """A trained network with its Task, ready for inference.

    Attributes:
        kind: what ``config.json`` calls it; device, amp: where and in which precision it runs (bf16 on CUDA);
        batch_size: images per forward pass; task: its Task (its preprocessing); model: the plain network;
        forward: the network, compiled when asked; info: the rest of its ``config.json`` (provenance, training,
        evaluation); images: content hashes of its Train/Val/Test images, if recorded.
    """

    kind = ""

    def _place(
        self,
        task: Callable[[torch.device], Any],
        device: str | torch.device,
        amp: bool,
        batch_size: int | None,
        on_gpu: int,
        compile: bool,
        info: dict | None,
        images: dict[str, list[str]] | None,
    ) -> None:
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.amp = amp
        self.batch_size = inference_batch_size(self.device, batch_size, on_gpu=on_gpu)
        self.task = task(self.device)
        self.model = self.task.model  # the plain module (saving, explanations, export)
        self.forward = torch.compile(self.model) if compile else self.model
        self.info = dict(info or {})
        self.images = images

    def to_config(self) -> dict:
        """Its ``config.json``: what it is and how it was trained."""
        raise NotImplementedError

    def save(self, folder: str | Path) -> str:
        """Write ``config.json``, ``model.safetensors`` (and ``images.json``) into ``folder`` through the model
        store; returns the weights' SHA-256."""
        return write_model(folder, self.to_config(), self.model.state_dict(), self.images)

    @property
    def seen_images(self) -> set[str]:
        """Content hashes of the images it was trained or validated on (empty when not recorded)."""
        return set((self.images or {}).get("Train", [])) | set((self.images or {}).get("Val", []))
