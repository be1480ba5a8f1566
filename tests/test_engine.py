"""The shared training engine on a tiny task: what any stage gets from ``fit``."""

from __future__ import annotations

import pytest
import torch

from lungcls.config import TrainConfig
from lungcls.engine.trainer import fit
from lungcls.errors import LungclsError


class Batches:
    """A loader as ``fit`` wants one: ``len``, iteration and ``set_epoch``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        for k in range(len(self)):
            sl = slice(k * self.batch_size, (k + 1) * self.batch_size)
            yield self.x[sl], self.y[sl]


class Regression:
    """A Task: fit y = x @ w with a linear layer; ``poison`` makes the loss NaN from that step on."""

    metric, goal = "loss", "min"

    def __init__(self, poison_at: int | None = None) -> None:
        self.model, self.device, self.poison_at, self.steps = torch.nn.Linear(4, 1), torch.device("cpu"), poison_at, 0

    def training_loss(self, batch, generator) -> torch.Tensor:
        x, y = batch
        self.steps += 1
        loss = torch.nn.functional.mse_loss(self.model(x), y)
        return loss * float("nan") if self.poison_at is not None and self.steps >= self.poison_at else loss

    def evaluate(self, loader) -> dict[str, float]:
        return {"loss": sum(float(self.training_loss(b, None)) for b in loader) / len(loader)}


def data(n: int = 256) -> Batches:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return Batches(x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]), batch_size=8)


def test_fit_lowers_the_loss_and_records_the_mean_training_loss(tmp_path):
    cfg = TrainConfig(epochs=4, batch_size=8, lr=0.05, warmup_epochs=0.1)
    result = fit(Regression(), data(), None, cfg, tmp_path / "run", {"kind": "test"}, progress=False)
    losses = [r["train_loss"] for r in result.history]
    assert len(losses) == 4 and losses[-1] < losses[0] / 10
    assert (tmp_path / "run" / "history.csv").is_file() and (tmp_path / "run" / "model.safetensors").is_file()


def test_a_loss_that_turns_nan_stops_training_with_a_clear_error(tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.05)
    with pytest.raises(LungclsError, match=r"training loss is nan by step \d+: lower --lr"):
        fit(Regression(poison_at=40), data(), None, cfg, tmp_path / "run", {"kind": "test"}, progress=False)
    # the epoch completed before the NaN is on disk, whole
    assert (tmp_path / "run" / "last.json").is_file()


def test_ema_moves_the_average_a_decay_step_towards_the_weights_and_copies_counters():
    from lungcls.engine.ema import EMA, ema_decay

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.75)
    before = ema.model[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(4.0)
    model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    assert torch.allclose(ema.model[0].weight, before + 1.0)  # 0.75 * w + 0.25 * (w + 4)
    assert int(ema.model[1].num_batches_tracked) == 7
    assert ema_decay(2, 50) == 0.99  # a time constant of 2 epochs of 50 steps


def test_with_ema_fit_validates_and_saves_the_average_and_resumes_it(tmp_path):
    from safetensors.torch import load_file

    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.05, warmup_epochs=0.1, ema_epochs=1.0)
    torch.manual_seed(0)
    whole = fit(Regression(), data(), data(64), cfg, tmp_path / "whole", {"kind": "test"}, progress=False)
    record = whole.history[-1]
    assert {"val_loss", "val_live_loss"} <= set(record) and record["val_loss"] != record["val_live_loss"]
    saved = load_file(tmp_path / "whole" / "model.safetensors")
    last = load_file(tmp_path / "whole" / "last.safetensors")
    best = whole.best_epoch == 3  # the best epoch's average is what model.safetensors holds
    assert not best or torch.equal(saved["weight"], last["ema.weight"])
    assert not torch.equal(last["ema.weight"], last["model.weight"])
    # interrupted after the first epoch, then resumed: the same average as the uninterrupted run

    def interrupt(epoch: int, record: dict) -> None:
        raise KeyboardInterrupt

    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(
            Regression(), data(), data(64), cfg, tmp_path / "cut", {"kind": "t"}, progress=False, on_epoch_end=interrupt
        )
    task = Regression()
    fit(task, data(), data(64), cfg, tmp_path / "cut", {"kind": "t"}, resume=True, progress=False)
    resumed = load_file(tmp_path / "cut" / "last.safetensors")
    assert torch.allclose(resumed["ema.weight"], last["ema.weight"]) and torch.allclose(
        resumed["model.weight"], last["model.weight"]
    )


def test_when_saving_takes_longer_than_the_epochs_the_resumable_checkpoint_is_written_less_often(tmp_path, monkeypatch):
    import time

    import lungcls.engine.trainer as trainer

    saved_epochs = []
    real_save = trainer._save_last

    def slow_save(run_dir, model, optimizer, epoch, *args, **kwargs):
        time.sleep(0.2)  # a checkpoint far slower than an epoch (as a ResNet-50 on a GPU with a small set)
        saved_epochs.append(epoch)
        return real_save(run_dir, model, optimizer, epoch, *args, **kwargs)

    monkeypatch.setattr(trainer, "_save_last", slow_save)
    fit(
        Regression(),
        data(64),
        None,
        TrainConfig(epochs=6, batch_size=8),
        tmp_path / "run",
        {"kind": "t"},
        progress=False,
    )
    assert saved_epochs[0] == 0 and saved_epochs[-1] == 5 and len(saved_epochs) < 6  # first, last, few between


def test_inference_batches_default_to_8_on_cpu_and_a_bad_size_is_refused():
    from lungcls.cls.classifier import Classifier
    from lungcls.config import ClassifierConfig
    from lungcls.engine.device import inference_batch_size
    from lungcls.models import build_classifier

    cfg = ClassifierConfig(arch="resnet18", image_size=32)
    assert Classifier(build_classifier(cfg), cfg, device="cpu").batch_size == 8
    assert Classifier(build_classifier(cfg), cfg, device="cpu", batch_size=3).batch_size == 3
    assert inference_batch_size(torch.device("cuda"), None, on_gpu=256) == 256
    with pytest.raises(ValueError, match="batch size must be at least 1"):
        inference_batch_size(torch.device("cpu"), 0, on_gpu=64)


def test_under_several_processes_each_takes_its_share_of_the_batch():
    from lungcls.engine.distributed import Ranks, rank_batch_size

    assert rank_batch_size(64, Ranks(rank=1, world=4)) == 16
    with pytest.raises(LungclsError, match="not a multiple of the 3 processes; use 63"):
        rank_batch_size(64, Ranks(rank=0, world=3))
    with pytest.raises(LungclsError, match="batches of 1"):
        rank_batch_size(4, Ranks(rank=0, world=4))


def test_deterministic_training_leaves_the_process_as_it_found_it(tmp_path, monkeypatch):
    import os

    from lungcls.engine.trainer import deterministic_kernels

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
              torch.backends.cudnn.deterministic)  # fmt: skip
    with deterministic_kernels():
        assert torch.are_deterministic_algorithms_enabled() and os.environ["CUBLAS_WORKSPACE_CONFIG"]
        assert torch.is_deterministic_algorithms_warn_only_enabled()  # as documented: warns, never stops a run
    after = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic)  # fmt: skip
    assert after == before and "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_a_run_cut_between_a_new_best_and_last_json_resumes_and_chooses_the_best_again(tmp_path, caplog):
    from safetensors.torch import load_file

    from lungcls.store import save_tensors

    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.05, warmup_epochs=0.1)

    def interrupt(epoch: int, record: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(Regression(), data(), data(64), cfg, tmp_path / "cut", {"kind": "t"}, progress=False,
            on_epoch_end=interrupt)  # fmt: skip
    # the next epoch's best weights reached the disk, and the run was killed before config.json and last.json
    newer = {k: v + 1.0 for k, v in load_file(tmp_path / "cut" / "model.safetensors").items()}
    save_tensors(tmp_path / "cut" / "model.safetensors", newer)
    with caplog.at_level("WARNING"):
        result = fit(Regression(), data(), data(64), cfg, tmp_path / "cut", {"kind": "t"}, resume=True, progress=False)
    assert "written after last.json" in caplog.text
    assert len(result.history) == 3 and result.best_epoch >= 2
    best = load_file(tmp_path / "cut" / "model.safetensors")
    assert torch.equal(best["weight"], result.best_state["weight"])
