"""Images/s of the two ways to feed training: decoding PNGs every epoch vs the packed cache.

(a) a torch DataLoader whose workers decode and resize the PNG files on every epoch (the usual
notebook way), uint8 batches; (b) batches from the packed uint8 cache (lungcls.data.loader)
with device augmentation (random affine + brightness/contrast, image and mask together) on the
training device. Both deliver the same thing: augmented uint8/float batches of 256 px images
with masks, ready for the model. Measured in one run on the same machine and the same images.

    python benchmarks/data_throughput.py [--data ROOT ...] [--epochs 2] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_root, write_results  # noqa: E402

from lungcls.data import PackedCache, open_dataset, prepare_cache  # noqa: E402
from lungcls.data.dataset import ImageDataset  # noqa: E402
from lungcls.data.augment import DeviceAugment  # noqa: E402
from lungcls.data.loader import CacheLoader  # noqa: E402

DEFAULT_SETS = ["ieee8023-radiologist100", "ieee8023-v7labs427", "nih-cxr8", "covid19-radiography"]


def time_epochs(batches, epochs: int, device: torch.device, step) -> float:
    """Images/s over ``epochs`` passes (after one warm-up batch), ``step`` applied to each batch."""
    n = 0
    for k, batch in enumerate(batches(0)):  # warm-up: worker start-up and first allocations
        step(batch)
        if k == 1:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for epoch in range(epochs):
        for batch in batches(epoch):
            n += step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="*", type=Path, help="dataset roots (default: four shared sets)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args()
    device = torch.device(args.device)
    roots = args.data or [data_root() / s for s in DEFAULT_SETS]
    manifest = open_dataset(roots).manifest
    aug = DeviceAugment()

    # (a) decode PNGs every epoch in DataLoader workers, then the same device step
    files = ImageDataset(manifest, size=(256, 256))

    def png_batches(epoch: int):
        return DataLoader(
            files,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )

    def png_step(batch) -> int:
        images = batch["image"].to(device, non_blocking=True)
        masks = batch["mask"].to(device, non_blocking=True)
        aug(images.float() / 255, masks)
        return images.shape[0]

    with tempfile.TemporaryDirectory() as tmp:
        prep_t0 = time.perf_counter()
        prepare_cache(manifest, Path(tmp) / "cache", workers=args.workers, progress=False)
        prepare_s = time.perf_counter() - prep_t0
        cache = PackedCache.open(Path(tmp) / "cache")
        t0 = time.perf_counter()
        loader = CacheLoader(cache, cache.indices(), args.batch_size, device, shuffle=True)
        load_s = time.perf_counter() - t0

        def cache_batches(epoch: int):
            loader.set_epoch(epoch)
            return loader

        def cache_step(batch) -> int:
            aug(batch.images.float() / 255, batch.masks)
            return len(batch)

        png_rate = time_epochs(png_batches, args.epochs, device, png_step)
        cache_rate = time_epochs(cache_batches, args.epochs, device, cache_step)
        # the data path alone, without augmentation: what decoding costs against the cache
        png_only = time_epochs(png_batches, args.epochs, device, lambda b: b["image"].to(device).shape[0])
        cache_only = time_epochs(cache_batches, args.epochs, device, lambda b: len(b))

    ratio = cache_rate / png_rate
    table = (
        "| path | images/s |\n|---|---|\n"
        f"| (a) DataLoader decoding PNGs every epoch ({args.workers} workers) + device augmentation | {png_rate:,.0f} |\n"
        f"| (b) packed uint8 cache + device augmentation ({device.type}) | {cache_rate:,.0f} |\n"
        f"| ratio (b) / (a) | {ratio:.1f}x |\n"
        f"| data path alone, no augmentation: (a) PNG DataLoader | {png_only:,.0f} |\n"
        f"| data path alone, no augmentation: (b) packed cache | {cache_only:,.0f} |\n"
        f"| ratio, data path alone | {cache_only / png_only:.0f}x |\n\n"
        f"{len(manifest)} images, 256 px, batch {args.batch_size}, {args.epochs} epochs each; "
        f"one-off costs for (b): prepare {prepare_s:.1f} s, loading the cache onto {device.type} {load_s:.2f} s."
    )
    print(table)
    write_results(
        f"data_throughput_{device.type}",
        {
            "images": len(manifest),
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "workers": args.workers,
            "device": str(device),
            "png_dataloader_img_s": png_rate,
            "cache_img_s": cache_rate,
            "ratio": ratio,
            "png_dataloader_no_aug_img_s": png_only,
            "cache_no_aug_img_s": cache_only,
            "ratio_no_aug": cache_only / png_only,
            "prepare_s": prepare_s,
            "cache_load_s": load_s,
        },
        table,
        args.out,
    )


if __name__ == "__main__":
    main()
