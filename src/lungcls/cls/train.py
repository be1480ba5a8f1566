"""Train stage 2: the classifier as a :class:`~lungcls.stage.Stage` of the one lifecycle (data -> packed cache
(+ lung masks) -> network via the shared engine -> calibrated, evaluated run), and its entry point."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import builtin
from ..checkpoint import unwrap
from ..config import ClassifierConfig, TrainConfig, from_dict, to_dict
from ..data.augment import DeviceAugment
from ..data.manifest import order_classes
from ..defaults import TEMPERATURE_BOUNDS
from ..engine.distributed import Ranks
from ..errors import DataError
from ..model_card import classifier_summary
from ..models.classifiers import build_classifier, describe_weights
from ..recipes import classifier_recipe
from ..runs import TrainResult, images_record, split_rows
from ..seg.segmenter import Segmenter
from ..stage import DataRequest, Stage, run_stage
from ..store import linked_segmenter, segmenter_record
from .calibration import fit_temperature
from .classifier import Classifier
from .evaluate import check_segmenter_leak, predict, report_of
from .report import ClassificationReport, write_classification_report
from .task import ClassificationTask

log = logging.getLogger(__name__)

SegmenterLike = Segmenter | str | Path
MIN_CALIBRATION = 30  # Val images needed to fit a temperature (fewer: it stays 1)
MAX_CLASS_WEIGHT = 10.0


def class_weights(labels: np.ndarray, k: int) -> torch.Tensor:
    """Inverse-frequency weights ``n / (k * n_c)``, at most ``MAX_CLASS_WEIGHT`` (a class absent from Train
    gets weight 0). The cap keeps a class with a handful of Train images from dominating the loss."""
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    w = np.where(counts > 0, np.minimum(len(labels) / (k * np.maximum(counts, 1)), MAX_CLASS_WEIGHT), 0.0)
    return torch.tensor(w, dtype=torch.float32)


class ClassifierStage(Stage):
    """Stage 2: the classifier on raw or lung-masked/cropped inputs; calibrated on Val, evaluated on Val and Test."""

    kind = "classifier"

    def __init__(
        self,
        model: ClassifierConfig | None = None,
        train: TrainConfig | None = None,
        *,
        segmenter: SegmenterLike | None = None,
        weights: str | Path | None = None,
        classes: Sequence[str] | None = None,
        hold_out: str | None = None,
    ) -> None:
        self.model, self.train, self.segmenter, self.weights = model, train, segmenter, weights
        self.classes, self.hold_out = list(classes) if classes else None, hold_out
        self.seg: Segmenter | None = None
        self.masks: np.ndarray | None = None
        self.val_predictions: dict[str, torch.Tensor] | None = None

    def configure(self, saved: dict | None, out: Path) -> None:
        self.out = out
        if saved is not None:
            self.model = from_dict(ClassifierConfig, saved["model"], "model.")
            self.train = from_dict(TrainConfig, saved["train"], "train.")
            self.segmenter = self.segmenter or linked_segmenter(saved.get("segmenter"), out)
        if self.model is None or self.train is None:
            recipe_model, recipe_train = classifier_recipe()
            self.model, self.train = self.model or recipe_model, self.train or recipe_train
        if self.weights is not None and saved is None:
            self.model = dataclasses.replace(
                self.model, pretrained=self.weights == "imagenet", init_weights=describe_weights(self.weights)
            )

    def prepare(self, device: torch.device) -> DataRequest:
        self.seg = _segmenter_for(self.model, self.segmenter, device)  # a raw classifier may keep one (for its bundle)
        masked = self.masked
        if masked:
            self.model = dataclasses.replace(self.model, mask_source="predicted")
        elif self.model.mode != "raw" and self.model.mask_source != "gt":
            raise DataError(
                f"mode {self.model.mode!r} needs lung masks: a segmenter, or the dataset's masks (--gt-masks)"
            )
        pinned = frozenset(self.seg.seen_images) if masked else frozenset()
        return DataRequest(self.model.working_size, pinned, self.hold_out)

    @property
    def masked(self) -> bool:
        """True when the segmenter's masks feed the inputs."""
        return self.seg is not None and self.model.mode != "raw"

    def select(self, progress: bool, strict: bool) -> dict[str, np.ndarray]:
        cache = self.cache
        rows = split_rows(cache)
        if self.model.mask_source == "gt":  # masked-gt: only images that have a mask, never a raw fallback
            rows = _with_masks_only(cache, rows)
        names = self.classes or _class_set(cache, rows, self.hold_out)
        self.model = dataclasses.replace(
            self.model, working_size=cache.size[0], class_names=names, num_classes=len(names)
        )
        self.labels = _labels(cache, names, rows, self.hold_out)
        rows = {s: r[self.labels[r] >= 0] for s, r in rows.items()}
        if len(rows["Train"]) == 0 or len(rows["Val"]) == 0:
            raise DataError(f"{cache.path}: need images in Train ({len(rows['Train'])}) and Val ({len(rows['Val'])})")
        if self.masked:
            check_segmenter_leak(self.seg, cache, np.concatenate([rows["Val"], rows["Test"]]), strict)
            self.masks = self.seg.cache_masks(cache, progress)
        counts = np.bincount(self.labels[rows["Train"]], minlength=len(names))
        if rare := [f"{c} ({n})" for c, n in zip(names, counts.tolist()) if 0 < n < 10]:
            log.warning(
                "few Train images of %s: the classifier can hardly learn these classes, and their scores mean little",
                ", ".join(rare),
            )
        return rows

    def build(self, device: torch.device, fresh: bool) -> ClassificationTask:
        train, k = self.train, self.model.num_classes
        weights = class_weights(self.labels[self.rows["Train"]], k) if train.class_weighting else None
        net = build_classifier(self.model, self.weights if fresh else None)
        task = ClassificationTask(
            net, self.model, device, DeviceAugment(train.augment), train.channels_last, train.label_smoothing, weights
        )
        task.mix, task.mix_mode = train.mix, train.mix_mode
        return task

    def loader_options(self) -> dict:
        return {"with_masks": self.model.mode != "raw", "masks": self.masks, "labels": self.labels}

    def record(self) -> dict:
        return {"model": to_dict(self.model)}

    def links(self) -> dict:
        seg = segmenter_record(self.seg.info.get("source", {}), self.out) if self.seg is not None else None
        return {"segmenter": seg, "hold_out": self.hold_out}

    def trained(self, task: ClassificationTask, info: dict, progress: bool) -> Classifier:
        images = images_record(self.cache, self.rows)
        fitted = Classifier(unwrap(task.model), self.model, task.device, info=info, images=images)
        self.val_predictions = val = predict(fitted, self.loader("Val", task.device, Ranks()))
        if len(val["labels"]) < MIN_CALIBRATION:
            log.warning(
                "only %d Val images: too few to fit a calibration temperature, the probabilities stay "
                "uncalibrated (temperature 1)",
                len(val["labels"]),
            )
            return fitted
        t = fit_temperature(val["logits"], val["labels"])
        if t > 0.99 * TEMPERATURE_BOUNDS[1]:
            log.warning(
                "the calibration temperature reached its bound (%.1f): on Val the classifier's outputs carry "
                "almost no information, its probabilities are near uniform; do not use it",
                t,
            )
        return Classifier(
            fitted.model, dataclasses.replace(self.model, temperature=t), task.device, info=info, images=images
        )

    def evaluate(self, model: Classifier, split: str, progress: bool) -> ClassificationReport:
        p = self.val_predictions if split == "Val" else predict(model, self.loader(split, model.device, Ranks()))
        return report_of(model, self.cache, p, split.lower())

    def write_report(self, report: ClassificationReport, out: Path) -> list[Path]:
        return write_classification_report(report, out)

    def summary(self, report: ClassificationReport) -> dict:
        return classifier_summary(report)

    def samples(self, task: ClassificationTask):
        images, masks, _ = super().samples(task)
        if self.masks is not None:
            pick = self.rows["Train"][:: max(1, len(self.rows["Train"]) // 8)][:8]
            masks = torch.from_numpy(np.asarray(self.masks[pick]))[:, None]
        return images, masks, None


def train_classifier(
    data: Sequence[str | Path],
    out: str | Path,
    config: ClassifierConfig | None = None,
    train: TrainConfig | None = None,
    *,
    segmenter: SegmenterLike | None = None,
    weights: str | Path | None = None,
    classes: Sequence[str] | None = None,
    hold_out: str | None = None,
    **run: Any,
) -> TrainResult:
    """Train the classifier on ``data`` in ``config.mode``, calibrate it on Val, and evaluate it on Val and Test.

    Args:
        config, train: default :func:`lungcls.recipes.classifier_recipe` (``"auto"``: the GPU recipe where
            there is a GPU, else the CPU recipe), which is what ``lungcls train-cls`` trains with no options.
        segmenter: the stage-1 model whose masks feed the masked/cropped modes (a :class:`Segmenter`, a
            run folder, a bundle or a built-in name; default the built-in segmenter). ``config.mask_source
            == "gt"`` uses the dataset's masks instead (masked-gt: only images that have a mask).
        weights: start from ``"imagenet"`` (torchvision's local cache) or a weights file.
        classes: the class set, in output order (default: the classes found in the data).
        hold_out: a source set to hold out as Test (external validation): the classifier trains and
            validates on the other sources and is tested on this one.
        run: the run's options, those of :func:`lungcls.stage.run_stage`: ``cache_dir``, ``resume``,
            ``overwrite``, ``progress``, ``on_epoch_end``, ``strict`` (refuse data leaks, including Val/Test
            images the segmenter saw, instead of warning), ``tensorboard``, ``evaluate`` (the splits evaluated at
            the end).

    Raises:
        LungclsError: bad settings, no data, a run folder in the way, or (``strict``) a leak.
    """
    stage = ClassifierStage(config, train, segmenter=segmenter, weights=weights, classes=classes, hold_out=hold_out)
    return run_stage(stage, data, out, **run)


def _segmenter_for(model: ClassifierConfig, segmenter: SegmenterLike | None, device: torch.device) -> Segmenter | None:
    """The segmenter whose masks the classifier trains on, or None (raw, or the dataset's masks)."""
    if model.mode == "raw" and segmenter is None:
        return None
    if model.mask_source == "gt":
        if segmenter is not None:
            raise DataError("give either a segmenter or the dataset's masks (--gt-masks), not both")
        return None
    if isinstance(segmenter, Segmenter):
        return segmenter
    if segmenter is None:
        log.warning(
            "no segmenter given: using the built-in lung segmenter %r for the %s inputs", builtin.DEFAULT, model.mode
        )
    return Segmenter.load(segmenter or builtin.DEFAULT, device=device)


def _with_masks_only(cache, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    dropped = {s: int((~cache.has_mask[r]).sum()) for s, r in rows.items()}
    if any(dropped.values()):
        log.warning(
            "masked with the dataset's masks: images without a mask are left out (%s), so every "
            "image is masked and none falls back to raw",
            ", ".join(f"{s} {n}" for s, n in dropped.items()),
        )
    return {s: r[cache.has_mask[r]] for s, r in rows.items()}


def _class_set(cache, rows: dict[str, np.ndarray], hold_out: str | None) -> list[str]:
    """The classes of the data; with a held-out source, the classes present in Train."""
    if hold_out is None:
        return cache.class_names
    return order_classes({cache.class_names[cache.labels[r]] for r in rows["Train"]})


def _labels(cache, names: list[str], rows: dict[str, np.ndarray], hold_out: str | None) -> np.ndarray:
    """Cache labels as indices into ``names``; -1 for a held-out image whose class is not in training."""
    if hold_out is None:
        return cache.labels_for(names)
    lookup = np.array([names.index(c) if c in names else -1 for c in cache.class_names], dtype=np.int64)
    labels = lookup[cache.labels]
    unseen = int((labels[rows["Test"]] < 0).sum())
    if unseen:
        log.warning(
            "held-out source %r: %d test image(s) of classes absent from training are left out", hold_out, unseen
        )
    return labels
