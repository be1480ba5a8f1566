"""The contract every stage keeps (smp's BaseModelTester idea, parametrised): its Task runs forward and backward on
uint8 batches, one short ``fit`` lowers its loss, and its model saved and loaded again gives the same output.
A new stage joins by adding a row to STAGES."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from lungcls.cls.classifier import Classifier
from lungcls.cls.train import ClassifierStage
from lungcls.config import ClassifierConfig, SegmenterConfig, TrainConfig
from lungcls.data.loader import Batch
from lungcls.data.phantoms import make_phantom
from lungcls.engine.trainer import fit, seed_everything
from lungcls.seg.segmenter import Segmenter
from lungcls.seg.train import SegmenterStage

CPU = torch.device("cpu")
TRAIN = TrainConfig(epochs=1, batch_size=8, lr=3e-3, warmup_epochs=0.0, device="cpu")
STAGES = {
    "segmenter": (
        lambda: SegmenterStage(SegmenterConfig(encoder_name="resnet18", encoder_depth=3, decoder_channels=[8, 8, 8],
                                               image_size=64), TRAIN),  # fmt: skip
        lambda task, stage: Segmenter(task.model, stage.model, device=CPU),
        lambda model, batch: model.probabilities(batch.images),
    ),
    "classifier": (
        lambda: ClassifierStage(ClassifierConfig(arch="resnet18", image_size=32, mode="masked"), TRAIN),
        lambda task, stage: Classifier(task.model, stage.model, device=CPU),
        lambda model, batch: model.probabilities(batch.images, batch.masks)[0],
    ),
}


def batch(n: int = 8) -> Batch:
    rng = np.random.default_rng(0)
    pairs = [make_phantom(rng, k % 3, 64) for k in range(n)]
    images = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None]
    masks = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
    return Batch(images, masks, torch.arange(n) % 3, torch.ones(n, dtype=torch.bool), torch.arange(n))


def task_of(name: str, tmp_path):
    stage = STAGES[name][0]()
    stage.configure(None, tmp_path)
    seed_everything(0)
    task = stage.build(CPU, fresh=True)
    task.augment = None  # the contract is about the stage's loss, not its random augmentation
    return stage, task


class Repeat:
    """A loader that serves one batch ``steps`` times (what ``fit`` wants: len, iteration, set_epoch)."""

    def __init__(self, b: Batch, steps: int) -> None:
        self.b, self.steps = b, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return iter([self.b] * self.steps)

    def set_epoch(self, epoch: int) -> None:
        pass


@pytest.mark.parametrize("name", STAGES)
def test_the_task_runs_forward_and_backward_on_uint8_batches(name, tmp_path):
    _, task = task_of(name, tmp_path)
    task.model.train()
    loss = task.training_loss(batch(), torch.Generator().manual_seed(0))
    loss.backward()
    grads = [p.grad for p in task.model.parameters() if p.requires_grad]
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", STAGES)
def test_a_short_fit_lowers_the_loss(name, tmp_path):
    _, task = task_of(name, tmp_path)
    b, g = batch(), torch.Generator().manual_seed(0)
    # measured as trained (batch statistics): after 12 steps the running statistics of batch norm are still far from
    # the batch's, so an eval-mode loss says more about them than about the fit (and differs between CPU kernels)
    task.model.train()
    with torch.no_grad():
        before = float(task.training_loss(b, g))
    result = fit(task, Repeat(b, 6), None, replace(TRAIN, epochs=2), tmp_path / "run", {"kind": name}, progress=False)
    task.model.train()
    with torch.no_grad():
        after = float(task.training_loss(b, g))
    assert after < before and result.best_state is not None and len(result.history) == 2


@pytest.mark.parametrize("name", STAGES)
def test_saved_and_loaded_again_the_model_gives_the_same_output(name, tmp_path):
    stage, task = task_of(name, tmp_path)
    _, make_model, output = STAGES[name]
    model = make_model(task, stage)
    model.save(tmp_path / "saved")
    again = type(model).load(tmp_path / "saved", device=CPU)
    b = batch(4)
    assert torch.equal(output(model, b), output(again, b))
    assert again.cfg == model.cfg


@pytest.mark.parametrize("arch", sorted(__import__("lungcls.models", fromlist=["CLASSIFIERS"]).CLASSIFIERS))
def test_every_registered_classifier_builds_trains_and_is_explained(arch):
    from lungcls.explain import explain
    from lungcls.models import build_classifier

    cfg = ClassifierConfig(arch=arch, image_size=128, mode="masked")  # the last block's map is 4 x 4 at 128 px
    clf = Classifier(build_classifier(cfg), cfg, device=CPU)
    b = batch(2)
    for method in ("gradcam", "eigencam"):  # through gradients, and through the activations alone
        maps = explain(clf, b.images, b.masks, method=method)
        assert len(maps) == 2 and maps[0]["cam"].shape == (128, 128) and np.isfinite(maps[0]["cam"]).all()
    assert 0 <= maps[0]["in_lung_share"] <= 1  # the activations of the registered layer: a real map
