"""Batches from the packed cache, device augmentation, and the albumentations path."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from lungcls.config import AugmentConfig
from lungcls.data import PackedCache, prepare_cache
from lungcls.data.augment import DeviceAugment
from lungcls.data.dataset import ImageDataset, default_albumentations
from lungcls.data.loader import CacheLoader
from lungcls.data.manifest import CLASS_NAMES, Manifest, Sample

from .conftest import synthetic_cxr


def make_cache(tmp_path, n: int = 10, size: int = 64) -> PackedCache:
    import cv2

    samples = []
    for k in range(n):
        image, mask = synthetic_cxr(size, seed=k)
        cv2.imwrite(str(tmp_path / f"i{k}.png"), image)
        cv2.imwrite(str(tmp_path / f"m{k}.png"), mask * 255)
        samples.append(
            Sample(str(tmp_path / f"i{k}.png"), CLASS_NAMES[k % 3], str(tmp_path / f"m{k}.png"), "Train" if k < 8 else "Val")
        )
    prepare_cache(Manifest(samples), tmp_path / "cache", size=(size, size), progress=False)
    return PackedCache.open(tmp_path / "cache")


def test_loader_serves_uint8_batches_and_reshuffles_per_epoch_with_a_seed(tmp_path):
    cache = make_cache(tmp_path)
    loader = CacheLoader(cache, cache.indices("Train"), batch_size=3, shuffle=True, seed=1)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    b = batches[0]
    assert b.images.dtype == torch.uint8 and b.images.shape == (3, 1, 64, 64)
    assert b.masks.dtype == torch.uint8 and set(b.masks.unique().tolist()) <= {0, 1}
    seen = torch.cat([x.index for x in batches]).tolist()
    assert sorted(seen) == list(range(8))
    assert torch.equal(b.images[0, 0], torch.from_numpy(np.array(cache.images[int(b.index[0])])))
    assert b.labels.tolist() == cache.labels[b.index.numpy()].tolist()
    order = lambda epoch: (loader.set_epoch(epoch), torch.cat([x.index for x in loader]).tolist())[1]  # noqa: E731
    assert order(0) == order(0) == seen and order(1) != order(0)
    assert len(CacheLoader(cache, cache.indices("Train"), batch_size=3, drop_last=True)) == 2


def test_device_augment_moves_image_and_mask_together(tmp_path):
    cache = make_cache(tmp_path, n=4)
    batch = next(iter(CacheLoader(cache, cache.indices(), batch_size=4)))
    images = batch.images.float() / 255
    aug = DeviceAugment(AugmentConfig(rotation=15, brightness=0, contrast=0))
    g = torch.Generator().manual_seed(0)
    out, masks = aug(images, batch.masks, generator=g)
    assert out.shape == images.shape and masks.dtype == torch.uint8 and not torch.equal(masks, batch.masks)
    lung_mean = (out * masks).sum() / masks.sum()
    rest_mean = (out * (1 - masks)).sum() / (1 - masks).sum()
    assert lung_mean < 0.35 < rest_mean  # dark lungs stayed under the warped mask
    again, _ = aug(images, batch.masks, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_albumentations_path_reads_cache_or_files_as_uint8(tmp_path):
    cache = make_cache(tmp_path, n=4)
    for source in (cache, cache.manifest):
        ds = ImageDataset(source, transform=default_albumentations(), size=(64, 64))
        batch = next(iter(DataLoader(ds, batch_size=4)))
        assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (4, 1, 64, 64)
        assert set(batch["mask"].unique().tolist()) <= {0, 1} and batch["label"].tolist() == [0, 1, 2, 0]
    plain = ImageDataset(cache.manifest, size=(64, 64))[2]["image"][0].numpy()
    assert np.array_equal(plain, np.asarray(cache.images[2]))
