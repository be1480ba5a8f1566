"""The recipe options the recipe study searches over: Mixup/CutMix, SGD, and a classifier started from a lung
U-Net's encoder (in-domain pretraining, nothing downloaded)."""

from __future__ import annotations

import pytest
import torch

from lungcls.cls.mixing import mix_batch
from lungcls.config import ClassifierConfig, SegmenterConfig, TrainConfig
from lungcls.engine.trainer import optimizer_for
from lungcls.errors import CheckpointError
from lungcls.models.classifiers import build_classifier
from lungcls.models.unet import build_segmenter
from lungcls.store import save_tensors


def batch(n: int = 6, size: int = 16) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 1, size, size).clone()


def test_mixup_blends_each_image_with_its_partner_by_lam():
    x = batch()
    mixed, partner, lam = mix_batch(x, p=1.0, mode="mixup", generator=torch.Generator().manual_seed(0))
    assert 0 <= float(lam) <= 1
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[partner])


def test_cutmix_pastes_a_box_and_lam_is_the_share_left_to_each_image():
    x = batch(size=32)
    mixed, partner, lam = mix_batch(x, p=1.0, mode="cutmix", generator=torch.Generator().manual_seed(3))
    from_partner = (mixed == x[partner]) & (x[partner] != x)
    share = from_partner.float().mean(dim=(1, 2, 3))
    moved = partner != torch.arange(len(x))
    assert torch.allclose(share[moved], (1 - lam).expand(int(moved.sum())), atol=1e-6)


def test_no_mixing_when_the_draw_says_so():
    x = batch()
    mixed, _, lam = mix_batch(x, p=0.0, mode="both", generator=torch.Generator().manual_seed(0))
    assert float(lam) == 1.0 and torch.equal(mixed, x)


def test_sgd_and_adamw_are_chosen_by_the_config():
    model = torch.nn.Linear(2, 2)
    assert isinstance(optimizer_for(model, TrainConfig(optimizer="sgd"), torch.device("cpu")), torch.optim.SGD)
    assert isinstance(optimizer_for(model, TrainConfig(), torch.device("cpu")), torch.optim.AdamW)


def test_a_classifier_starts_from_a_lung_unets_encoder(tmp_path):
    unet = build_segmenter(SegmenterConfig(encoder_name="resnet18", encoder_depth=5, image_size=64))
    save_tensors(tmp_path / "model.safetensors", {k: v.contiguous() for k, v in unet.state_dict().items()})
    clf = build_classifier(ClassifierConfig(arch="resnet18", image_size=64), tmp_path / "model.safetensors")
    body = {k: v for k, v in clf.state_dict().items() if not k.startswith("fc.")}
    encoder = unet.encoder.state_dict()
    assert body.keys() <= encoder.keys()
    assert all(torch.equal(v, encoder[k]) for k, v in body.items())
    assert clf.conv1.in_channels == 1


def test_an_encoder_of_another_architecture_is_refused(tmp_path):
    unet = build_segmenter(SegmenterConfig(encoder_name="resnet18", encoder_depth=4, image_size=64))  # no layer4
    save_tensors(tmp_path / "model.safetensors", {k: v.contiguous() for k, v in unet.state_dict().items()})
    with pytest.raises(CheckpointError, match="do not fit"):
        build_classifier(ClassifierConfig(arch="resnet18", image_size=64), tmp_path / "model.safetensors")
