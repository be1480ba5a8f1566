"""Seeded, class-stratified, patient-grouped train/val/test splits for data that has none."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .manifest import CLASS_NAMES, Manifest

SPLIT_NAMES = ("Train", "Val", "Test")


def group_ids(manifest: Manifest, duplicates: Sequence[Sequence[int]] | None = None) -> list[int]:
    """A group id per sample: samples share a group when they share a patient id or are duplicates.

    Args:
        duplicates: groups of sample indices holding the same picture (from
            :func:`lungcls.data.duplicates.duplicate_groups`); each group is kept together so a
            duplicated image can never sit on both sides of a split.
    """
    parent = list(range(len(manifest)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, s in enumerate(manifest):
        if s.patient:
            parent[find(i)] = find(first.setdefault(s.patient, i))
    for group in duplicates or []:
        for i in group[1:]:
            parent[find(i)] = find(group[0])
    return [find(i) for i in range(len(manifest))]


def make_split(
    manifest: Manifest,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    duplicates: Sequence[Sequence[int]] | None = None,
) -> Manifest:
    """Assign every sample to Train/Val/Test, keeping each patient (and duplicate image) on one side.

    Groups are placed largest first (ties in a seeded random order), each into the split whose
    per-class counts fall furthest below its target, so class proportions match across splits.

    Args:
        val, test: fractions of the data; the rest is Train.
        seed: the same seed and data give the same split.
        duplicates: groups of duplicated images to keep together, see :func:`group_ids`.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"val={val} and test={test} must be fractions in [0, 1) with val + test < 1")
    fractions = np.array([1 - val - test, val, test])
    groups = group_ids(manifest, duplicates)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    counts = {
        g: np.bincount([manifest.samples[i].label for i in idx], minlength=len(CLASS_NAMES))
        for g, idx in members.items()
    }
    total = sum(counts.values())
    target = fractions[:, None] * total[None, :]
    rng = np.random.default_rng(seed)
    order = list(members)
    rng.shuffle(order)
    order.sort(key=lambda g: -len(members[g]))  # stable: equal sizes keep the seeded order
    filled = np.zeros_like(target)
    assign = [""] * len(manifest)
    for g in order:
        c = counts[g]
        # how far each split's classes fall below target, weighted by this group's classes
        deficit = ((target - filled) * c[None, :]).sum(axis=1) / max(c.sum(), 1)
        deficit[fractions == 0] = -np.inf
        k = int(np.argmax(deficit))
        filled[k] += c
        for i in members[g]:
            assign[i] = SPLIT_NAMES[k]
    return manifest.with_splits(assign)
