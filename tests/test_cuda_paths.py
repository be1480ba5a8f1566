"""The branches that run only on CUDA, exercised on the CPU where torch allows it (tests/README.md lists
every CUDA-only branch and how it is exercised): bf16 autocast in training and inference, channels_last,
torch.compile, and the EMA and checkpoint throttling under bf16."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lungcls.config import ClassifierConfig, SegmenterConfig, TrainConfig
from lungcls.engine.device import autocast
from lungcls.seg.segmenter import Segmenter

TINY = SegmenterConfig(encoder_name="resnet18", encoder_depth=3, decoder_channels=[8, 8, 8], image_size=32)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from lungcls.data import discover, make_split, prepare_cache
    from lungcls.data.phantoms import write_phantom_set

    root = tmp_path_factory.mktemp("cuda")
    manifest = discover(write_phantom_set(root, per_class=8, size=64)).manifest
    prepare_cache(make_split(manifest, 0.2, 0.2, 0), root / "cache", size=(64, 64), workers=0, progress=False)
    return root / "cache"


def test_bf16_autocast_trains_both_stages_with_ema_and_throttled_checkpoints(cache, tmp_path, monkeypatch):
    """The CUDA precision path (bf16 autocast) run on the CPU: loss falls and stays finite, the EMA and the
    saved weights stay float32, the resumable checkpoint is throttled as on a GPU."""
    from lungcls.cls.train import train_classifier
    from lungcls.engine import trainer
    from lungcls.seg.train import train_segmenter

    saves = []
    original = trainer._save_last
    monkeypatch.setattr(trainer, "_save_last", lambda *a, **k: (saves.append(a[3]), original(*a, **k)))
    monkeypatch.setattr(trainer._Throttle, "due", lambda self: False)  # saving "costs" more than the epochs
    bf16 = TrainConfig(epochs=3, batch_size=8, lr=3e-3, device="cpu", amp_cpu=True, ema_epochs=1.0)
    seg = train_segmenter([cache], tmp_path / "seg", TINY, bf16, progress=False)
    losses = [r["train_loss"] for r in seg.fit.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert saves == [2]  # only the last epoch: the throttle skipped the others
    assert all(p.dtype == torch.float32 for p in seg.model.model.parameters())
    assert "val_live_dice" in seg.fit.history[-1]  # EMA validated beside the live weights
    cls = train_classifier([cache], tmp_path / "cls", ClassifierConfig(arch="resnet18", image_size=32, mode="masked"),
                           TrainConfig(epochs=1, batch_size=8, device="cpu", amp_cpu=True), segmenter=seg.model,
                           progress=False)  # fmt: skip
    assert np.isfinite(cls.fit.history[0]["train_loss"])
    assert json.loads((tmp_path / "cls" / "config.json").read_text())["train"]["amp_cpu"] is True


def test_bf16_inference_gives_the_masks_of_fp32(cache):
    from lungcls.data import PackedCache
    from lungcls.models import build_segmenter

    torch.manual_seed(0)
    segmenter = Segmenter(build_segmenter(TINY), TINY, device="cpu")
    images = torch.from_numpy(np.array(PackedCache.open(cache).images[:4]))[:, None]
    fp32 = segmenter.probabilities(images)
    with torch.inference_mode(), autocast(torch.device("cpu"), enabled=True, cpu=True):
        bf16 = torch.sigmoid(segmenter.model(segmenter.task.inputs(images)).float())
        assert segmenter.model(segmenter.task.inputs(images)).dtype == torch.bfloat16  # autocast did run
    bf16 = torch.nn.functional.interpolate(bf16, size=fp32.shape[-2:], mode="bilinear", align_corners=False)
    assert (bf16 - fp32).abs().max() < 0.05 and ((bf16 > 0.5) == (fp32 > 0.5)).float().mean() > 0.99


def test_models_run_channels_last_as_on_a_gpu():
    from lungcls.cls.task import ClassificationTask
    from lungcls.models import build_classifier

    cfg = ClassifierConfig(arch="resnet18", image_size=32)
    task = ClassificationTask(build_classifier(cfg), cfg, torch.device("cpu"))
    assert task.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x, _ = task.inputs(torch.zeros(2, 1, 64, 64, dtype=torch.uint8))
    assert x.is_contiguous(memory_format=torch.channels_last) and task.logits(x).shape == (2, 3)


@pytest.mark.slow
def test_a_compiled_model_trains_and_predicts_like_the_eager_one():
    """One tiny compiled forward and backward (inductor, with the machine's C++ compiler), as --compile does."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3))  # fmt: skip
    compiled = torch.compile(model)
    x = torch.randn(4, 1, 16, 16)
    eager_out = model(x)
    out = compiled(x)
    assert torch.allclose(out, eager_out, atol=1e-5)
    out.sum().backward()
    grad = model[0].weight.grad.clone()
    model.zero_grad()
    model(x).sum().backward()
    assert torch.allclose(grad, model[0].weight.grad, atol=1e-5)
    from lungcls.checkpoint import unwrap

    assert unwrap(compiled) is model  # checkpoints are saved from the plain module, no _orig_mod. prefix
