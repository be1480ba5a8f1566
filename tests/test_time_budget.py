"""Training to a time budget (``--time-budget``): a run given N seconds measures its first epochs, trains as many
as fit, and always ends with its evaluation written, inside the N seconds."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from lungcls.cli import app
from lungcls.config import ClassifierConfig, TrainConfig
from lungcls.data.phantoms import write_phantom_set
from lungcls.engine.budget import PLANNING_EPOCHS, TimeBudget


def budget_with(left: float, seconds: float = 100.0, finish_images: int = 0) -> TimeBudget:
    """A budget of ``seconds`` with ``left`` seconds still to go."""
    return TimeBudget(seconds, time.monotonic() - (seconds - left), finish_images)


def test_plan_fills_what_is_left_after_the_end_of_the_run_is_set_aside():
    # 60 s left; keep back 3 s + 5% of 100 s + 3 passes over 200 images at 100 img/s (6 s) = 14 s: 46 s for 10 s epochs
    assert budget_with(60, finish_images=200).plan(done=1, planned=80, most=80, epoch_seconds=10, val_img_s=100) == 5
    # never more than the config's epochs, never fewer than those done
    assert budget_with(1000).plan(done=1, planned=80, most=30, epoch_seconds=1, val_img_s=100) == 30
    assert budget_with(2).plan(done=2, planned=80, most=80, epoch_seconds=10, val_img_s=100) == 2


def test_plan_only_shortens_after_the_first_epochs():
    after = PLANNING_EPOCHS + 1
    assert budget_with(1000).plan(done=after, planned=10, most=80, epoch_seconds=1, val_img_s=100) == 10
    assert budget_with(30).plan(done=after, planned=40, most=80, epoch_seconds=5, val_img_s=100) == after + 4


def test_a_budgeted_run_ends_inside_its_budget_evaluated_and_saved(tmp_path):
    from lungcls.cls.train import train_classifier

    data = write_phantom_set(tmp_path / "data", per_class=20, size=64)
    budget = 25.0
    started = time.monotonic()
    run = train_classifier([data], tmp_path / "cls", ClassifierConfig(arch="resnet18", image_size=32),
                           TrainConfig(epochs=10_000, batch_size=8, device="cpu", time_budget=budget),
                           progress=False)  # fmt: skip
    took = time.monotonic() - started
    assert took <= budget, f"the run took {took:.1f} s of a {budget:.0f} s budget"
    saved = json.loads((tmp_path / "cls" / "config.json").read_text())
    assert saved["status"] == "complete" and saved["train"]["time_budget"] == budget
    assert 1 <= saved["run"]["epochs_trained"] == saved["run"]["epochs_planned"] < 10_000
    assert saved["run"]["seconds"] <= budget
    assert (tmp_path / "cls" / "eval_test.md").is_file() and run.reports["test"] is not None
    history = json.loads((tmp_path / "cls" / "history.json").read_text())
    assert history[-1]["epochs_planned"] == len(history)


def test_time_budget_on_the_command_line_is_checked_and_saved(tmp_path):
    data = write_phantom_set(tmp_path / "data", per_class=8, size=64)
    runner = CliRunner()
    bad = runner.invoke(app, ["train-cls", str(data), "--out", str(tmp_path / "bad"), "--recipe", "demo", "--cpu",
                              "--time-budget", "0"])  # fmt: skip
    assert bad.exit_code == 2 and "time_budget" in bad.output
    ok = runner.invoke(app, ["train-cls", str(data), "--out", str(tmp_path / "ok"), "--recipe", "demo", "--cpu", "-q",
                             "--image-size", "32", "--arch", "resnet18", "--time-budget", "60"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    saved = json.loads((tmp_path / "ok" / "config.json").read_text())
    assert saved["train"]["time_budget"] == 60 and saved["run"]["epochs_trained"] >= 1


@pytest.mark.parametrize("seconds", [float("nan"), -5.0])
def test_a_budget_out_of_range_is_refused_with_the_field_named(seconds):
    from lungcls.errors import ConfigError

    with pytest.raises(ConfigError, match="time_budget"):
        TrainConfig(time_budget=seconds)
