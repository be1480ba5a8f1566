"""The one stage lifecycle: everything that training a stage involves around the engine, written once.

A stage (the lung segmenter, the classifier, any further model) is a Task for the engine plus the hooks of
:class:`Stage`; :func:`run_stage` does the rest, in this order:

1. the run folder: refuse one that holds a run, or read the saved settings to resume (:func:`lungcls.runs.start_run`);
2. the stage settles its configs: the recipe's, the caller's or the saved ones (:meth:`Stage.configure`);
3. processes and device, and what the stage needs there, e.g. the classifier's segmenter (:meth:`Stage.prepare`);
4. the data: one split packed cache, made once for every process, and the stage's rows (:meth:`Stage.select`);
5. the Task (:meth:`Stage.build`), compiled if asked, and its loaders (:meth:`Stage.loader`);
6. the run's record (``config.json``, ``images.json``, ``split.csv``), then :func:`lungcls.engine.trainer.fit`;
7. the trained model, made from the best weights in memory (:meth:`Stage.trained`, e.g. calibrated);
8. its evaluation on Val and Test (:meth:`Stage.evaluate`), each report written by its stage's one writer;
9. ``config.json`` once more, complete (``status``, evaluation, the weights' SHA-256).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import write_json
from .checkpoint import load_state
from .config import TrainConfig, to_dict
from .data.cache import PackedCache
from .data.loader import CacheLoader
from .data.training_data import open_training_data
from .engine.budget import TimeBudget
from .engine.distributed import Ranks, main_first, rank_batch_size, setup
from .engine.trainer import FitResult, Task, fit, seed_everything
from .runs import TrainResult, data_record, environment, images_record, start_run
from .tensorboard import TensorBoardLogger

log = logging.getLogger(__name__)


@dataclass
class DataRequest:
    """What a stage asks of the data: the cache's working size, images pinned to Train (content hashes, e.g.
    those the classifier's segmenter saw), a source to hold out as Test, and the masks to read (lungs or
    infection)."""

    size: int
    pinned: frozenset[str] = frozenset()
    hold_out: str | None = None
    masks: str = "lungs"


class Stage:
    """A stage's part in :func:`run_stage`. A subclass sets :attr:`kind` and fills in the hooks; the lifecycle
    calls them in the order of the module's docstring, once per run.

    Attributes:
        kind: what the model is called in ``config.json`` (``"segmenter"``, ``"classifier"``).
        model: the model's config (settled by :meth:`configure`); train: the engine's settings.
        cache, rows: the packed data and the stage's rows per split (``Train``, ``Val``, ``Test``), set by
            the lifecycle and :meth:`select`.
    """

    kind = ""
    model: Any = None
    train: TrainConfig
    cache: PackedCache
    rows: dict[str, np.ndarray]

    def configure(self, saved: dict | None, out: Path) -> None:
        """Settle :attr:`model` and :attr:`train`: the saved run's when ``saved`` (resuming), else the caller's or a
        recipe's."""
        raise NotImplementedError

    def prepare(self, device: torch.device) -> DataRequest:
        """Load what the stage needs on ``device``, and say what data it needs."""
        raise NotImplementedError

    def select(self, progress: bool, strict: bool) -> dict[str, np.ndarray]:
        """The cache rows the stage trains, validates and tests on (also the place for data checks)."""
        raise NotImplementedError

    def build(self, device: torch.device, fresh: bool) -> Task:
        """The Task around a new network (``fresh``: from the initial weights, if any; else they are resumed)."""
        raise NotImplementedError

    def loader(self, split: str, device: torch.device, ranks: Ranks) -> CacheLoader:
        """Batches of one split; Train shuffled and sharded across processes (each its share of the batch)."""
        train, rows, bs = split == "Train", self.rows[split], self.train.batch_size
        shard = {"rank": ranks.rank, "world_size": ranks.world} if train else {}
        return CacheLoader(
            self.cache,
            rows,
            rank_batch_size(bs, ranks) if train else bs,
            device,
            shuffle=train,
            drop_last=train and len(rows) > bs,
            seed=self.train.seed,
            placement=self.train.placement,
            **self.loader_options(),
            **shard,
        )

    def loader_options(self) -> dict:
        """Extra :class:`~lungcls.data.loader.CacheLoader` arguments (masks, labels) of the stage."""
        return {}

    def record(self) -> dict:
        """The model's own sections of ``config.json`` (``model``, ...), which the trained model writes again."""
        raise NotImplementedError

    def links(self) -> dict:
        """What else ``config.json`` records about the stage (e.g. the segmenter a classifier learnt from)."""
        return {}

    def trained(self, task: Task, info: dict, progress: bool) -> Any:
        """The model, ready to use, around ``task``'s network holding its best weights; ``info``: its record."""
        raise NotImplementedError

    def evaluate(self, model: Any, split: str, progress: bool) -> Any:
        """The report of ``model`` on one split's rows."""
        raise NotImplementedError

    def write_report(self, report: Any, out: Path) -> list[Path]:
        """Write ``report`` into the run folder (the stage's one writer)."""
        raise NotImplementedError

    def summary(self, report: Any) -> dict:
        """What ``config.json`` records of a report."""
        raise NotImplementedError

    def samples(self, task: Task) -> tuple[torch.Tensor, torch.Tensor | None, Callable | None]:
        """TensorBoard's sample images (uint8 (N, 1, H, W)), their masks, and a predictor of masks (or None)."""
        pick = self.rows["Train"][:: max(1, len(self.rows["Train"]) // 8)][:8]
        images = torch.from_numpy(np.asarray(self.cache.images[pick]))[:, None]
        return images, torch.from_numpy(np.asarray(self.cache.masks[pick]))[:, None], None


def run_stage(
    stage: Stage,
    data: Sequence[str | Path],
    out: str | Path,
    *,
    cache_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    strict: bool = False,
    tensorboard: bool = False,
    evaluate: Sequence[str] = ("Val", "Test"),
) -> TrainResult:
    """Train ``stage`` on ``data`` into the run folder ``out``, then evaluate it (see the module's docstring).

    Args:
        data: dataset roots, CSV manifests or one packed cache.
        cache_dir: where to cache ``data`` (default ``out/cache``).
        resume: continue the interrupted run in ``out`` with its saved settings; ``overwrite``: replace the run
            in ``out`` (neither: a folder that holds a run is refused).
        progress: progress bars; on_epoch_end: called with (epoch, record) after each epoch.
        strict: refuse data leaks (a patient or picture in two splits, evaluated images a model saw) instead
            of warning.
        tensorboard: also log to ``out/tensorboard`` (the ``tensorboard`` extra).
        evaluate: the splits evaluated at the end (a recipe search leaves Test out: it chooses on Val alone).

    Raises:
        LungclsError: bad settings, no data, a run folder in the way, or (``strict``) a leak.
    """
    out, started = Path(out), time.monotonic()
    saved = start_run(out, stage.kind, resume, overwrite)
    stage.configure(saved, out)
    ranks, device = setup(stage.train.device)
    request = stage.prepare(device)
    stage.cache, made = main_first(
        ranks, lambda: _open_data(stage, data, cache_dir or out / "cache", request, progress, strict)
    )
    stage.rows = stage.select(progress, strict)
    seed_everything(stage.train.seed)
    task = stage.build(device, fresh=saved is None)
    if stage.train.compile:
        task.model = torch.compile(task.model)
    record = {"kind": stage.kind, **stage.record(), "train": to_dict(stage.train)}
    record |= {"data": data_record(data, stage.cache, stage.rows), "environment": environment(), **stage.links()}
    if ranks.main:
        _write_inputs(out, stage.cache, stage.rows, made)
    if tensorboard and ranks.main:
        on_epoch_end = _with_tensorboard(stage, task, out, on_epoch_end)
    log.info(
        "training on %d images, validating on %d, device %s", len(stage.rows["Train"]), len(stage.rows["Val"]), device
    )
    loaders, budget = [stage.loader(split, device, ranks) for split in ("Train", "Val")], _budget(stage, started)
    result = fit(task, *loaders, stage.train, out, record, resume, progress, on_epoch_end, ranks, budget)
    if not ranks.main:  # rank 0 makes the model, evaluates it and writes the reports
        return TrainResult(out, result, None, split=made)
    model, reports = _finish(stage, task, result, record, out, progress, started, evaluate)
    return TrainResult(out, result, model, reports, split=made)


def _budget(stage: Stage, started: float) -> TimeBudget | None:
    """The run's time budget, counted from its start; its end evaluates Val and Test."""
    if stage.train.time_budget is None:
        return None
    return TimeBudget(stage.train.time_budget, started, len(stage.rows["Val"]) + len(stage.rows["Test"]))


def _open_data(
    stage: Stage, data: Sequence[str | Path], cache_dir: Path, request: DataRequest, progress: bool, strict: bool
) -> tuple[PackedCache, str | None]:
    return open_training_data(
        data,
        cache_dir,
        size=request.size,
        split_seed=stage.train.seed,
        progress=progress,
        strict=strict,
        pinned=request.pinned,
        hold_out=request.hold_out,
        masks=request.masks,
    )


def _finish(
    stage: Stage,
    task: Task,
    result: FitResult,
    record: dict,
    out: Path,
    progress: bool,
    started: float,
    splits: Sequence[str],
) -> tuple[Any, dict]:
    """The trained model from the best weights in memory, its evaluation reports (written), and the complete
    ``config.json`` (with how long the run took and how many epochs it planned and trained)."""
    load_state(task.model, result.best_state, out / "model.safetensors")
    info = {k: v for k, v in record.items() if k not in stage.record() and k != "kind"} | {"metrics": result.metrics}
    info["source"] = {"origin": "run", "name": str(out), "sha256": result.best_sha256}
    model = stage.trained(task, info | {"folder": str(out)}, progress)
    reports = {}
    for split in splits:
        if len(stage.rows[split]):
            reports[split.lower()] = stage.evaluate(model, split, progress)
            stage.write_report(reports[split.lower()], out)
    model.info["evaluation"] = {k: stage.summary(r) for k, r in reports.items()}
    took = {"epochs_planned": result.epochs, "epochs_trained": len(result.history)}
    took["seconds"] = round(time.monotonic() - started, 2)
    write_json(
        out / "config.json",
        {**model.to_config(), "status": "complete", "weights_sha256": result.best_sha256, "run": took},
    )
    return model, reports


def _write_inputs(out: Path, cache: PackedCache, rows: dict[str, np.ndarray], made: str | None) -> None:
    write_json(out / "images.json", images_record(cache, rows))
    if made is not None:  # a split made here: keep it, so the other stage can use the same one
        cache.manifest.write_csv(out / "split.csv")
        log.warning(
            "the split made for this run is in %s; pass it to the other stage so both share it", out / "split.csv"
        )


def _with_tensorboard(stage: Stage, task: Task, out: Path, then: Callable | None) -> Callable[[int, dict], None]:
    """``then`` (if any) after logging the epoch to ``out/tensorboard`` with the stage's sample images."""

    logger = TensorBoardLogger(out / "tensorboard", *stage.samples(task))

    def callback(epoch: int, record: dict) -> None:
        logger(epoch, record)
        if then is not None:
            then(epoch, record)

    return callback
