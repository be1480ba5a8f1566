"""Optional TensorBoard logging of a training run (``--tensorboard``; the ``tensorboard`` extra).

Per epoch: every number of the engine's record (losses, validation metrics, learning rate, images/s)
as a scalar. Once: a few training images with their lung masks outlined; for stage 1, each epoch, the
same images with the predicted lungs. The CSV/JSON history is written either way; this only adds
``RUN/tensorboard/`` for people who look there (``tensorboard --logdir RUN``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .errors import LungclsError


class TensorBoardLogger:
    """An ``on_epoch_end`` callback for :func:`lungcls.engine.trainer.fit`.

    Args:
        folder: where the event files go (``RUN/tensorboard``).
        images: uint8 (N, 1, H, W) sample images; masks: their {0, 1} masks (or None).
        predict: maps the sample images to predicted {0, 1} masks (N, 1, H, W) with the current weights
            (stage 1), or None.
    """

    def __init__(
        self,
        folder: str | Path,
        images: torch.Tensor,
        masks: torch.Tensor | None = None,
        predict: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise LungclsError(
                "TensorBoard logging needs the tensorboard package: pip install 'lungcls[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(str(folder))
        self.images, self.masks, self.predict = images.cpu(), masks.cpu() if masks is not None else None, predict
        if self.masks is not None:
            self.writer.add_images("samples/ground truth (red)", outlined(self.images, self.masks, 0), 0)
        self.writer.flush()

    def __call__(self, epoch: int, record: dict) -> None:
        step = epoch + 1
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "epoch" and np.isfinite(value):
                group = "validation" if key.startswith("val_") else "train"
                self.writer.add_scalar(f"{group}/{key}", value, step)
        if self.predict is not None:
            with torch.inference_mode():
                predicted = self.predict(self.images).cpu()
            self.writer.add_images("samples/predicted (green)", outlined(self.images, predicted, 1), step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


def outlined(images: torch.Tensor, masks: torch.Tensor, channel: int) -> torch.Tensor:
    """RGB float (N, 3, H, W) in [0, 1]: the gray images with each mask's edge in one colour channel."""
    x = images.float().div(255).repeat(1, 3, 1, 1)
    m = (masks != 0).float()
    edge = (m - torch.nn.functional.max_pool2d(-m, 3, 1, 1).neg()).clamp(0, 1)  # mask minus its erosion
    for c in range(3):
        x[:, c : c + 1] = torch.where(edge > 0, float(c == channel), x[:, c : c + 1])
    return x
