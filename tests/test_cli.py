"""The command line, as a user types it: help, version, inspect, split, prepare, exit codes."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from lungcls import __version__
from lungcls.cli import app
from lungcls.data import PackedCache, read_manifest_csv

runner = CliRunner()


def test_help_lists_the_commands_and_version_prints():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("prepare", "data"):
        assert command in result.output
    assert "not a diagnostic device" in result.output
    assert runner.invoke(app, ["data", "--help"]).output.count("inspect") >= 1
    assert runner.invoke(app, ["--version"]).output.strip() == f"lungcls {__version__}"


def test_inspect_split_prepare_on_a_real_set(tmp_path, shared_data):
    root = shared_data / "ieee8023-radiologist100"
    result = runner.invoke(
        app, ["data", "inspect", str(root), "--json", str(tmp_path / "report.json"), "--workers", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "100 images" in result.output and "Lung masks: ok 100" in result.output
    assert json.loads((tmp_path / "report.json").read_text())["counts"]["All"] == {
        "COVID-19": 65,
        "Non-COVID": 34,
        "Normal": 1,
    }

    result = runner.invoke(app, ["data", "split", str(root), "--out", str(tmp_path / "split.csv"), "--seed", "1"])
    assert result.exit_code == 0, result.output
    split = read_manifest_csv(tmp_path / "split.csv")
    assert set(split.splits) == {"Train", "Val", "Test"} and len(split) == 100

    result = runner.invoke(
        app, ["prepare", str(tmp_path / "split.csv"), "--out", str(tmp_path / "cache"), "--size", "128"]
    )
    assert result.exit_code == 0, result.output
    cache = PackedCache.open(tmp_path / "cache")
    assert cache.images.shape == (100, 128, 128) and [s.split for s in cache.samples] == [s.split for s in split]
    again = runner.invoke(
        app, ["prepare", str(tmp_path / "split.csv"), "--out", str(tmp_path / "cache"), "--size", "128"]
    )
    assert "up to date" in again.output


def test_prepare_with_a_bad_file_exits_1_and_lists_it(tmp_path, radiologist100):
    data = tmp_path / "set"
    shutil.copytree(radiologist100 / "Lung Segmentation Data" / "All" / "Normal", data / "All" / "Normal")
    (data / "All" / "Normal" / "images" / "broken (2).png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = runner.invoke(app, ["prepare", str(data), "--out", str(tmp_path / "cache"), "--make-split"])
    assert result.exit_code == 1
    assert "broken (2).png" in result.output and "1 images cached" in result.output


def test_usage_errors_exit_2_and_inputs_are_protected(tmp_path, radiologist100):
    missing = runner.invoke(app, ["data", "inspect", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no such file or folder" in missing.output
    inside = runner.invoke(app, ["prepare", str(radiologist100), "--out", str(radiologist100 / "cache")])
    assert inside.exit_code == 2 and "inside the input folder" in inside.output
    assert not (radiologist100 / "cache").exists()
    (tmp_path / "split.csv").write_text("keep me")
    exists = runner.invoke(app, ["data", "split", str(radiologist100), "--out", str(tmp_path / "split.csv")])
    assert exists.exit_code == 2 and (tmp_path / "split.csv").read_text() == "keep me"


def test_help_reads_like_a_normal_click_cli():
    out = runner.invoke(app, ["segment", "--help"], terminal_width=100).output
    assert "Usage: lungcls segment [OPTIONS] INPUT..." in out
    assert "<bool>" not in out and "<list[" not in out and "{INPUT" not in out
    assert "--device DEVICE" in out and "auto (CUDA if present), cpu, cuda or cuda:N" in out
    assert "--cpu " in out and "-q, --quiet, --no-progress" in out and "-v, --verbose" in out
    modes = runner.invoke(app, ["train-cls", "--help"], terminal_width=100).output
    assert "[raw|masked|cropped|masked-cropped]" in modes
    bad = runner.invoke(app, ["train-cls", "x", "--out", "y", "--mode", "lungs"])
    assert bad.exit_code == 2 and "lungs" in bad.output


def test_verbosity_flags_work_after_the_command_too(tmp_path, radiologist100):
    quiet = runner.invoke(app, ["data", "inspect", str(radiologist100), "-q", "--workers", "0"])
    assert quiet.exit_code == 0 and "100 images" in quiet.output and "inspecting" not in quiet.output


def test_in_a_log_file_each_epoch_line_ends_at_100_percent(tmp_path):
    import subprocess
    import sys

    from lungcls.data.phantoms import write_phantom_set

    data = write_phantom_set(tmp_path, per_class=6, size=64)
    cmd = [sys.executable, "-m", "lungcls", "train-seg", str(data), "--out", str(tmp_path / "run"), "--recipe", "demo",
           "--encoder-depth", "3", "--decoder-channels", "8,8,8", "--image-size", "32", "--epochs", "2",
           "--batch-size", "4", "--cpu"]  # fmt: skip
    log = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stderr  # stderr is a pipe: a log file
    lines = [line for line in log.replace("\r", "\n").splitlines() if line.startswith("epoch 2/2")]
    assert lines and "100%" in lines[-1], log[-2000:]
    assert "epoch 2  train_loss" in log  # the per-epoch summary line
