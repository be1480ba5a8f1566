"""Train stage 1: the lung U-Net as a :class:`~lungcls.stage.Stage` of the one lifecycle, and its entry point."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import unwrap
from ..config import PostprocessConfig, SegmenterConfig, TrainConfig, from_dict, to_dict
from ..data.augment import DeviceAugment
from ..defaults import WORKING_SIZE
from ..errors import DataError
from ..model_card import segmenter_summary
from ..models.classifiers import describe_weights
from ..models.unet import build_segmenter, smp_config
from ..recipes import segmenter_recipe
from ..runs import TrainResult, images_record, split_rows
from ..stage import DataRequest, Stage, run_stage
from .evaluate import SegmentationReport, evaluate_segmenter, write_segmentation_report
from .segmenter import Segmenter
from .task import SegmentationTask

log = logging.getLogger(__name__)


class SegmenterStage(Stage):
    """Stage 1: a U-Net on the images that have masks of its target (lungs, or infection); evaluated on Val and
    Test (Dice per set; for infection also the false-positive area on images without infection)."""

    kind = "segmenter"

    def __init__(
        self,
        model: SegmenterConfig | None = None,
        train: TrainConfig | None = None,
        post: PostprocessConfig | None = None,
        encoder_weights: str | Path | None = None,
    ) -> None:
        self.model, self.train, self.post, self.weights = model, train, post, encoder_weights

    def configure(self, saved: dict | None, out: Path) -> None:
        if saved is not None:
            self.model = from_dict(SegmenterConfig, saved["model"], "model.")
            self.train = from_dict(TrainConfig, saved["train"], "train.")
            self.post = from_dict(PostprocessConfig, saved["postprocess"], "postprocess.")
        if self.model is None or self.train is None:
            recipe_model, recipe_train = segmenter_recipe()
            self.model, self.train = self.model or recipe_model, self.train or recipe_train
        self.post = self.post or PostprocessConfig.for_target(self.model.target)
        if self.weights is not None and saved is None:
            self.model = dataclasses.replace(self.model, encoder_weights=describe_weights(self.weights))

    def prepare(self, device: torch.device) -> DataRequest:
        self.device = device
        return DataRequest(size=max(WORKING_SIZE, self.model.image_size), masks=self.model.target)

    def select(self, progress: bool, strict: bool) -> dict[str, np.ndarray]:
        if self.model.image_size > self.cache.size[0]:
            log.warning(
                "the model's size (%d px) is larger than the cached images (%d px): they are upsampled",
                self.model.image_size,
                self.cache.size[0],
            )
        rows = split_rows(self.cache, with_mask=True)
        what = "lung" if self.model.target == "lungs" else "infection"
        if len(rows["Train"]) == 0 or len(rows["Val"]) == 0:
            raise DataError(
                f"{self.cache.path}: need {what} masks in both Train ({len(rows['Train'])}) and Val ({len(rows['Val'])})"
            )
        if self.model.target == "infection" and not any(self.cache.masks[i].any() for i in rows["Train"]):
            raise DataError(f"{self.cache.path}: every infection mask in Train is empty: nothing to learn")
        return rows

    def build(self, device: torch.device, fresh: bool) -> SegmentationTask:
        net = build_segmenter(self.model, self.weights if fresh else None)
        return SegmentationTask(net, self.model, device, DeviceAugment(self.train.augment), self.train.channels_last)

    def record(self) -> dict:
        return {"model": to_dict(self.model), "postprocess": to_dict(self.post), **smp_config(self.model)}

    def trained(self, task: SegmentationTask, info: dict, progress: bool) -> Segmenter:
        """The trained segmenter; a lung segmenter also gets its input gate's threshold, from its Val images."""
        images = images_record(self.cache, self.rows)
        model = Segmenter(unwrap(task.model), self.model, self.post, task.device, info=info, images=images)
        if self.model.target == "lungs":
            from ..gate import calibrate

            val = torch.from_numpy(np.asarray(self.cache.images[np.sort(self.rows["Val"])]))[:, None]
            if gate := calibrate(model, val):
                model.info["gate"] = gate
        return model

    def evaluate(self, model: Segmenter, split: str, progress: bool) -> SegmentationReport:
        return evaluate_segmenter(
            model, self.cache, self.rows[split], split.lower(), progress=progress, lungs=self._lungs()
        )

    def _lungs(self) -> Segmenter | None:
        """For an infection segmenter, the built-in lung segmenter its false-positive share of the lungs is
        measured in (None for a lung segmenter, or an installation without one)."""
        from .. import builtin

        if self.model.target != "infection" or builtin.DEFAULT not in builtin.names():
            return None
        if getattr(self, "_lung_model", None) is None:
            self._lung_model = Segmenter.load(builtin.DEFAULT, device=self.device, batch_size=32)
        return self._lung_model

    def write_report(self, report: SegmentationReport, out: Path) -> list[Path]:
        return write_segmentation_report(report, out)

    def summary(self, report: SegmentationReport) -> dict:
        return segmenter_summary(report)

    def samples(self, task: SegmentationTask):
        images, masks, _ = super().samples(task)

        def predict(x: torch.Tensor) -> torch.Tensor:
            p = task.logits(task.inputs(x))
            return torch.nn.functional.interpolate((p > 0).float(), size=x.shape[-2:], mode="nearest")

        return images, masks, predict


def train_segmenter(
    data: Sequence[str | Path],
    out: str | Path,
    config: SegmenterConfig | None = None,
    train: TrainConfig | None = None,
    post: PostprocessConfig | None = None,
    *,
    encoder_weights: str | Path | None = None,
    **run: Any,
) -> TrainResult:
    """Train a lung U-Net on the images of ``data`` that have lung masks, then evaluate it on Val and Test.

    Args:
        data: dataset roots, CSV manifests (e.g. a split from ``lungcls data split``), or one packed cache.
        out: the run folder (``config.json``, ``model.safetensors``, ``images.json``, history, ``last.*``,
            ``eval_seg_*``); refused when it holds a run, unless ``resume`` or ``overwrite``.
        config, train: default :func:`lungcls.recipes.segmenter_recipe` (``"auto"``: the GPU recipe where
            there is a GPU, else the CPU recipe).
        encoder_weights: start the encoder from ``"imagenet"`` (smp's local cache) or a weights file.
        run: the run's options, those of :func:`lungcls.stage.run_stage`: ``cache_dir`` (default ``out/cache``;
            images are cached at the working size, or the model's if larger), ``resume``, ``overwrite``,
            ``progress``, ``on_epoch_end``, ``strict``, ``tensorboard``, ``evaluate`` (the splits evaluated at
            the end).
    """
    return run_stage(SegmenterStage(config, train, post, encoder_weights), data, out, **run)
