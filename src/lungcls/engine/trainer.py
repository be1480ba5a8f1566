"""``fit``: the only training loop in lungcls, shared by segmentation and classification.

A stage supplies a Task (model, training loss of a batch, evaluation of a loader, the name of
its validation metric); ``fit`` owns everything else: AdamW (or SGD) with warm-up + cosine schedule,
autocast, gradient clipping, an optional moving average of the weights (EMA), per-epoch
validation, best/last checkpoints, resume, early stopping, history files and the progress bar.

Every random draw of an epoch (shuffle order, augmentation) is derived from ``(seed, epoch)``,
so a resumed run draws exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..atomic import write_json, write_text
from ..checkpoint import cpu_state, optimizer_tensors, restore_optimizer, unwrap
from ..config import TrainConfig
from ..errors import CheckpointError, LungclsError
from ..progress import progress_bar
from ..store import load_tensors, read_json, save_tensors
from .budget import TimeBudget
from .device import autocast
from .distributed import Ranks, barrier, same_weights, wrap
from .distributed import mean as distributed_mean
from .ema import EMA, ema_decay

log = logging.getLogger(__name__)


class Task(Protocol):
    """What a stage gives the engine."""

    model: torch.nn.Module
    device: torch.device
    metric: str  # name of the validation metric that picks the best checkpoint
    goal: str  # "max" or "min": which way the metric is better

    def training_loss(self, batch: Any, generator: torch.Generator) -> torch.Tensor: ...

    def evaluate(self, loader: Any) -> dict[str, float]: ...


@dataclass
class FitResult:
    """What training produced.

    Attributes:
        history: one record per epoch (train loss, validation metrics, learning rate, time, images/s).
        best_epoch, best_metric: the epoch (1-based) whose weights were kept, and its validation metric.
        metrics: that epoch's ``val_*`` metrics (what the run's ``config.json`` records).
        best_state: the kept weights (CPU tensors), to build the trained model from without reading files.
        best_sha256: SHA-256 of ``model.safetensors`` as written.
        stopped_early: the patience ran out.
        epochs: the epochs planned in all (``cfg.epochs``, or fewer when a time budget set them).
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_metric: float = float("nan")
    metrics: dict[str, float] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    best_sha256: str | None = None
    stopped_early: bool = False
    epochs: int = 0


@dataclass
class Position:
    """Where training stands inside an epoch: what an interrupt saves, so a resumed run goes on exactly there.

    Attributes:
        epoch: the epoch (0-based); step: batches of it done; loss_sum, seen: the epoch's running loss
        (summed over images) and images; seconds: time spent on it; rng_state: its augmentation draws' state
        to restore; rng: the generator drawing them.
    """

    epoch: int = 0
    step: int = 0
    loss_sum: float | torch.Tensor = 0.0
    seen: int = 0
    seconds: float = 0.0
    rng_state: torch.Tensor | None = field(default=None, repr=False)
    rng: torch.Generator | None = field(default=None, repr=False)


CHECK_EVERY = 25  # steps between two looks at the running loss (finite? progress bar)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_kernels(enabled: bool = True) -> Iterator[None]:
    """Within the block: deterministic kernels where torch has them (an op without one warns and runs
    anyway), cuDNN autotuning off, and the cuBLAS workspace setting they need. Every flag and the
    environment variable are restored afterwards, so the process is left as it was found."""
    if not enabled:
        yield
        return
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]
        if saved[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[4]


def learning_rate(step: int, total: int, warmup: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``cfg.lr`` over ``warmup`` steps, then cosine decay to ``lr * min_lr_ratio``."""
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def optimizer_for(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum (``cfg.optimizer``); fused (one kernel per step) on CUDA."""
    fused = device.type == "cuda"
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay, fused=fused
        )
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def fit(
    task: Task,
    train: Any,
    val: Any | None,
    cfg: TrainConfig,
    run_dir: str | Path,
    run_config: dict,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    ranks: Ranks | None = None,
    budget: TimeBudget | None = None,
) -> FitResult:
    """Train ``task.model`` on ``train`` batches, validating on ``val`` after every epoch.

    Args:
        train, val: loaders with ``__len__``, ``__iter__`` and ``set_epoch`` (see CacheLoader).
        run_dir: where checkpoints, history and ``config.json`` go.
        run_config: the run's JSON config: written as ``config.json`` at the start, and again with the best
            epoch's metrics and the SHA-256 of its weights whenever they improve (the dict is not changed).
        resume: continue from ``run_dir/last.*``, at the epoch and step where it stopped.
        on_epoch_end: called with (epoch, record) after each epoch is saved.
        ranks: this process's place in a multi-process (torchrun) run: the model is wrapped in
            DistributedDataParallel, ``train`` must serve this rank's shard, the train loss is
            averaged over ranks, every rank validates on the whole of ``val`` (so early stopping
            agrees), and only rank 0 writes files, logs and progress bars.
        budget: train only as many epochs (at most ``cfg.epochs``) as fit in it, measured as training goes
            (see :mod:`lungcls.engine.budget`); the schedule follows the planned number.

    Ctrl-C (``KeyboardInterrupt``) first saves where training stands, even in the middle of an epoch, then
    goes on up: ``resume`` continues from there with the same batches and augmentation draws. ``task.model``
    is the same module afterwards as before (it is wrapped for DistributedDataParallel only while fit runs).
    """
    plain = task.model
    try:
        with deterministic_kernels(cfg.deterministic):
            fitting = _Fit(task, train, val, cfg, Path(run_dir), run_config, progress, on_epoch_end, ranks or Ranks())
            fitting.budget = budget
            return fitting.run(resume)
    finally:
        task.model = plain


class _Fit:
    """One call of :func:`fit`: the optimiser, the average, the best so far and where training stands."""

    def __init__(
        self,
        task: Task,
        train: Any,
        val: Any | None,
        cfg: TrainConfig,
        run_dir: Path,
        run_config: dict,
        progress: bool,
        on_epoch_end: Callable[[int, dict], None] | None,
        ranks: Ranks,
    ) -> None:
        self.task, self.train, self.val, self.cfg, self.dir, self.ranks = task, train, val, cfg, run_dir, ranks
        self.run_config, self.progress, self.on_epoch_end = run_config, progress and ranks.main, on_epoch_end
        self.optimizer = optimizer_for(unwrap(task.model), cfg, task.device)
        self.steps = len(train)
        if self.steps == 0:
            raise LungclsError(f"no training batches: fewer training images than --batch-size {cfg.batch_size}")
        self.warmup = int(cfg.warmup_epochs * self.steps)
        self.ema = EMA(task.model, ema_decay(cfg.ema_epochs, self.steps)) if cfg.ema_epochs > 0 else None
        self.result, self.bad_epochs, self.position, self.throttle = FitResult(), 0, Position(), _Throttle()
        self.result.epochs, self.budget = cfg.epochs, None

    def run(self, resume: bool) -> FitResult:
        self.dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.position, self.bad_epochs = _resume(self.dir, self.task.model, self.optimizer, self.result, self.ema)
        self.task.model = wrap(
            self.task.model, self.ranks, self.task.device
        )  # DDP starts every rank from rank 0's weights
        if self.ranks.main:
            write_json(self.dir / "config.json", self.config())
        try:
            epoch = self.position.epoch
            while epoch < self.result.epochs:
                if self.epoch(epoch):
                    self.result.stopped_early = True
                    break
                epoch += 1
        except KeyboardInterrupt:
            if self.ranks.main:
                self.save_last({"world_size": self.ranks.world, "interrupted": True})
            raise
        return self.result

    def config(self) -> dict:
        """The run's ``config.json``: the caller's record, with the best epoch's metrics and weights' hash once
        known."""
        r = self.result
        return {**self.run_config, **({"metrics": r.metrics, "weights_sha256": r.best_sha256} if r.best_sha256 else {})}

    def epoch(self, epoch: int) -> bool:
        """Train, validate, keep and save one epoch; True when the patience has run out."""
        task, cfg, ranks = self.task, self.cfg, self.ranks
        record = _train_epoch(
            task,
            self.train,
            self.optimizer,
            cfg,
            self.warmup,
            self.progress,
            self.ema,
            self.position,
            self.result.epochs,
        )
        record["train_loss"] = distributed_mean(record["train_loss"], ranks, task.device)
        if self.val is not None:
            started = time.perf_counter()
            record.update(_validate(task, self.val, cfg, self.ema))
            record["validation_seconds"] = time.perf_counter() - started  # a time, not a val_* metric
        self.result.history.append(record)
        self.keep_if_best(epoch, record)
        self.position = Position(epoch + 1)
        self.replan(epoch + 1, record)
        agree = same_weights(unwrap(task.model), ranks, task.device)
        stop = bool(cfg.patience) and self.bad_epochs >= cfg.patience
        if ranks.main:
            if stop or epoch + 1 == self.result.epochs or self.throttle.due():
                with self.throttle:
                    self.save_last({"world_size": ranks.world, "weights_agree": agree})
            _write_history(self.dir, self.result.history)
        barrier(ranks)  # the files are complete before any rank goes on
        if ranks.main:
            _log(record)
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch, record)
        return stop

    def replan(self, done: int, record: dict) -> None:
        """Under a time budget: the epochs that fit, from what this epoch cost (over ranks: the mean plan)."""
        if self.budget is None:
            return
        val_seconds = record.get("validation_seconds", 0.0)
        val_img_s = (
            len(self.val.rows) / val_seconds if self.val is not None and val_seconds > 0 else record["train_img_s"]
        )
        planned = self.budget.plan(
            done, self.result.epochs, self.cfg.epochs, record["seconds"] + val_seconds, val_img_s
        )
        planned = int(distributed_mean(float(planned), self.ranks, self.task.device))  # every rank the same
        if planned != self.result.epochs:
            log.info("time budget: %d epochs in all (%.0f s left)", planned, self.budget.left())
        self.result.epochs = record["epochs_planned"] = planned

    def keep_if_best(self, epoch: int, record: dict) -> None:
        """Keep (and on rank 0 write) the epoch's weights when its validation metric is the best so far."""
        r, maximise = self.result, self.task.goal == "max"
        score = record.get(f"val_{self.task.metric}", -record["train_loss"] if maximise else record["train_loss"])
        if r.best_epoch >= 0 and not (score > r.best_metric if maximise else score < r.best_metric):
            self.bad_epochs += 1
            return
        self.bad_epochs = 0
        r.best_epoch, r.best_metric = epoch + 1, float(score)
        r.metrics = {"best_epoch": epoch + 1, **{k: v for k, v in record.items() if k.startswith("val_")}}
        if self.ranks.main:  # only rank 0 writes the weights and makes the trained model from them
            r.best_state = cpu_state(self.ema.model if self.ema else self.task.model)
            r.best_sha256 = save_tensors(self.dir / "model.safetensors", r.best_state)
            write_json(self.dir / "config.json", self.config())

    def save_last(self, extra: dict) -> None:
        """Write where training stands (an epoch's end, or a step inside one) as ``last.*``."""
        if len(self.result.history) > self.position.epoch:  # interrupted after the epoch's record was made
            self.position = Position(self.position.epoch + 1)
        _save_last(
            self.dir,
            self.task.model,
            self.optimizer,
            self.position.epoch - 1,
            self.result,
            self.bad_epochs,
            {**extra, "epochs_planned": self.result.epochs},
            self.ema,
            position=self.position,
        )


class _Throttle:
    """When to write the resumable checkpoint: after every epoch, unless epochs are so short (a GPU on
    a small set) that saving would take over a tenth of the time; then every few epochs."""

    def __init__(self) -> None:
        self.ended, self.cost = -math.inf, 0.0

    def due(self) -> bool:
        return time.perf_counter() - self.ended >= 10 * self.cost

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.ended = time.perf_counter()
        self.cost = self.ended - self.started


def _validate(task: Task, val: Any, cfg: TrainConfig, ema: EMA | None) -> dict[str, float]:
    """Validation metrics as ``val_*``; with EMA, those of the average, and the live weights' as ``val_live_*``."""
    live = task.model
    live.eval()
    with torch.inference_mode(), autocast(task.device, cfg.amp, cfg.amp_cpu):
        scores = task.evaluate(val)
        if ema is None:
            return {f"val_{k}": v for k, v in scores.items()}
        task.model = ema.model
        try:
            averaged = task.evaluate(val)
        finally:
            task.model = live
    return {**{f"val_{k}": v for k, v in averaged.items()}, **{f"val_live_{k}": v for k, v in scores.items()}}


def _train_epoch(
    task: Task,
    train: Any,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    warmup: int,
    progress: bool,
    ema: EMA | None,
    position: Position,
    epochs: int,
) -> dict[str, float]:
    """One pass over ``train`` from ``position`` (the start of an epoch, or a step inside it when resuming),
    which it keeps up to date; ``epochs``: the epochs planned in all (the schedule's length). Returns the epoch's
    record (mean train loss, last lr, time, images/s)."""
    epoch, steps, start = position.epoch, len(train), position.step
    train.set_epoch(epoch)
    generator = torch.Generator(device=task.device).manual_seed(cfg.seed * 1_000_003 + epoch + 1)
    if start and position.rng_state is not None:
        generator.set_state(position.rng_state)
    position.rng = generator
    t0, lr, seconds_before = time.perf_counter(), cfg.lr, position.seconds
    # summed on the device: no wait for the GPU each step
    position.loss_sum = torch.full((), float(position.loss_sum), device=task.device)
    task.model.train()
    bar = _bar(progress, steps, f"epoch {epoch + 1}/{epochs}", initial=start)
    for k, batch in enumerate(itertools.islice(iter(train), start, None), start=start):
        lr = learning_rate(epoch * steps + k, epochs * steps, warmup, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = _step(task, batch, generator, optimizer, cfg)
        if ema is not None:
            ema.update(task.model)
        position.loss_sum += loss * len(batch)
        position.seen += len(batch)
        position.step, position.seconds = k + 1, seconds_before + time.perf_counter() - t0
        if (k + 1) % CHECK_EVERY == 0 or k + 1 == steps:  # the only waits for the device in an epoch
            mean = _finite(float(position.loss_sum) / position.seen, k, cfg)
            bar.set_postfix(loss=f"{mean:.4f}", img_s=f"{(position.seen) / max(position.seconds, 1e-9):.0f}")
        bar.update(1)
    bar.close()
    seconds = max(position.seconds, 1e-9)
    return {
        "epoch": epoch + 1,
        "train_loss": float(position.loss_sum) / max(position.seen, 1),
        "lr": lr,
        "steps": steps,
        "seconds": seconds,
        "train_img_s": position.seen / seconds,
    }


def _finite(mean_loss: float, step: int, cfg: TrainConfig) -> float:
    if not math.isfinite(mean_loss):
        raise LungclsError(
            f"training loss is {mean_loss} by step {step + 1}: lower --lr (now {cfg.lr}) or check the data"
        )
    return mean_loss


def _step(
    task: Task, batch: Any, generator: torch.Generator, optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.Tensor:
    """One optimisation step; returns the batch's loss as a detached device scalar (no host sync)."""
    try:
        with autocast(task.device, cfg.amp, cfg.amp_cpu):
            loss = task.training_loss(batch, generator)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(task.model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    except torch.cuda.OutOfMemoryError:
        raise LungclsError(
            f"out of GPU memory at batch size {cfg.batch_size}: lower --batch-size, or pass --placement host "
            "to keep the data cache in host memory instead of on the GPU"
        ) from None
    return loss.detach()


def _save_last(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    result: FitResult,
    bad: int,
    extra: dict,
    ema: EMA | None = None,
    position: Position | None = None,
) -> None:
    """``last.*``: weights, optimiser and average after ``epoch`` (0-based, -1 before the first), and, when
    ``position`` is inside the next epoch, how far into it training got (its step, running loss and draws)."""
    tensors, groups = optimizer_tensors(optimizer)
    tensors.update({f"model.{k}": v for k, v in unwrap(model).state_dict().items()})
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    inside = position is not None and position.step > 0
    if inside and position.rng is not None:
        tensors["rng.generator"] = position.rng.get_state()
    sha = save_tensors(run_dir / "last.safetensors", tensors)
    state = {
        "epoch": epoch,
        "best_epoch": result.best_epoch,
        "best_metric": result.best_metric,
        "bad_epochs": bad,
        "history": result.history,
        "param_groups": groups,
        "sha256": sha,
        "best_sha256": result.best_sha256,  # last.json is written last: it says which best weights belong to it
        **extra,
    }
    if inside:
        state["inside_epoch"] = {
            "step": position.step,
            "loss_sum": float(position.loss_sum),
            "seen": position.seen,
            "seconds": position.seconds,
        }
    write_json(run_dir / "last.json", state)


def _resume(
    run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, result: FitResult, ema: EMA | None = None
) -> tuple[Position, int]:
    if not (run_dir / "last.json").is_file():
        raise LungclsError(f"{run_dir}: nothing to resume (no last.json); start without --resume")
    state = read_json(run_dir / "last.json")
    tensors = load_tensors(run_dir / "last.safetensors", state.get("sha256"))
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    unwrap(model).load_state_dict(weights)
    if ema is not None:
        averaged = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
        ema.load_state_dict(averaged or weights)  # a run saved without EMA starts its average here
    restore_optimizer(optimizer, tensors, state["param_groups"])
    result.history, result.best_epoch, result.best_metric = state["history"], state["best_epoch"], state["best_metric"]
    result.epochs = state.get("epochs_planned", result.epochs)
    if result.best_epoch > 0 and (run_dir / "model.safetensors").is_file():
        _resume_best(run_dir, state, result)
    inside = state.get("inside_epoch") or {}
    position = Position(
        state["epoch"] + 1,
        inside.get("step", 0),
        inside.get("loss_sum", 0.0),
        inside.get("seen", 0),
        inside.get("seconds", 0.0),
        rng_state=tensors.get("rng.generator"),
    )
    return position, state["bad_epochs"]


def _resume_best(run_dir: Path, state: dict, result: FitResult) -> None:
    """The best weights that belong to ``last.json``. A run cut between writing a newer best (``model.safetensors``,
    then ``config.json``) and ``last.json`` holds weights that ``last.json`` does not know: its epochs are trained
    again, and the choice of the best epoch starts again from there, with a warning."""
    config = read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else {}
    expected = state.get("best_sha256") or config.get("weights_sha256")
    try:
        result.best_state = load_tensors(run_dir / "model.safetensors", expected)
    except CheckpointError:
        log.warning("%s: the best weights on disk were written after last.json (the run was cut in between); "
                    "epoch %d's best weights are gone and the best epoch is chosen again from epoch %d on",
                    run_dir, result.best_epoch, state["epoch"] + 2)  # fmt: skip
        result.best_epoch, result.best_state, result.metrics = -1, None, {}
        return
    result.best_sha256 = expected
    result.metrics = config.get("metrics", {}) if config.get("weights_sha256") == expected else {}


def _write_history(run_dir: Path, history: list[dict]) -> None:
    write_json(run_dir / "history.json", history)
    keys = list(dict.fromkeys(k for r in history for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    write_text(run_dir / "history.csv", buf.getvalue())


def _bar(progress: bool, total: int, desc: str, initial: int = 0):

    return progress_bar(total=total, desc=desc, unit="batch", enabled=progress, leave=False, initial=initial)


def _log(record: dict) -> None:
    parts = [f"epoch {record['epoch']}", f"train_loss {record['train_loss']:.4f}"]
    parts += [f"{k} {v:.4f}" for k, v in record.items() if k.startswith("val_")]
    parts.append(f"{record['train_img_s']:.0f} img/s")
    log.info("  ".join(parts))
