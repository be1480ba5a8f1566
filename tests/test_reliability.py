"""Trustworthiness: same seed -> same run; SIGKILL then --resume -> same weights; pickles never run;
leaks between splits are loud."""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lungcls import CheckpointError, DataError
from lungcls.config import ClassifierConfig, SegmenterConfig, TrainConfig
from lungcls.data import PackedCache, discover, make_split, prepare_cache
from lungcls.data.manifest import Manifest
from lungcls.data.phantoms import write_phantom_set
from lungcls.seg.train import train_segmenter

TINY = SegmenterConfig(encoder_name="resnet18", encoder_depth=3, decoder_channels=[16, 8, 4], image_size=64)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rel")
    manifest = discover(write_phantom_set(root, per_class=20, size=64)).manifest
    prepare_cache(
        make_split(manifest, val=0.2, test=0.2, seed=0), root / "cache", size=(64, 64), workers=0, progress=False
    )
    return root / "cache"


def test_same_seed_gives_identical_metrics_and_weights(cache, tmp_path):
    train = TrainConfig(epochs=2, batch_size=8, seed=7, device="cpu")
    a = train_segmenter([cache], tmp_path / "a", TINY, train, progress=False)
    b = train_segmenter([cache], tmp_path / "b", TINY, train, progress=False)
    strip = lambda h: [{k: v for k, v in r.items() if "img_s" not in k and not k.endswith("seconds")} for r in h]  # noqa: E731
    assert strip(a.fit.history) == strip(b.fit.history)
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["train"]["seed"] == 7 and config["environment"]["command"] and config["data"]["manifest_digest"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_reaches_the_same_weights(cache, tmp_path):
    cmd = [sys.executable, "-m", "lungcls", "train-seg", str(cache), "--encoder", "resnet18", "--encoder-depth", "3",
           "--image-size", "64", "--epochs", "2", "--batch-size", "4", "--device", "cpu", "--seed", "3"]  # fmt: skip
    subprocess.run([*cmd, "--out", str(tmp_path / "whole")], check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(
        [*cmd, "--out", str(tmp_path / "cut")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = tmp_path / "cut" / "last.json"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(0.2)  # into the second epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(last.read_text())["epoch"] == 0  # killed before the second epoch was saved
    subprocess.run([*cmd, "--out", str(tmp_path / "cut"), "--resume"], check=True, capture_output=True, timeout=600)
    whole, resumed = (
        load_file(tmp_path / "whole" / "last.safetensors"),
        load_file(tmp_path / "cut" / "last.safetensors"),
    )
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


class Payload:
    """Unpickling this creates a file: proof that code ran."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_with_a_payload_is_refused_and_never_runs(tmp_path):
    from lungcls.models import build_classifier
    from lungcls.seg.segmenter import Segmenter

    Payload.marker = str(tmp_path / "PWNED")
    evil = pickle.dumps({"state_dict": Payload()})
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"kind": "segmenter", "model": {}, "postprocess": {}}))
    (run / "model.safetensors").write_bytes(evil)
    with pytest.raises(CheckpointError, match="pickle"):
        Segmenter.load(run, device="cpu")
    (tmp_path / "weights.pth").write_bytes(evil)
    with pytest.raises(CheckpointError, match="not loadable as plain weights"):
        build_classifier(ClassifierConfig(arch="resnet18"), weights=tmp_path / "weights.pth")
    assert not (tmp_path / "PWNED").exists()


def test_leaks_between_splits_warn_and_strict_refuses(cache, tmp_path, caplog):
    samples = PackedCache.open(cache).manifest.samples
    train = [s for s in samples if s.split == "Train"]
    leaky = Manifest(samples + [type(train[0])(**{**train[0].__dict__, "split": "Val"})])  # the same image in Val too
    prepare_cache(leaky, tmp_path / "leaky", size=(64, 64), workers=0, progress=False)
    fast = TrainConfig(epochs=1, batch_size=8, device="cpu")
    with caplog.at_level(logging.WARNING):
        train_segmenter([tmp_path / "leaky"], tmp_path / "run", TINY, fast, progress=False)
    assert "DATA LEAK between splits" in caplog.text
    with pytest.raises(DataError, match="DATA LEAK"):
        train_segmenter([tmp_path / "leaky"], tmp_path / "strict", TINY, fast, progress=False, strict=True)


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path):
    from lungcls.atomic import atomic_path, write_text

    target = tmp_path / "report.json"
    write_text(target, "old and complete")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new but half")
            raise RuntimeError("killed while writing")
    assert target.read_text() == "old and complete" and list(tmp_path.iterdir()) == [target]


def test_pretrained_weights_are_never_downloaded(tmp_path, monkeypatch):
    from lungcls.models import build_classifier

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(CheckpointError, match="never downloads"):
        build_classifier(ClassifierConfig(arch="resnet18"), weights="imagenet")


def test_inspect_strict_turns_a_leak_into_exit_1(tmp_path, cache):
    from typer.testing import CliRunner

    from lungcls.cli import app

    samples = PackedCache.open(cache).manifest.samples
    a, b = samples[0], samples[1]
    rows = ["image,label,split,patient_id", f"{a.image},{a.label},Train,p1", f"{b.image},{b.label},Test,p1"]
    (tmp_path / "leak.csv").write_text("\n".join(rows) + "\n")
    assert CliRunner().invoke(app, ["data", "inspect", str(tmp_path / "leak.csv")]).exit_code == 0
    strict = CliRunner().invoke(app, ["data", "inspect", str(tmp_path / "leak.csv"), "--strict"])
    assert strict.exit_code == 1 and "in more than one split: 1" in strict.output
