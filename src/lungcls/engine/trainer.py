"""``fit``: the only training loop in lungcls, shared by segmentation and classification.

A stage supplies a Task (model, training loss of a batch, evaluation of a loader, the name of
its validation metric); ``fit`` owns everything else: AdamW with warm-up + cosine schedule,
autocast, gradient clipping, an optional moving average of the weights (EMA), per-epoch
validation, best/last checkpoints, resume, early stopping, history files and the progress bar.

Every random draw of an epoch (shuffle order, augmentation) is derived from ``(seed, epoch)``,
so a resumed run draws exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import csv
import io
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
from ..checkpoint import load_weights, optimizer_tensors, read_json, restore_optimizer, save_model, save_weights, unwrap
from ..config import TrainConfig
from ..errors import LungclsError
from .device import autocast
from .ema import EMA, ema_decay
from .distributed import Ranks, barrier, same_weights, wrap
from .distributed import mean as distributed_mean

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
    """What training produced: the history, and the best epoch and its metric."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_metric: float = float("nan")
    stopped_early: bool = False


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
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))  # fmt: skip
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
) -> FitResult:
    """Train ``task.model`` on ``train`` batches, validating on ``val`` after every epoch.

    Args:
        train, val: loaders with ``__len__``, ``__iter__`` and ``set_epoch`` (see CacheLoader).
        run_dir: where checkpoints, history and ``config.json`` go.
        run_config: the run's JSON config; saved as ``config.json`` with the best metrics added.
        resume: continue from ``run_dir/last.*`` (the epoch after the last saved one).
        on_epoch_end: called with (epoch, record) after each epoch is saved.
        ranks: this process's place in a multi-process (torchrun) run: the model is wrapped in
            DistributedDataParallel, ``train`` must serve this rank's shard, the train loss is
            averaged over ranks, every rank validates on the whole of ``val`` (so early stopping
            agrees), and only rank 0 writes files, logs and progress bars.
    """
    with deterministic_kernels(cfg.deterministic):
        return _fit(task, train, val, cfg, Path(run_dir), run_config, resume, progress, on_epoch_end, ranks or Ranks())


def _fit(
    task: Task, train: Any, val: Any | None, cfg: TrainConfig, run_dir: Path, run_config: dict, resume: bool,
    progress: bool, on_epoch_end: Callable[[int, dict], None] | None, ranks: Ranks,
) -> FitResult:  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    model, device = task.model, task.device
    progress = progress and ranks.main
    # fused: one kernel per step for all parameters on CUDA
    optimizer = torch.optim.AdamW(
        unwrap(model).parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda"
    )
    steps_per_epoch = len(train)
    if steps_per_epoch == 0:
        raise LungclsError(f"no training batches: fewer training images than --batch-size {cfg.batch_size}")
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    result, start, bad_epochs = FitResult(), 0, 0
    ema = EMA(model, ema_decay(cfg.ema_epochs, steps_per_epoch)) if cfg.ema_epochs > 0 else None
    if resume:
        start, bad_epochs = _resume(run_dir, model, optimizer, result, ema)
    # DDP starts every rank from rank 0's weights
    task.model = model = wrap(model, ranks, device)
    if ranks.main:
        write_json(run_dir / "config.json", run_config)
    better = (lambda a, b: a > b) if task.goal == "max" else (lambda a, b: a < b)
    last_save = _Throttle()
    for epoch in range(start, cfg.epochs):
        record = _train_epoch(task, train, optimizer, cfg, epoch, warmup, progress, ema)
        record["train_loss"] = distributed_mean(record["train_loss"], ranks, device)
        if val is not None:
            record.update(_validate(task, val, cfg, ema))
        result.history.append(record)
        score = record.get(f"val_{task.metric}", -record["train_loss"] if task.goal == "max" else record["train_loss"])
        if result.best_epoch < 0 or better(score, result.best_metric):
            result.best_epoch, result.best_metric, bad_epochs = epoch + 1, float(score), 0
            run_config["metrics"] = {
                "best_epoch": epoch + 1,
                **{k: v for k, v in record.items() if k.startswith("val_")},
            }
            if ranks.main:
                save_model(run_dir / "model.safetensors", ema.model if ema else model)
                write_json(run_dir / "config.json", run_config)
        else:
            bad_epochs += 1
        agree = same_weights(unwrap(model), ranks, device)
        stop = bool(cfg.patience) and bad_epochs >= cfg.patience
        if ranks.main:
            if stop or epoch + 1 == cfg.epochs or last_save.due():
                multi = {"world_size": ranks.world, "weights_agree": agree}
                with last_save:
                    _save_last(run_dir, model, optimizer, epoch, result, bad_epochs, multi, ema)
            _write_history(run_dir, result.history)
        barrier(ranks)  # the files are complete before any rank goes on
        if ranks.main:
            _log(record)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        if stop:
            result.stopped_early = True
            break
    return result


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
    epoch: int,
    warmup: int,
    progress: bool,
    ema: EMA | None = None,
) -> dict[str, float]:
    """One pass over ``train``; returns the epoch's record (mean train loss, last lr, time, images/s)."""
    steps = len(train)
    train.set_epoch(epoch)
    generator = torch.Generator(device=task.device).manual_seed(cfg.seed * 1_000_003 + epoch + 1)
    t0, seen, lr = time.perf_counter(), 0, cfg.lr
    total_loss = torch.zeros((), device=task.device)  # summed on the device: no wait for the GPU each step
    task.model.train()
    bar = _bar(progress, steps, f"epoch {epoch + 1}/{cfg.epochs}")
    for k, batch in enumerate(train):
        lr = learning_rate(epoch * steps + k, cfg.epochs * steps, warmup, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = _step(task, batch, generator, optimizer, cfg)
        if ema is not None:
            ema.update(task.model)
        total_loss += loss * len(batch)
        seen += len(batch)
        if (k + 1) % CHECK_EVERY == 0 or k + 1 == steps:  # the only waits for the device in an epoch
            mean = _finite(float(total_loss) / seen, k, cfg)
            bar.set_postfix(loss=f"{mean:.4f}", img_s=f"{seen / (time.perf_counter() - t0):.0f}")
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    return {"epoch": epoch + 1, "train_loss": float(total_loss) / max(seen, 1), "lr": lr, "steps": steps,
            "seconds": seconds, "train_img_s": seen / seconds}  # fmt: skip


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
) -> None:
    tensors, groups = optimizer_tensors(optimizer)
    tensors.update({f"model.{k}": v for k, v in unwrap(model).state_dict().items()})
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    save_weights(run_dir / "last.safetensors", tensors)
    state = {"epoch": epoch, "best_epoch": result.best_epoch, "best_metric": result.best_metric, "bad_epochs": bad,
             "history": result.history, "param_groups": groups, **extra}  # fmt: skip
    write_json(run_dir / "last.json", state)


def _resume(
    run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, result: FitResult, ema: EMA | None = None
) -> tuple[int, int]:
    if not (run_dir / "last.json").is_file():
        raise LungclsError(f"{run_dir}: nothing to resume (no last.json); start without --resume")
    state = read_json(run_dir / "last.json")
    tensors = load_weights(run_dir / "last.safetensors")
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    unwrap(model).load_state_dict(weights)
    if ema is not None:
        averaged = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
        ema.load_state_dict(averaged or weights)  # a run saved without EMA starts its average here
    restore_optimizer(optimizer, tensors, state["param_groups"])
    result.history, result.best_epoch, result.best_metric = state["history"], state["best_epoch"], state["best_metric"]
    return state["epoch"] + 1, state["bad_epochs"]


def _write_history(run_dir: Path, history: list[dict]) -> None:
    write_json(run_dir / "history.json", history)
    keys = list(dict.fromkeys(k for r in history for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    write_text(run_dir / "history.csv", buf.getvalue())


def _bar(progress: bool, total: int, desc: str):
    from ..progress import progress_bar

    return progress_bar(total=total, desc=desc, unit="batch", enabled=progress, leave=False)


def _log(record: dict) -> None:
    parts = [f"epoch {record['epoch']}", f"train_loss {record['train_loss']:.4f}"]
    parts += [f"{k} {v:.4f}" for k, v in record.items() if k.startswith("val_")]
    parts.append(f"{record['train_img_s']:.0f} img/s")
    log.info("  ".join(parts))
