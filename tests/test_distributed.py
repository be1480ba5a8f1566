"""Data-parallel training with torchrun: 2 CPU processes (gloo) train a few steps and end with the same weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lungcls.data import PackedCache, discover, make_split, prepare_cache
from lungcls.data.phantoms import write_phantom_set


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    manifest = discover(write_phantom_set(root, per_class=16, size=64)).manifest
    prepare_cache(
        make_split(manifest, val=0.2, test=0.2, seed=0), root / "cache", size=(64, 64), workers=0, progress=False
    )
    return root / "cache"


def torchrun(*args: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "lungcls",
        *args,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["train-seg", "train-cls"])
def test_two_processes_train_and_agree(cache, tmp_path, stage):
    run = tmp_path / "run"
    common = ["--out", str(run), "--epochs", "2", "--batch-size", "4", "--device", "cpu"]
    if stage == "train-seg":
        torchrun(stage, str(cache), "--encoder", "resnet18", "--encoder-depth", "3", "--image-size", "64", *common)
    else:
        torchrun(stage, str(cache), "--arch", "resnet18", "--image-size", "32", *common)
    state = json.loads((run / "last.json").read_text())
    assert state["world_size"] == 2 and state["weights_agree"] is True and len(state["history"]) == 2
    # each process takes half of the batch of 4: the steps per epoch (and the schedule) are a single process's
    n_train = len(PackedCache.open(cache).indices("Train", with_mask=stage == "train-seg"))
    assert state["history"][0]["steps"] == n_train // 4
    assert (run / "model.safetensors").is_file() and not list(run.glob("*.tmp"))


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_same_weights(cache, tmp_path):
    import os
    import signal
    import time

    import torch
    from safetensors.torch import load_file

    def cmd(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lungcls",
                "train-cls", str(cache), "--arch", "resnet18", "--image-size", "32", "--epochs", "4", "--batch-size",
                "4", "--device", "cpu", "--seed", "5", "--out", str(out), *extra]  # fmt: skip

    subprocess.run(cmd(tmp_path / "whole"), check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(
        cmd(tmp_path / "cut"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    last = tmp_path / "cut" / "last.json"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers
    proc.wait()
    assert json.loads(last.read_text())["epoch"] < 3  # cut before the end
    again = subprocess.run(cmd(tmp_path / "cut", "--resume"), check=False, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    whole, resumed = (
        load_file(tmp_path / "whole" / "last.safetensors"),
        load_file(tmp_path / "cut" / "last.safetensors"),
    )
    assert all(torch.allclose(whole[k].float(), resumed[k].float(), atol=1e-6) for k in whole if k.startswith("model."))
    state = json.loads(last.read_text())
    assert state["epoch"] == 3 and state["world_size"] == 2 and state["weights_agree"] is True
