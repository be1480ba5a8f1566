"""Find COVID-QU-Ex (and anything laid out like it) on disk and turn it into a :class:`Manifest`.

COVID-QU-Ex unpacks as::

    COVID-QU-Ex Dataset/
      Lung Segmentation Data/Lung Segmentation Data/{Train,Val,Test}/{COVID-19,Non-COVID,Normal}/
          images/<name>.png
          lung masks/<name>.png
      Infection Segmentation Data/Infection Segmentation Data/...   (same, plus infection masks)

Discovery walks down from any root (the top folder, a part folder, a split folder) and takes
every ``images`` folder that sits in a class folder (a COVID-QU-Ex class name, or one of several
sibling folders that each hold ``images``); the folder above the class is the split (any name:
``Train``, ``All``...). Masks pair with images by file name. When both parts are present, the
``Lung Segmentation Data`` part is used (the other holds a subset of the same images) and the
discovery's ``notes`` say so.

A ``labels.csv`` beside the root (as in ``../shared/data``) adds patient ids when it has a
``patient_id`` or ``patientid`` column. A folder *of* data sets (no ``labels.csv`` of its own,
sub-folders that have one, such as ``../shared/data``) yields every set, each as its own source
named after its folder.
"""

from __future__ import annotations

import csv
import os
from dataclasses import replace
from pathlib import Path

from ..errors import DataError
from ..reader import readable_kind
from .manifest import (
    LABEL_ALIASES,
    MASK_KINDS,
    PATIENT_COLUMNS,
    Discovery,
    Manifest,
    Sample,
    check_mask_kind,
    parse_label,
)

MASK_FOLDERS = MASK_KINDS["lungs"]["folders"]
PREFERRED_PART = {"lungs": "lung segmentation data", "infection": "infection segmentation data"}


def discover(root: str | Path, part: str | None = None, masks: str = "lungs") -> Discovery:
    """Discover a COVID-QU-Ex-style tree below ``root``.

    Args:
        root: the top folder, a part folder, a split folder, or a folder holding ``labels.csv``
            with image/label columns (a flat set such as ``ieee8023-originals``).
        part: the part folder to use when several exist (default: ``Lung Segmentation Data``, or ``Infection
            Segmentation Data`` for infection masks).
        masks: the masks to read (``lungs``, or ``infection``: the ``infection masks/`` folders).

    Raises:
        DataError: nothing that looks like a dataset was found.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    sets = [c for c in sorted(root.iterdir()) if c.is_dir() and (c / "labels.csv").is_file()]
    if sets and not (root / "labels.csv").is_file():
        return _discover_sets(root, part, check_mask_kind(masks))
    return _discover_set(root, part, check_mask_kind(masks))


def _discover_sets(root: Path, part: str | None, masks: str) -> Discovery:
    """A folder of data sets: each sub-folder that holds a data set becomes a source of its own."""
    joined, used, skipped = Discovery(Manifest([], masks)), [], []
    for child in sorted(c for c in root.iterdir() if c.is_dir()):
        try:
            found = _discover_set(child, part, masks)
        except DataError:
            skipped.append(child.name)
            continue
        joined.extend(found)
        used.append(f"{child.name} ({len(found.manifest)})")
    if not used:
        raise DataError(f"{root}: none of its sub-folders holds a data set")
    note = f"{root}: a folder of {len(used)} data sets, each its own source: {', '.join(used)}"
    joined.notes.insert(0, note + (f"; no data set in {', '.join(skipped)}" if skipped else ""))
    return joined


def _discover_set(root: Path, part: str | None, masks: str) -> Discovery:
    groups = _image_folders(root)
    if not groups:
        labels = root / "labels.csv"
        if labels.is_file():  # flat set: the CSV is the manifest
            from .manifest import read_manifest_csv

            return Discovery(read_manifest_csv(labels, source=root.name, masks=masks))
        raise DataError(
            f"{root}: no dataset found: expected <split>/<class>/images/*.png below it "
            "(COVID-QU-Ex layout) or a labels.csv manifest"
        )
    groups, note = _choose_part(groups, part, root, PREFERRED_PART[masks])
    result = Discovery(Manifest([], masks), notes=[note] if note else [])
    for images_dir, split, label in groups:
        _collect(images_dir, split, label, root.name, result, MASK_KINDS[masks]["folders"])
    patients = _sidecar_patients(root)
    if patients:
        result.manifest = Manifest([_with_patient(s, patients) for s in result.manifest], masks)
    return result


def _image_folders(root: Path) -> list[tuple[Path, str, str]]:
    """(images folder, split name, label) for every ``<split>/<class>/images`` below root.

    The folder above ``images`` is a class when its name is a COVID-QU-Ex class (any spelling of
    :data:`LABEL_ALIASES`) or when a sibling folder holds ``images`` too (several classes side by side).
    """
    candidates = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames.sort()
        d = Path(dirpath)
        if d.name.lower() == "images" and d.parent != root.parent:
            candidates.append(d)
    parents: dict[Path, int] = {}
    for d in candidates:
        parents[d.parent.parent] = parents.get(d.parent.parent, 0) + 1
    found = []
    for d in candidates:
        cls = d.parent
        if cls.name.strip().lower() not in LABEL_ALIASES and (cls == root or parents[cls.parent] < 2):
            continue
        split_dir = cls.parent
        split = split_dir.name if split_dir != root.parent and cls != root else "All"
        found.append((d, split, parse_label(cls.name)))
    return found


def _choose_part(
    groups: list[tuple[Path, str, str]], part: str | None, root: Path, preferred: str
) -> tuple[list[tuple[Path, str, str]], str | None]:
    """Keep one part (the folder above the split) when the tree holds several COVID-QU-Ex parts; say so."""
    parts = sorted({g[0].parent.parent.parent for g in groups})
    if len(parts) <= 1:
        return groups, None
    wanted = (part or preferred).lower()
    chosen = [p for p in parts if p.name.lower() == wanted]
    names = sorted({p.name for p in parts})
    if not chosen:
        if part is not None:
            raise DataError(f"{root}: no part named {part!r}; found {', '.join(names)}")
        return groups, None  # several splits of one set laid side by side: keep them all
    kept = [g for g in groups if g[0].parent.parent.parent == chosen[0]]
    if part is not None:
        return kept, None
    return kept, (
        f"{root}: found the parts {', '.join(repr(n) for n in names)}; used {chosen[0].name!r} (the other "
        "holds a subset of the same images); pass --part to choose another"
    )


def _collect(images_dir: Path, split: str, label: str, source: str, result: Discovery, folders=MASK_FOLDERS) -> None:
    mask_dir = next((images_dir.parent / m for m in folders if (images_dir.parent / m).is_dir()), None)
    masks = {}
    if mask_dir is not None:
        masks = {p.stem: p for p in sorted(mask_dir.iterdir()) if readable_kind(p)}
    used = set()
    for p in sorted(images_dir.iterdir()):
        if not p.is_file():
            continue
        if not readable_kind(p):
            result.ignored_files.append(str(p))
            continue
        mask = masks.get(p.stem)
        if mask is not None:
            used.add(p.stem)
        result.manifest.samples.append(
            Sample(
                image=str(p),
                label=label,
                mask=str(mask) if mask else None,
                split=split,
                source=source,
                original_label=images_dir.parent.name if images_dir.parent.name != label else "",
            )
        )
    result.orphan_masks.extend(str(m) for stem, m in masks.items() if stem not in used)


def _sidecar_patients(root: Path) -> dict[str, str]:
    """{image file name or relative path: patient id} from a ``labels.csv`` at the root."""
    path = root / "labels.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = {n.strip().lower(): n for n in (reader.fieldnames or [])}
        pcol = next((fields[c] for c in PATIENT_COLUMNS if c in fields), None)
        fcol = next((fields[c] for c in ("filename", "image", "path") if c in fields), None)
        if pcol is None or fcol is None:
            return {}
        out = {}
        for row in reader:
            pid = (row.get(pcol) or "").strip()
            name = (row.get(fcol) or "").strip()
            if pid and name:
                out[name] = pid
                out[Path(name).name] = pid
        return out


def _with_patient(s: Sample, patients: dict[str, str]) -> Sample:
    pid = patients.get(Path(s.image).name, "")
    return replace(s, patient=pid) if pid else s
