"""Turn whatever the user points training at (roots, manifests, a cache) into a split packed cache: the one
split-and-cache path, holding a source out, and the leak checks between splits."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..defaults import WORKING_SIZE
from ..errors import DataError
from .cache import PackedCache, PrepareResult, fingerprints, is_cache, prepare_cache
from .duplicates import duplicate_groups
from .manifest import Manifest
from .sources import open_dataset
from .split import SPLIT_NAMES, complete_split, group_ids

log = logging.getLogger(__name__)


@dataclass
class SplitCache:
    """What :func:`split_and_cache` made: the cache, a sentence on the split made (None: none), what ``prepare`` did."""

    cache: PackedCache
    split: str | None
    prepared: PrepareResult


def split_and_cache(
    manifest: Manifest,
    cache_dir: str | Path,
    size: int = WORKING_SIZE,
    *,
    split: str = "missing",
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    pinned: Collection[str] = (),
    hold_out: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    also: Sequence[Sequence[int]] = (),
) -> SplitCache:
    """The one path from a manifest to a split packed cache (training, ``prepare --make-split``, the study).

    Args:
        split: ``"missing"``: split only when the data lacks a Train/Val split (training); ``"complete"``:
            :func:`~lungcls.data.split.complete_split` as ``lungcls data split`` does (existing splits kept, Test
            carved out of Train where there is none); ``"none"``: cache as it is.
        val, test, seed: the shares and seed of a split made here.
        pinned: content hashes of images that must go to Train (with their patients and duplicates).
        hold_out: a source to hold out as Test instead (:func:`hold_out_split`).
        also: more groups of manifest indices that are one picture (e.g. crop-aligned copies,
            :func:`lungcls.data.duplicates.crop_aligned_pairs`), kept on one side like the duplicates found here.
    """
    if split not in ("missing", "complete", "none"):
        raise ValueError(f"split must be 'missing', 'complete' or 'none', not {split!r}")
    unsplit = any(s.split not in SPLIT_NAMES for s in manifest) or not {"Train", "Val"} <= set(manifest.splits)
    made = None
    if hold_out is not None or split == "complete" or (split == "missing" and unsplit):
        hashes, thumbs = fingerprints(manifest, cache_dir, workers=workers, progress=progress)
        duplicates = duplicate_groups(hashes, thumbs) + [list(g) for g in also]
        keep = {i for i, h in enumerate(hashes) if h and h in set(pinned)}
        if hold_out is not None:
            manifest, made = hold_out_split(manifest, hold_out, val, seed, duplicates, keep)
        else:
            manifest, made = complete_split(
                manifest, val=val, test=test, seed=seed, duplicates=duplicates, pinned=keep, carve=split == "complete"
            )
    prepared = prepare_cache(manifest, cache_dir, size=(size, size), workers=workers, progress=progress)
    return SplitCache(PackedCache.open(cache_dir), made, prepared)


def open_training_data(
    paths: Sequence[str | Path],
    cache_dir: str | Path,
    size: int = WORKING_SIZE,
    split_seed: int = 0,
    progress: bool = True,
    strict: bool = False,
    pinned: Collection[str] = (),
    hold_out: str | None = None,
    masks: str = "lungs",
) -> tuple[PackedCache, str | None]:
    """A packed cache with Train and Val splits for ``paths``, with their masks of kind ``masks``.

    ``paths`` may be one prepared cache (used as is, whatever its size), or dataset roots / CSV
    manifests, cached at ``size`` into ``cache_dir`` (reused when unchanged). Images without a
    Train/Val/Test split (such as the shared sets' ``All``) are split here (seeded, class-stratified,
    patient-grouped, duplicates kept on one side, 70/10/20); images whose content hash is in ``pinned`` go
    to Train. A split made once with ``lungcls data split`` and passed as a CSV is the way to give several
    runs the same split. ``hold_out`` names a source set to hold out as Test (see :func:`hold_out_split`).

    A patient or a picture found in two splits is logged as a warning, or with ``strict`` raised.

    Returns:
        (the cache, a sentence saying what split was made, or None when the data's own split was used).

    Raises:
        DataError: no data, a cache without Train/Val splits or with masks of another kind, or (``strict``) a leak
            between splits.
    """
    given = PackedCache.open(paths[0]) if len(paths) == 1 and is_cache(paths[0]) else None
    if given is not None and given.mask_kind != masks:
        raise DataError(
            f"{paths[0]}: the cache holds {given.mask_kind} masks, not {masks} masks; prepare one with "
            f"`lungcls prepare ... --masks {masks}`"
        )
    if given is not None and hold_out is None:  # any size: the tasks resize batches to their model's size
        if not {"Train", "Val"} <= {s.split for s in given.samples}:
            raise DataError(f"{paths[0]}: the cache has no Train and Val splits; prepare it with --make-split")
        cache, made = given, None
    else:
        manifest = given.manifest if given is not None else open_dataset(paths, masks=masks).manifest
        done = split_and_cache(
            manifest, cache_dir, size, seed=split_seed, pinned=pinned, hold_out=hold_out, progress=progress
        )
        cache, made = done.cache, done.split
    if made is not None:
        log.warning("%s", made)
    check_leaks(cache, strict)
    return cache, made


def hold_out_split(
    manifest, source: str, val: float, seed: int, duplicates: list[list[int]], pinned: Collection[int] = ()
) -> tuple[object, str]:
    """Test = every image of ``source``; the other sources split into Train/Val (``val`` of them to Val);
    other images sharing a patient or a picture with ``source`` are ``Excluded``.

    Raises:
        DataError: ``source`` is not a source of ``manifest``.
    """

    sources = sorted({s.source for s in manifest})
    if source not in sources:
        raise DataError(f"no source named {source!r} to hold out; sources: {', '.join(sources)}")
    groups = group_ids(manifest, duplicates)
    held = {g for g, s in zip(groups, manifest) if s.source == source}
    others = [i for i, (g, s) in enumerate(zip(groups, manifest)) if s.source != source and g not in held]
    excluded = sum(1 for g, s in zip(groups, manifest) if s.source != source and g in held)
    old = {i: n for n, i in enumerate(others)}
    sub = Manifest([manifest.samples[i] for i in others])
    sub_dups = [[old[i] for i in grp if i in old] for grp in duplicates]
    sub, _ = complete_split(
        sub,
        val=val,
        test=0.0,
        seed=seed,
        duplicates=[d for d in sub_dups if len(d) > 1],
        resplit=True,
        pinned={old[i] for i in pinned if i in old},
        carve=False,
    )
    assign = ["Excluded"] * len(manifest)
    for i, s in enumerate(manifest):
        if s.source == source:
            assign[i] = "Test"
    for n, i in enumerate(others):
        assign[i] = sub.samples[n].split
    out = manifest.with_splits(assign)
    counts = {k: sum(1 for x in assign if x == k) for k in ("Train", "Val", "Test", "Excluded")}
    return out, (
        f"held out {source!r} as Test ({counts['Test']} images); the other sources split into Train "
        f"{counts['Train']} / Val {counts['Val']} (seed {seed}); {excluded} of their images share a patient "
        "or picture with the held-out source and are left out"
    )


def open_eval_data(paths: Sequence[str | Path], size: int, scratch: str | Path, progress: bool = True) -> PackedCache:
    """One packed cache as is, or ``paths`` (roots, manifests) cached at ``size`` into the folder ``scratch``."""
    if len(paths) == 1 and is_cache(paths[0]):
        return PackedCache.open(paths[0])
    prepare_cache(open_dataset(paths).manifest, scratch, size=(size, size), progress=progress)
    return PackedCache.open(scratch)


def split_leaks(cache: PackedCache) -> dict[str, list]:
    """Patients, and pictures (exact or near duplicates), that sit in more than one split of ``cache``."""
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
        msg = (
            f"{cache.path}: DATA LEAK between splits: {len(leaks['patients'])} patient(s) "
            f"(e.g. {', '.join(leaks['patients'][:3]) or '-'}) and {len(leaks['images'])} duplicated picture(s) "
            f"(e.g. {' == '.join(leaks['images'][0]) if leaks['images'] else '-'}) are in more than one split"
        )
        if strict:
            raise DataError(msg + "; re-split with `lungcls data split`, or drop --strict")
        log.warning(msg)
    return leaks


def seen_by(cache: PackedCache, rows: np.ndarray, seen: Collection[str]) -> list[int]:
    """The cache rows among ``rows`` whose content hash is in ``seen``."""
    seen = set(seen)
    return [int(r) for r in rows if cache.hashes[int(r)] in seen]
