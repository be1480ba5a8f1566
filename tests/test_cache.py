"""The packed cache: pixel-exact, idempotent, atomic, streaming, and it skips bad files."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from lungcls import DataError
from lungcls.data import PackedCache, discover, prepare_cache
from lungcls.data import cache as cache_module
from lungcls.data.manifest import Manifest, Sample
from lungcls.reader import read_image, read_mask


def test_cache_round_trip_is_pixel_exact_on_real_files(tmp_path, shared_data):
    manifest = (
        discover(shared_data / "ieee8023-radiologist100").manifest
        + discover(shared_data / "ieee8023-originals").manifest
    )
    result = prepare_cache(manifest, tmp_path / "cache", workers=2, progress=False)
    assert result.count == 113 and result.decoded == 113 and not result.failed
    cache = PackedCache.open(tmp_path / "cache")
    assert isinstance(cache.images, np.memmap) and cache.images.shape == (113, 256, 256)
    for k, s in enumerate(cache.samples):
        assert np.array_equal(cache.images[k], read_image(s.image)), s.image
        assert np.array_equal(cache.masks[k], read_mask(s.mask)), s.mask
    assert cache.has_mask.all() and [cache.class_names[k] for k in cache.labels] == [s.label for s in manifest]


def test_rerun_does_no_work_and_a_changed_file_alone_is_decoded(tmp_path, radiologist100):
    images = tmp_path / "set" / "All" / "Normal" / "images"
    images.mkdir(parents=True)
    for k, p in enumerate(
        sorted((radiologist100 / "Lung Segmentation Data" / "All" / "COVID-19" / "images").iterdir())[:5]
    ):
        shutil.copy(p, images / f"Normal ({k}).png")
    manifest = discover(tmp_path / "set").manifest
    first = prepare_cache(manifest, tmp_path / "cache", progress=False)
    again = prepare_cache(manifest, tmp_path / "cache", progress=False)
    assert (first.decoded, again.up_to_date, again.decoded) == (5, True, 0)
    changed = images / "Normal (3).png"
    shutil.copy(images / "Normal (0).png", changed)
    os.utime(changed, ns=(1, 1))
    third = prepare_cache(manifest, tmp_path / "cache", progress=False)
    assert (third.decoded, third.reused) == (1, 4)
    cache = PackedCache.open(tmp_path / "cache")
    assert np.array_equal(cache.images[3], cache.images[0])
    assert len(list((tmp_path / "cache").glob("data-*"))) == 1  # the old data folder is gone


def test_interrupted_prepare_never_leaves_a_cache_that_loads(tmp_path, radiologist100, monkeypatch):
    manifest = discover(radiologist100).manifest
    small = Manifest(manifest.samples[:10])

    def dying_scan(*args, **kwargs):
        for k, r in enumerate(real_scan(*args, **kwargs)):
            if k == 5:
                raise KeyboardInterrupt("power cut")
            yield r

    real_scan = cache_module.scan
    monkeypatch.setattr(cache_module, "scan", dying_scan)
    with pytest.raises(KeyboardInterrupt):
        prepare_cache(small, tmp_path / "fresh", progress=False)
    with pytest.raises(DataError, match="not a lungcls cache"):
        PackedCache.open(tmp_path / "fresh")
    monkeypatch.setattr(cache_module, "scan", real_scan)
    prepare_cache(small, tmp_path / "kept", progress=False)
    monkeypatch.setattr(cache_module, "scan", dying_scan)
    with pytest.raises(KeyboardInterrupt):
        prepare_cache(Manifest(manifest.samples[10:20]), tmp_path / "kept", progress=False)
    kept = PackedCache.open(tmp_path / "kept")  # the previous cache is intact
    assert [s.image for s in kept.samples] == [s.image for s in small]
    assert np.array_equal(kept.images[0], read_image(small.samples[0].image))


def test_bad_files_are_skipped_and_listed_and_mask_problems_documented(tmp_path, radiologist100):
    good = sorted((radiologist100 / "Lung Segmentation Data" / "All" / "COVID-19" / "images").iterdir())[:3]
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not a png")
    (tmp_path / "cut.png").write_bytes(good[0].read_bytes()[:500])
    small_mask = tmp_path / "small_mask.png"
    import cv2

    cv2.imwrite(str(small_mask), np.pad(np.full((40, 40), 255, np.uint8), 12))  # 64x64 mask for a 256x256 image
    samples = [
        Sample(str(good[0]), 0, mask=str(small_mask)),  # mask of another size: resized by nearest neighbour
        Sample(str(tmp_path / "zero.png"), 0),
        Sample(str(good[1]), 1, mask=str(tmp_path / "gone.png")),  # missing mask: kept, has_mask False
        Sample(str(tmp_path / "text.png"), 2),
        Sample(str(tmp_path / "cut.png"), 2),
        Sample(str(good[2]), 2),
    ]
    result = prepare_cache(Manifest(samples), tmp_path / "cache", progress=False)
    assert result.count == 3
    assert {os.path.basename(f["path"]): f["reason"].split(" (")[0] for f in result.failed} == {
        "zero.png": "empty file",
        "text.png": "not an image",
        "cut.png": "truncated or corrupt image data",
    }
    cache = PackedCache.open(tmp_path / "cache")
    assert cache.has_mask.tolist() == [True, False, False]
    assert [r["mask_status"] for r in cache.meta["samples"]] == ["size-mismatch", "missing", "none"]
    assert np.array_equal(cache.masks[0], read_mask(small_mask)) and cache.masks[0][128, 128] == 1
    assert cache.meta["failed"] == result.failed


def test_prepare_streams_memory_does_not_hold_the_dataset(tmp_path):
    import psutil

    rng = np.random.default_rng(0)
    folder = tmp_path / "set" / "All" / "COVID-19" / "images"
    folder.mkdir(parents=True)
    import cv2

    for k in range(400):
        cv2.imwrite(str(folder / f"{k}.png"), rng.integers(0, 255, (512, 512), np.uint8))
    manifest = discover(tmp_path / "set").manifest
    before = psutil.Process().memory_info().rss
    prepare_cache(manifest, tmp_path / "cache", workers=0, progress=False)
    grown = psutil.Process().memory_info().rss - before
    # 400 images = 26 MB of pixels at 256 px plus 105 MB decoded at 512 px; streaming keeps neither
    assert grown < 40e6, f"RSS grew by {grown / 1e6:.0f} MB"


def test_a_mask_that_is_not_binary_is_flagged_and_any_nonzero_is_lung(tmp_path, radiologist100):
    import cv2

    image = sorted((radiologist100 / "Lung Segmentation Data" / "All" / "COVID-19" / "images").iterdir())[0]
    grey = np.zeros((256, 256), np.uint8)
    grey[60:200, 40:120] = 128
    grey[60:200, 140:220] = 255  # two values for "lung"
    cv2.imwrite(str(tmp_path / "m.png"), grey)
    prepare_cache(Manifest([Sample(str(image), 0, mask=str(tmp_path / "m.png"))]), tmp_path / "cache", progress=False)
    cache = PackedCache.open(tmp_path / "cache")
    assert cache.meta["samples"][0]["mask_status"] == "not-binary"
    assert cache.masks[0][100, 80] == 1 and cache.masks[0][100, 180] == 1 and cache.masks[0][10, 10] == 0
