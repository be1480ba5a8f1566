"""Train stage 1: data -> packed cache -> U-Net trained with the shared engine -> evaluated run folder."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ..atomic import write_json
from ..checkpoint import read_json
from ..config import PostprocessConfig, SegmenterConfig, TrainConfig, from_dict, to_dict
from ..data.augment import DeviceAugment
from ..data.loader import CacheLoader
from ..data.training_data import open_training_data
from ..engine.distributed import main_first, rank_batch_size, setup
from ..engine.trainer import fit, seed_everything
from ..errors import DataError
from ..model_card import segmenter_summary
from ..models import build_segmenter
from ..models.unet import smp_config
from ..reader import DEFAULT_SIZE
from ..recipes import segmenter_recipe
from ..runinfo import environment
from ..training import TrainResult, data_record, images_record, split_rows, start_run
from .evaluate import evaluate_segmenter, write_segmentation_report
from .segmenter import Segmenter
from .task import SegmentationTask

log = logging.getLogger(__name__)


def train_segmenter(
    data: Sequence[str | Path],
    out: str | Path,
    config: SegmenterConfig | None = None,
    train: TrainConfig | None = None,
    post: PostprocessConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
    encoder_weights: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch_end=None,
    strict: bool = False,
    tensorboard: bool = False,
) -> TrainResult:
    """Train a lung U-Net on the images of ``data`` that have lung masks, then evaluate it on Val and Test.

    Args:
        data: dataset roots, CSV manifests (e.g. a split from ``lungcls data split``), or one packed cache.
        out: the run folder (``config.json``, ``model.safetensors``, ``images.json``, history, ``last.*``,
            ``eval_seg_*``); refused when it holds a run, unless ``resume`` or ``overwrite``.
        config, train: default :func:`lungcls.recipes.segmenter_recipe` ``("default")``.
        cache_dir: where to cache ``data`` (default ``out/cache``); images are cached at 256 px (or the
            model's size if larger) and resized to the model's size on the device.
        encoder_weights: start the encoder from ``"imagenet"`` (smp's local cache) or a weights file.
        resume: continue an interrupted run in ``out`` with its saved configuration.
        tensorboard: also log to ``out/tensorboard`` (the ``tensorboard`` extra).
    """
    out = Path(out)
    saved = start_run(out, "segmenter", resume, overwrite)
    model = config  # the model's config: the architecture, and for stage 2 its inputs
    if saved is not None:
        model, train = from_dict(SegmenterConfig, saved["model"], "model."), from_dict(TrainConfig, saved["train"], "train.")
        post = from_dict(PostprocessConfig, saved["postprocess"], "postprocess.")
    recipe_model, recipe_train = segmenter_recipe("default")
    model, train, post = model or recipe_model, train or recipe_train, post or PostprocessConfig()
    if encoder_weights is not None and saved is None:
        model = _with_provenance(model, encoder_weights)
    ranks, device = setup(train.device)
    size = max(DEFAULT_SIZE[0], model.image_size)
    cache, made = main_first(ranks, lambda: open_training_data(
        data, cache_dir or out / "cache", size=size, split_seed=train.seed, progress=progress, strict=strict))  # fmt: skip
    if model.image_size > cache.size[0]:
        log.warning("the model's size (%d px) is larger than the cached images (%d px): they are upsampled",
                    model.image_size, cache.size[0])  # fmt: skip
    rows = split_rows(cache, with_mask=True)
    if len(rows["Train"]) == 0 or len(rows["Val"]) == 0:
        raise DataError(f"{cache.path}: need lung masks in both Train ({len(rows['Train'])}) and Val ({len(rows['Val'])})")
    seed_everything(train.seed)
    net = build_segmenter(model, None if saved else encoder_weights)
    task = SegmentationTask(net, model, device, DeviceAugment(train.augment), train.channels_last)
    if train.compile:
        import torch

        task.model = torch.compile(task.model)
    per_rank = rank_batch_size(train.batch_size, ranks)  # training rows are sharded across processes
    loaders = [
        CacheLoader(cache, rows["Train"], per_rank, device, shuffle=True, drop_last=len(rows["Train"]) > train.batch_size,
                    seed=train.seed, placement=train.placement, rank=ranks.rank, world_size=ranks.world),
        CacheLoader(cache, rows["Val"], train.batch_size, device, seed=train.seed, placement=train.placement),
    ]  # fmt: skip
    run_config = {"kind": "segmenter", "model": to_dict(model), "postprocess": to_dict(post), "train": to_dict(train),
                  "data": data_record(data, cache, rows), "environment": environment(), **smp_config(model)}  # fmt: skip
    if ranks.main:
        _record(out, cache, rows, made)
    log.info("training on %d images, validating on %d, device %s", len(rows["Train"]), len(rows["Val"]), device)
    if tensorboard and ranks.main:
        on_epoch_end = _with_tensorboard(out, cache, rows["Train"], task, on_epoch_end)
    result = fit(task, loaders[0], loaders[1], train, out, run_config, resume=resume, progress=progress,
                 on_epoch_end=on_epoch_end, ranks=ranks)  # fmt: skip
    segmenter = Segmenter.load(out, device=device)
    run = TrainResult(out, result, segmenter, split=made)
    if ranks.main:
        for split in ("Val", "Test"):
            if len(rows[split]):
                report = evaluate_segmenter(segmenter, cache, rows[split], split.lower(), progress=progress)
                write_segmentation_report(report, out)
                run.reports[split.lower()] = report
        run_config = read_json(out / "config.json")  # as fit left it, with the best epoch's metrics
        run_config["evaluation"] = {k: segmenter_summary(r) for k, r in run.reports.items()}
        write_json(out / "config.json", run_config)
        segmenter.info["evaluation"] = run_config["evaluation"]
    return run


def _record(out: Path, cache, rows, made: str | None) -> None:
    write_json(out / "images.json", images_record(cache, rows))
    if made is not None:  # a split made here: keep it, so the other stage can use the same one
        cache.manifest.write_csv(out / "split.csv")
        log.warning("the split made for this run is in %s; pass it to train-cls so both stages share it",
                    out / "split.csv")  # fmt: skip


def _with_provenance(model: SegmenterConfig, weights: str | Path) -> SegmenterConfig:
    import dataclasses

    from ..models.resnet import describe_weights

    return dataclasses.replace(model, encoder_weights=describe_weights(weights))


def _with_tensorboard(out: Path, cache, rows, task: SegmentationTask, then):
    """``then`` (if any) after logging the epoch to ``out/tensorboard`` with predictions on 8 training images."""
    import numpy as np
    import torch

    from ..tensorboard import TensorBoardLogger

    pick = rows[:: max(1, len(rows) // 8)][:8]
    images = torch.from_numpy(np.asarray(cache.images[pick]))[:, None]
    masks = torch.from_numpy(np.asarray(cache.masks[pick]))[:, None]

    def predict(x: torch.Tensor) -> torch.Tensor:
        p = task.logits(task.inputs(x))
        return torch.nn.functional.interpolate((p > 0).float(), size=x.shape[-2:], mode="nearest")

    logger = TensorBoardLogger(out / "tensorboard", images, masks, predict)

    def callback(epoch: int, record: dict) -> None:
        logger(epoch, record)
        if then is not None:
            then(epoch, record)

    return callback
