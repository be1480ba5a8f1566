"""Train stage 1: data -> packed cache -> U-Net trained with the shared engine -> run folder."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ..checkpoint import read_json
from ..config import PostprocessConfig, SegmenterConfig, TrainConfig, from_dict, to_dict
from ..data.augment import DeviceAugment
from ..data.cache import PackedCache
from ..data.loader import CacheLoader
from ..data.training_data import open_training_data
from ..engine.distributed import main_first, rank_batch_size, setup
from ..engine.trainer import FitResult, fit, seed_everything
from ..errors import DataError
from ..models import build_segmenter
from ..runinfo import environment
from .task import SegmentationTask

log = logging.getLogger(__name__)


def train_segmenter(
    data: Sequence[str | Path],
    out: str | Path,
    model: SegmenterConfig | None = None,
    train: TrainConfig | None = None,
    post: PostprocessConfig | None = None,
    cache_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end=None,
    strict: bool = False,
) -> FitResult:
    """Train a lung U-Net on the images of ``data`` that have lung masks.

    Args:
        data: dataset roots, CSV manifests, or one packed cache (with Train/Val splits, or made here).
        out: the run folder (``config.json``, ``model.safetensors``, history, ``last.*``).
        cache_dir: where to cache ``data`` (default ``out/cache``).
        resume: continue an interrupted run in ``out`` with its saved configuration.
    """
    out = Path(out)
    if resume:
        saved = read_json(out / "config.json")
        model, train = from_dict(SegmenterConfig, saved["model"]), from_dict(TrainConfig, saved["train"])
        post = from_dict(PostprocessConfig, saved["postprocess"])
    model, train, post = model or SegmenterConfig(), train or TrainConfig(), post or PostprocessConfig()
    ranks, device = setup(train.device)
    cache = main_first(
        ranks,
        lambda: open_training_data(
            data,
            cache_dir or out / "cache",
            size=model.image_size,
            split_seed=train.seed,
            progress=progress,
            strict=strict,
        ),
    )
    train_rows, val_rows = (cache.indices(s, with_mask=True) for s in ("Train", "Val"))
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise DataError(f"{cache.path}: need lung masks in both Train ({len(train_rows)}) and Val ({len(val_rows)})")
    seed_everything(train.seed)
    net = build_segmenter(model)
    task = SegmentationTask(net, model, device, DeviceAugment.from_config(train.augment), train.channels_last)
    if train.compile:
        import torch

        task.model = torch.compile(task.model)
    per_rank = rank_batch_size(train.batch_size, ranks)  # training rows are sharded across processes
    loaders = [
        CacheLoader(cache, train_rows, per_rank, device, shuffle=True, drop_last=len(train_rows) > train.batch_size,
                    seed=train.seed, placement=train.placement, rank=ranks.rank, world_size=ranks.world),
        CacheLoader(cache, val_rows, train.batch_size, device, seed=train.seed, placement=train.placement),
    ]  # fmt: skip
    run_config = {
        "kind": "segmenter",
        "model": to_dict(model),
        "postprocess": to_dict(post),
        "train": to_dict(train),
        "data": _data_info(data, cache, len(train_rows), len(val_rows)),
        "environment": environment(),
    }
    log.info("training on %d images, validating on %d, device %s", len(train_rows), len(val_rows), device)
    return fit(
        task,
        loaders[0],
        loaders[1],
        train,
        out,
        run_config,
        resume=resume,
        progress=progress,
        on_epoch_end=on_epoch_end,
        ranks=ranks,
    )


def _data_info(data: Sequence[str | Path], cache: PackedCache, n_train: int, n_val: int) -> dict:
    return {
        "inputs": [str(Path(p).resolve()) for p in data],
        "cache": str(cache.path.resolve()),
        "manifest_digest": cache.digest(),
        "image_size": list(cache.size),
        "train_images": n_train,
        "val_images": n_val,
    }
