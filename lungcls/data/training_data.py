"""Turn whatever the user points training at (roots, manifests, a cache) into a split packed cache."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError
from .cache import PackedCache, cached_duplicates, is_cache, prepare_cache
from .sources import open_dataset
from .split import make_split

log = logging.getLogger(__name__)


def open_training_data(
    paths: Sequence[str | Path],
    cache_dir: str | Path,
    size: int = 256,
    val: float = 0.1,
    test: float = 0.2,
    split_seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    strict: bool = False,
) -> PackedCache:
    """A packed cache with Train and Val splits for ``paths``.

    ``paths`` may be one prepared cache (used as is, whatever its size), or dataset roots / CSV
    manifests, which are cached at ``size`` into ``cache_dir`` (reused when unchanged). Data without Train and Val splits (such as
    the shared sets, split ``All``) is split here: seeded, class-stratified, patient-grouped,
    duplicates kept on one side.

    A patient or a picture found in two splits is logged as a warning, or with ``strict`` raised.

    Raises:
        DataError: no data, a cache without Train/Val splits, or (``strict``) a leak between splits.
    """
    if len(paths) == 1 and is_cache(paths[0]):
        cache = PackedCache.open(paths[0])  # any size: the tasks resize batches to their model's size
        if not {"Train", "Val"} <= {s.split for s in cache.samples}:
            raise DataError(f"{paths[0]}: the cache has no Train and Val splits; prepare it with --make-split")
        check_leaks(cache, strict)
        return cache
    manifest = open_dataset(paths).manifest
    if not {"Train", "Val"} <= set(manifest.splits):
        log.warning("no Train/Val split in the data: making a patient-grouped split (seed %d)", split_seed)
        duplicates = cached_duplicates(manifest, cache_dir, workers=workers, progress=progress)
        manifest = make_split(manifest, val=val, test=test, seed=split_seed, duplicates=duplicates)
    prepare_cache(manifest, cache_dir, size=(size, size), workers=workers, progress=progress)
    cache = PackedCache.open(cache_dir)
    check_leaks(cache, strict)
    return cache


def open_eval_data(paths: Sequence[str | Path], size: int, scratch: str | Path, progress: bool = True) -> PackedCache:
    """One packed cache as is, or ``paths`` (roots, manifests) cached at ``size`` into the folder ``scratch``."""
    if len(paths) == 1 and is_cache(paths[0]):
        return PackedCache.open(paths[0])
    prepare_cache(open_dataset(paths).manifest, scratch, size=(size, size), progress=progress)
    return PackedCache.open(scratch)


def split_leaks(cache: PackedCache) -> dict[str, list]:
    """Patients, and pictures (exact or near duplicates), that sit in more than one split of ``cache``."""
    from .duplicates import duplicate_groups

    sides: dict[str, set[str]] = {}
    for s in cache.samples:
        if s.patient:
            sides.setdefault(s.patient, set()).add(s.split)
    groups = duplicate_groups(cache.hashes, np.asarray(cache.thumbs))
    return {
        "patients": sorted(p for p, sp in sides.items() if len(sp) > 1),
        "images": [[cache.samples[i].image for i in g] for g in groups if len({cache.samples[i].split for i in g}) > 1],
    }


def check_leaks(cache: PackedCache, strict: bool = False) -> dict[str, list]:
    """Warn loudly (or, with ``strict``, raise) when a patient or a picture is in two splits."""
    leaks = split_leaks(cache)
    if leaks["patients"] or leaks["images"]:
        msg = (f"{cache.path}: DATA LEAK between splits: {len(leaks['patients'])} patient(s) "
               f"(e.g. {', '.join(leaks['patients'][:3]) or '-'}) and {len(leaks['images'])} duplicated picture(s) "
               f"(e.g. {' == '.join(leaks['images'][0]) if leaks['images'] else '-'}) are in more than one split")  # fmt: skip
        if strict:
            raise DataError(msg + "; re-split with `lungcls data split`, or drop --strict")
        log.warning(msg)
    return leaks
