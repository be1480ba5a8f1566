"""Seeded, class-stratified, patient-grouped splits: a whole split for data that has none, or a Test
part carved out of an existing Train split (e.g. COVID-QU-Ex parts that ship only Train and Val)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from .manifest import Manifest

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


def _assign(manifest: Manifest, members: dict[int, list[int]], fractions: np.ndarray, seed: int) -> dict[int, int]:
    """Place groups (largest first, ties in a seeded order) into the part whose per-class counts fall
    furthest below its target share; returns {group: part index}."""
    names = manifest.class_names
    counts = {
        g: np.bincount([names.index(manifest.samples[i].label) for i in idx], minlength=len(names))
        for g, idx in members.items()
    }
    total = sum(counts.values()) if counts else np.zeros(len(names))
    target = fractions[:, None] * total[None, :]
    rng = np.random.default_rng(seed)
    order = list(members)
    rng.shuffle(order)
    order.sort(key=lambda g: -len(members[g]))  # stable: equal sizes keep the seeded order
    filled = np.zeros_like(target, dtype=np.float64)
    out = {}
    for g in order:
        c = counts[g]
        # how far each part's classes fall below target, weighted by this group's classes
        deficit = ((target - filled) * c[None, :]).sum(axis=1) / max(c.sum(), 1)
        deficit[fractions == 0] = -np.inf
        k = int(np.argmax(deficit))
        filled[k] += c
        out[g] = k
    return out


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
    members = _members(manifest, duplicates)
    placed = _assign(manifest, members, np.array([1 - val - test, val, test]), seed)
    assign = [""] * len(manifest)
    for g, idx in members.items():
        for i in idx:
            assign[i] = SPLIT_NAMES[placed[g]]
    return manifest.with_splits(assign)


def carve_split(
    manifest: Manifest,
    fraction: float = 0.15,
    seed: int = 0,
    duplicates: Sequence[Sequence[int]] | None = None,
    source: str = "Train",
    into: str = "Test",
    pinned: Collection[int] = (),
) -> Manifest:
    """Move a class-stratified, patient-grouped ``fraction`` of the ``source`` split into ``into``; other
    splits are kept as they are.

    A group (patient or duplicated picture) with any member outside ``source``, or with a ``pinned``
    member (an index that must stay where it is), stays, so the carved part shares no patient and no
    picture with any other split.

    Raises:
        ValueError: ``fraction`` is not in (0, 1), or ``source`` has no samples.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction={fraction} must be in (0, 1)")
    if not any(s.split == source for s in manifest):
        raise ValueError(f"no {source!r} samples to carve {into!r} from; splits found: {', '.join(manifest.splits)}")
    members = _members(manifest, duplicates)
    pinned = set(pinned)
    movable = {
        g: idx
        for g, idx in members.items()
        if all(manifest.samples[i].split == source and i not in pinned for i in idx)
    }
    # the target counts are a share of the whole source split, so pinned groups count as staying
    n_source = sum(1 for s in manifest if s.split == source)
    n_movable = sum(len(v) for v in movable.values())
    share = min(0.999, fraction * n_source / max(n_movable, 1))
    placed = _assign(manifest, movable, np.array([1 - share, share]), seed)
    assign = [s.split for s in manifest]
    for g, idx in movable.items():
        if placed[g] == 1:
            for i in idx:
                assign[i] = into
    return manifest.with_splits(assign)


def complete_split(
    manifest: Manifest,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    duplicates: Sequence[Sequence[int]] | None = None,
    resplit: bool = False,
    pinned: Collection[int] = (),
    carve: bool = True,
) -> tuple[Manifest, str]:
    """Give every sample of ``manifest`` a Train, Val or Test split, keeping the splits it already has.

    - Samples with a Train/Val/Test split keep it (unless ``resplit``).
    - Samples without one (e.g. the shared sets' ``All``) are split ``1 - val - test`` / ``val`` /
      ``test``, class-stratified; a patient or a duplicated picture that already has a split
      elsewhere follows it.
    - ``pinned`` samples (and their patients and duplicates) go to Train: e.g. the images a stage-1
      model was trained on, which the classifier must not be tested on.
    - With ``carve``, data that holds Train and Val but no Test at all (e.g. COVID-QU-Ex "Infection
      Segmentation Data" as shared here) has a ``test`` share of the data carved out of Train.

    Returns:
        (the split manifest, one sentence saying what was found and what was done).
    """
    if not 0 <= val < 1 or not 0 <= test < 1 or val + test >= 1:
        raise ValueError(f"val={val} and test={test} must be fractions in [0, 1) with val + test < 1")
    pinned = set(pinned)
    fixed = {i: s.split for i, s in enumerate(manifest) if s.split in SPLIT_NAMES and not resplit}
    members = _members(manifest, duplicates)
    assign = [fixed.get(i, "") for i in range(len(manifest))]
    free: dict[int, list[int]] = {}
    for g, idx in members.items():
        forced = "Train" if any(i in pinned for i in idx) else _most_common([fixed[i] for i in idx if i in fixed])
        if forced is None:
            free[g] = idx
            continue
        for i in idx:
            assign[i] = assign[i] or forced
    n_free = sum(len(v) for v in free.values())
    if free:
        placed = _assign(manifest, free, np.array([1 - val - test, val, test]), seed)
        for g, idx in free.items():
            for i in idx:
                assign[i] = SPLIT_NAMES[placed[g]]
    return _carve_and_say(
        manifest, manifest.with_splits(assign), n_free, len(fixed), val, test, seed, duplicates, pinned, carve, resplit
    )


def _carve_and_say(
    manifest: Manifest,
    out: Manifest,
    n_free: int,
    n_fixed: int,
    val: float,
    test: float,
    seed: int,
    duplicates: Sequence[Sequence[int]] | None,
    pinned: set[int],
    carve: bool,
    resplit: bool,
) -> tuple[Manifest, str]:
    """Carve Test out of Train where asked and there is none, and the sentence that says what was done."""
    counts = ", ".join(f"{s} {sum(1 for x in manifest if x.split == s)}" for s in manifest.splits)
    done = []
    if n_free:
        done.append(f"split {n_free} images without a split {1 - val - test:.0%}/{val:.0%}/{test:.0%}")
    if len(manifest) - n_free - n_fixed:
        done.append(f"sent {len(manifest) - n_free - n_fixed} more to the split of their patient or duplicate")
    if carve and test > 0 and "Test" not in out.splits and {"Train", "Val"} <= set(out.splits):
        n_train = sum(1 for s in out if s.split == "Train")
        out = carve_split(out, min(0.9, test * len(out) / max(n_train, 1)), seed, duplicates, pinned=pinned)
        done.append(f"carved Test ({sum(1 for s in out if s.split == 'Test')} images) out of Train")
    moved = [i for i in pinned if manifest.samples[i].split not in SPLIT_NAMES or resplit]
    if moved:
        done.append(f"kept {len(moved)} pinned images (and their patients and duplicates) in Train")
    if not done:
        return out, f"found {counts}: kept as it is"
    what = "; ".join(done)
    return out, (
        f"found {counts}: {what}; seed {seed}, grouped by patient and duplicate picture"
        + (", existing splits ignored (--resplit)" if resplit else "")
    )


def _members(manifest: Manifest, duplicates: Sequence[Sequence[int]] | None) -> dict[int, list[int]]:
    members: dict[int, list[int]] = {}
    for i, g in enumerate(group_ids(manifest, duplicates)):
        members.setdefault(g, []).append(i)
    return members


def _most_common(values: list[str]) -> str | None:
    return max(set(values), key=lambda v: (values.count(v), v == "Train")) if values else None
