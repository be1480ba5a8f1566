"""Decode every sample of a manifest once, on all CPU cores, in order, with a progress bar.

Both ``data inspect`` (statistics, hashes) and ``prepare`` (pixels for the cache) use it, so a
file is judged readable or not in exactly one place.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImageReadError
from ..progress import progress_bar
from ..reader import MAX_PIXELS, Size, decode_image, resize_image, resize_mask
from .duplicates import thumbnail
from .manifest import Sample


@dataclass
class ScanResult:
    """What decoding one sample found.

    Attributes:
        image: uint8 (H, W) at the working size, or None if unreadable or not kept.
        mask: uint8 (H, W) in {0, 1} at the working size, or None.
        error: why the image could not be read (None when it could).
        mask_status: ``ok``, ``none`` (no mask given), ``missing`` (file absent), ``unreadable``,
            ``size-mismatch`` (mask and image differ in native size; the mask is still resized
            and used) or ``not-binary`` (more than two values; nonzero is taken as lung).
        mask_error: the reason when ``mask_status`` is ``unreadable`` or ``missing``.
        thumb: uint8 (16, 16) thumbnail of the native image, for near-duplicate search.
    """

    index: int
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    error: str | None = None
    content_hash: str = ""
    native_size: tuple[int, int] = (0, 0)
    thumb: np.ndarray | None = None
    mode: str = ""
    format: str = ""
    mask_status: str = "none"
    mask_error: str | None = None


def scan_one(index: int, sample: Sample, size: Size, keep_pixels: bool, max_pixels: int = MAX_PIXELS) -> ScanResult:
    """Decode one sample's image and mask; never raises for bad files, records the reason instead."""
    r = ScanResult(index)
    try:
        img = decode_image(sample.image, max_pixels)
    except ImageReadError as e:
        r.error = e.reason
        return r
    r.content_hash, r.native_size, r.mode, r.format = img.content_hash, img.size, img.mode, img.format
    r.thumb = thumbnail(img.pixels)
    if keep_pixels:
        r.image = resize_image(img.pixels, size)
    if sample.mask is None:
        return r
    if not Path(sample.mask).is_file():
        r.mask_status, r.mask_error = "missing", "no such file"
        return r
    try:
        mask = decode_image(sample.mask, max_pixels).pixels
    except ImageReadError as e:
        r.mask_status, r.mask_error = "unreadable", e.reason
        return r
    r.mask_status = "ok"
    if mask.shape != img.pixels.shape:
        r.mask_status = "size-mismatch"
    elif np.count_nonzero((mask != 0) & (mask != mask.max())):
        r.mask_status = "not-binary"
    if keep_pixels:
        r.mask = resize_mask((mask > 0).astype(np.uint8), size)
    return r


def _scan_star(args: tuple) -> ScanResult:
    return scan_one(*args)


def scan(
    samples: Sequence[Sample],
    indices: Sequence[int] | None = None,
    size: Size = (256, 256),
    keep_pixels: bool = True,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "decoding",
) -> Iterator[ScanResult]:
    """Yield a :class:`ScanResult` for each sample (or each of ``indices``), in order.

    Args:
        workers: processes to use (default: all CPU cores); 0 or 1 decodes in this process.
        progress: show a tqdm progress bar on stderr.
    """

    indices = list(range(len(samples))) if indices is None else list(indices)
    jobs = ((i, samples[i], tuple(size), keep_pixels) for i in indices)
    workers = (os.cpu_count() or 1) if workers is None else workers
    bar = progress_bar(total=len(indices), desc=desc, unit="img", enabled=progress)
    try:
        if workers <= 1 or len(indices) < 64:
            for job in jobs:
                bar.update(1)
                yield scan_one(*job)
            return
        # fork on Linux (as torch DataLoader does): workers need no re-import of the caller's script
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ctx.Pool(workers) as pool:
            for result in pool.imap(_scan_star, jobs, chunksize=16):
                bar.update(1)
                yield result
    finally:
        bar.close()
