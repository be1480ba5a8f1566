"""Stage 1: the U-Net learns on real CXRs, round-trips through safetensors, resumes, post-processes,
and `lungcls segment` goes on past a corrupt file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lungcls import CheckpointError, ConfigError
from lungcls.cli import app
from lungcls.config import PostprocessConfig, SegmenterConfig, TrainConfig, from_dict
from lungcls.data import PackedCache, discover, make_split, prepare_cache
from lungcls.engine.trainer import seed_everything
from lungcls.seg.components import count_components, label_components
from lungcls.seg.metrics import hausdorff95, mask_scores
from lungcls.seg.postprocess import mask_flags, postprocess, postprocess_cpu, postprocess_device
from lungcls.seg.segmenter import Segmenter
from lungcls.seg.train import train_segmenter

TINY = SegmenterConfig(encoder_name="resnet18", encoder_depth=3, decoder_channels=[32, 16, 8], image_size=64)


def tiny_train(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 8, "lr": 3e-3, "warmup_epochs": 0.5, "device": "cpu", **overrides})


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory, radiologist100) -> Path:
    """40 real CXRs with radiologist lung masks at 64 px, split Train/Val/Test by patient."""
    manifest = discover(radiologist100).manifest
    manifest.samples = manifest.samples[:40]
    path = tmp_path_factory.mktemp("seg") / "cache"
    prepare_cache(make_split(manifest, val=0.2, test=0.2, seed=0), path, size=(64, 64), workers=0, progress=False)
    return path


def test_loss_decreases_on_real_images(tmp_path, real_cache):
    run = train_segmenter([real_cache], tmp_path / "run", TINY, tiny_train(epochs=4), progress=False)
    losses = [r["train_loss"] for r in run.fit.history]
    assert losses[-1] < losses[0] * 0.9, losses
    assert 0 < run.fit.best_metric <= 1 and (tmp_path / "run" / "model.safetensors").is_file()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["kind"] == "segmenter" and config["metrics"]["best_epoch"] == run.fit.best_epoch
    assert config["data"]["manifest_digest"] == PackedCache.open(real_cache).digest()
    assert "torch" in config["environment"] and (tmp_path / "run" / "history.csv").read_text().startswith("epoch,")
    # evaluated at the end: the reports are returned and written, and summarised in the config
    assert set(run.reports) == {"val", "test"} and (tmp_path / "run" / "eval_seg_test.md").is_file()
    assert config["evaluation"]["test"]["dice"]["mean"] == pytest.approx(run.reports["test"].summary["dice"]["mean"])
    images = json.loads((tmp_path / "run" / "images.json").read_text())
    assert len(images["Train"]) == config["data"]["train_images"] and isinstance(run.model, Segmenter)


def test_save_then_load_gives_identical_predictions(tmp_path, real_cache):
    train_segmenter([real_cache], tmp_path / "run", TINY, tiny_train(epochs=1), progress=False)
    images = torch.from_numpy(np.array(PackedCache.open(real_cache).images[:6]))[:, None]
    a = Segmenter.load(tmp_path / "run", device="cpu").probabilities(images)
    b = Segmenter.load(tmp_path / "run", device="cpu").probabilities(images)
    assert a.shape == (6, 1, 64, 64) and torch.equal(a, b)
    shutil.copy(tmp_path / "run" / "model.safetensors", tmp_path / "copy.safetensors")
    seed_everything(123)  # a differently initialised model, then the saved weights loaded into it
    from lungcls.checkpoint import load_state
    from lungcls.models import build_segmenter
    from lungcls.store import load_tensors

    weights = load_tensors(tmp_path / "copy.safetensors")
    other = Segmenter(load_state(build_segmenter(TINY), weights, "copy"), TINY, device="cpu")
    assert torch.equal(other.probabilities(images), a)


def test_resume_continues_from_the_saved_epoch_and_matches_an_uninterrupted_run(tmp_path, real_cache):
    full = train_segmenter([real_cache], tmp_path / "full", TINY, tiny_train(), progress=False).fit

    def crash_after_first_epoch(epoch, record):
        if epoch == 0:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        train_segmenter(
            [real_cache], tmp_path / "cut", TINY, tiny_train(), progress=False, on_epoch_end=crash_after_first_epoch
        )
    assert json.loads((tmp_path / "cut" / "last.json").read_text())["epoch"] == 0
    epochs_run = []
    resumed = train_segmenter([real_cache], tmp_path / "cut", resume=True, progress=False,
                              on_epoch_end=lambda e, r: epochs_run.append(e)).fit  # fmt: skip
    assert epochs_run == [1, 2] and [r["epoch"] for r in resumed.history] == [1, 2, 3]
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "full" / "last.safetensors"), load_file(tmp_path / "cut" / "last.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert resumed.history[-1]["train_loss"] == pytest.approx(full.history[-1]["train_loss"], rel=1e-5)


def test_postprocess_removes_a_stray_blob_and_fills_a_hole():
    prob = np.zeros((64, 64), np.float32)
    prob[10:50, 8:28] = 0.99  # left lung
    prob[10:50, 36:56] = 0.99  # right lung
    prob[25:30, 15:20] = 0.1  # a hole in the left lung
    prob[2:5, 60:63] = 0.95  # a stray blob
    masks, flags = postprocess(torch.from_numpy(prob)[None, None])
    mask = masks[0, 0].numpy()
    assert mask[27, 17] == 1 and mask[3, 61] == 0 and mask[20, 40] == 1 and flags == [[]]
    kept = postprocess_cpu(prob, PostprocessConfig(keep_largest=0, fill_holes=False))
    assert kept[27, 17] == 0 and kept[3, 61] == 1
    specks_off = postprocess_cpu(prob, PostprocessConfig(keep_largest=0, fill_holes=False, min_region=0.01))
    assert specks_off[3, 61] == 0 and specks_off[20, 40] == 1  # 9 pixels < 1% of 64 x 64; the lungs stay
    empty, flags = postprocess(torch.zeros(1, 1, 64, 64))
    assert not empty.any() and flags == [["no-lung"]]


def test_a_segmenter_that_hesitates_is_flagged_even_when_the_shape_looks_right():
    prob = np.zeros((64, 64), np.float32)
    prob[10:50, 8:28] = 0.99
    prob[10:50, 36:56] = 0.99
    _, confident = postprocess(torch.from_numpy(prob)[None, None])
    prob[10:50, 8:28] = 0.6  # same lungs, half of them barely above the threshold
    _, hesitant = postprocess(torch.from_numpy(prob)[None, None])
    assert confident == [[]] and hesitant == [["uncertain-lungs"]]


def blobby_maps(n: int, seed: int = 0) -> list[np.ndarray]:
    """Random smooth probability maps of assorted sizes: many components, holes, ties, touching borders."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(n):
        h, w = rng.integers(4, 72, size=2)
        noise = gaussian_filter(rng.random((h, w)), sigma=rng.uniform(0.3, 3))
        maps.append((((noise - noise.min()) / (np.ptp(noise) + 1e-9)) ** rng.uniform(0.3, 3)).astype(np.float32))
    return maps


def test_device_postprocessing_gives_the_same_masks_as_scikit_image():
    # the GPU kernel (postprocess_device) runs here on CPU tensors: same code, same results
    for cfg in (
        PostprocessConfig(),
        PostprocessConfig(keep_largest=1),
        PostprocessConfig(keep_largest=3, fill_holes=False),
        PostprocessConfig(keep_largest=0, fill_holes=False, min_region=0.01),
        PostprocessConfig(keep_largest=2, min_region=0.05),
    ):
        for prob in blobby_maps(60):
            mask = postprocess_cpu(prob, cfg)
            on_device = postprocess_device(torch.from_numpy(prob)[None, None], cfg)
            assert np.array_equal(on_device[0, 0].numpy(), mask)


def planted(*boxes: tuple[int, int, int, int], size: int = 256) -> torch.Tensor:
    """A (1, 1, size, size) mask with filled (y0, y1, x0, x1) rectangles."""
    m = torch.zeros(1, 1, size, size, dtype=torch.uint8)
    for y0, y1, x0, x1 in boxes:
        m[..., y0:y1, x0:x1] = 1
    return m


def test_mask_flags_pass_lungs_and_catch_what_is_not_two_lungs(radiologist100):
    from lungcls.reader import read_mask

    two_lungs = planted((50, 200, 40, 110), (60, 190, 150, 215))
    cases = {
        "two lungs": (two_lungs, []),
        "nothing": (planted(), ["no-lung"]),
        "one lung": (planted((50, 200, 40, 110)), ["one-lung-field"]),
        # the failure: one blob over neck, chest and abdomen plus a speck
        "blob and speck": (planted((0, 256, 30, 220), (5, 8, 240, 243)), ["implausible-lung-area", "lung-fields-joined"]),
        "blob across the middle": (planted((40, 200, 40, 215)), ["lung-fields-joined"]),
        "one high, one low": (planted((10, 90, 40, 110), (170, 250, 150, 215)), ["lung-fields-misaligned"]),
        "unequal": (planted((50, 200, 40, 110), (100, 110, 150, 160)), ["one-lung-field"]),
    }
    for name, (mask, expected) in cases.items():
        assert mask_flags(mask) == [expected], name
    # real ground-truth masks: no flag (the radiologist masks join the lungs at the bottom only)
    real = [read_mask(s.mask) for s in discover(radiologist100).manifest if s.mask][:40]
    flagged = [f for f in mask_flags(torch.from_numpy(np.stack(real))[:, None]) if f]
    assert len(flagged) <= 1, flagged


def test_device_labelling_finds_the_same_components_as_scikit_image(radiologist100):
    from skimage.measure import label

    from lungcls.reader import read_image

    samples = [s for s in discover(radiologist100).manifest if s.mask][:8]
    real = [read_image(s.mask, (128, 128)) > 127 for s in samples]
    for mask in real + [m > 0.5 for m in blobby_maps(40, seed=1)]:
        for connectivity, sk in ((8, 2), (4, 1)):
            ours = label_components(torch.from_numpy(mask)[None, None], connectivity)[0, 0].numpy()
            theirs = label(mask, connectivity=sk)
            # the same partition: one of our labels per scikit-image label, and the other way round
            pairs = set(zip(ours[mask].tolist(), theirs[mask].tolist()))
            assert len(pairs) == len(set(ours[mask].tolist())) == theirs.max()
            assert count_components(torch.from_numpy(ours)[None, None]).item() == theirs.max()
    assert label(real[0], connectivity=2).max() >= 2  # real lung masks: two fields (or more)


def test_metrics_on_planted_masks():
    target = torch.zeros(1, 1, 32, 32, dtype=torch.long)
    target[..., 8:24, 8:24] = 1
    pred = torch.zeros_like(target)
    pred[..., 10:24, 8:24] = 1
    scores = mask_scores(pred, target)
    assert scores["dice"].item() == pytest.approx(2 * 224 / (256 + 224))
    assert scores["iou"].item() == pytest.approx(224 / 256)
    assert hausdorff95(pred, target).item() == pytest.approx(2.0)


def test_segment_cli_writes_outputs_and_goes_on_past_a_corrupt_file(tmp_path, real_cache, radiologist100):
    train_segmenter([real_cache], tmp_path / "run", TINY, tiny_train(epochs=1), progress=False)
    folder = tmp_path / "in"
    folder.mkdir()
    real = sorted((radiologist100 / "Lung Segmentation Data" / "All" / "COVID-19" / "images").iterdir())[:2]
    for p in real:
        shutil.copy(p, folder / p.name)
    (folder / "corrupt (1).png").write_bytes(real[0].read_bytes()[:2000])  # cut off mid-file
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = CliRunner().invoke(
        app,
        ["segment", str(folder), "--model", str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--device", "cpu"],
    )
    assert result.exit_code == 1, result.output
    assert "corrupt (1).png" in result.output and "2 images segmented" in result.output
    rows = (tmp_path / "out" / "segment.csv").read_text().splitlines()
    assert len(rows) == 4 and "truncated or corrupt" in next(r for r in rows if "corrupt" in r)
    for sub in ("masks", "overlays"):
        assert len(list((tmp_path / "out" / sub).glob("*.png"))) == 2
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # inputs untouched
    assert rows[0] == ("path,name,width,height,lung_fraction,box_x0,box_y0,box_x1,box_y1,flags,mask_dice_estimate,error,"
                       "model_warnings")  # fmt: skip
    inside = CliRunner().invoke(
        app, ["segment", str(folder), "--model", str(tmp_path / "run"), "--out", str(folder / "o")]
    )
    assert inside.exit_code == 2 and not (folder / "o").exists()
    masks_only = CliRunner().invoke(app, ["segment", *map(str, real), "--model", str(tmp_path / "run"), "--out",
                                          str(tmp_path / "m"), "--masks-only", "--cpu", "-q"])  # fmt: skip
    assert masks_only.exit_code == 0, masks_only.output
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["masks", "segment.csv"]
    assert len(list((tmp_path / "m" / "masks").glob("*.png"))) == 2


def test_a_shallow_unet_stores_only_the_encoder_stages_it_uses(tmp_path):
    from lungcls.models import build_segmenter

    cfg = SegmenterConfig(encoder_name="resnet18", encoder_depth=4, image_size=64)
    model = build_segmenter(cfg)
    assert not any(k.startswith("encoder.layer4.") for k in model.state_dict())
    assert cfg.decoder_channels == [128, 64, 32, 16]  # smp's widths cut to the depth, from Python too
    n = sum(p.numel() for p in model.parameters())
    assert n < 4_000_000  # 12.0 M with the unused stage
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_bad_configs_and_checkpoints_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="encoder_depth"):
        from_dict(SegmenterConfig, {"encoder_depth": "five"})
    with pytest.raises(ConfigError, match="'epochz': unknown field"):
        from_dict(TrainConfig, {"epochz": 3})
    assert from_dict(TrainConfig, {"augment": {"rotation": 5}}).augment.rotation == 5.0
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"kind": "segmenter", "model": {}, "postprocess": {}}))
    torch.save({"x": torch.zeros(1)}, tmp_path / "run" / "model.safetensors")  # a pickle under a safe name
    with pytest.raises(CheckpointError, match="looks like a pickle"):
        Segmenter.load(tmp_path / "run", device="cpu")


def test_the_unet_trains_at_its_own_size_from_a_larger_cache(tmp_path, real_cache):
    small = SegmenterConfig(encoder_name="resnet18", encoder_depth=3, decoder_channels=[16, 8, 4], image_size=32)
    run = train_segmenter([real_cache], tmp_path / "run", small, tiny_train(epochs=1), progress=False)  # cache: 64 px
    assert 0 < run.fit.best_metric <= 1
    images = torch.from_numpy(np.array(PackedCache.open(real_cache).images[:2]))[:, None]
    assert Segmenter.load(tmp_path / "run", device="cpu").probabilities(images).shape == (2, 1, 64, 64)
