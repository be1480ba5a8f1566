"""Find COVID-QU-Ex (and anything laid out like it) on disk and turn it into a :class:`Manifest`.

COVID-QU-Ex unpacks as::

    COVID-QU-Ex Dataset/
      Lung Segmentation Data/Lung Segmentation Data/{Train,Val,Test}/{COVID-19,Non-COVID,Normal}/
          images/<name>.png
          lung masks/<name>.png
      Infection Segmentation Data/Infection Segmentation Data/...   (same, plus infection masks)

Discovery walks down from any root (the top folder, a part folder, a split folder) and takes
every ``images`` folder that sits in a class folder; the folder above the class is the split
(any name: ``Train``, ``All``...). Masks pair with images by file name. When both parts are
present, the ``Lung Segmentation Data`` part is used (the other holds a subset of the same images).

A ``labels.csv`` beside the root (as in ``../shared/data``) adds patient ids when it has a
``patient_id`` or ``patientid`` column.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import DataError
from ..io import is_image_file
from .manifest import PATIENT_COLUMNS, Manifest, Sample, parse_label

MASK_FOLDERS = ("lung masks", "lung_masks", "lung-masks", "masks")
PREFERRED_PART = "lung segmentation data"


@dataclass
class Discovery:
    """What discovery found besides the samples: masks without an image, and skipped files."""

    manifest: Manifest
    orphan_masks: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)


def discover(root: str | Path, part: str | None = None) -> Discovery:
    """Discover a COVID-QU-Ex-style tree below ``root``.

    Args:
        root: the top folder, a part folder, a split folder, or a folder holding ``labels.csv``
            with image/label columns (a flat set such as ``ieee8023-originals``).
        part: the part folder to use when several exist (default: ``Lung Segmentation Data``).

    Raises:
        DataError: nothing that looks like a dataset was found.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    groups = _image_folders(root)
    if not groups:
        labels = root / "labels.csv"
        if labels.is_file():  # flat set: the CSV is the manifest
            from .manifest import read_manifest_csv

            return Discovery(read_manifest_csv(labels, source=root.name))
        raise DataError(
            f"{root}: no dataset found: expected <split>/<class>/images/*.png below it "
            "(COVID-QU-Ex layout) or a labels.csv manifest"
        )
    groups = _choose_part(groups, part, root)
    result = Discovery(Manifest([]))
    for images_dir, split, label in groups:
        _collect(images_dir, split, label, root.name, result)
    patients = _sidecar_patients(root)
    if patients:
        result.manifest = Manifest([_with_patient(s, patients) for s in result.manifest])
    return result


def _image_folders(root: Path) -> list[tuple[Path, str, int]]:
    """(images folder, split name, label) for every ``<split>/<class>/images`` below root."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames.sort()
        d = Path(dirpath)
        if d.name.lower() != "images":
            continue
        try:
            label = parse_label(d.parent.name)
        except ValueError:
            continue
        split_dir = d.parent.parent
        split = split_dir.name if split_dir != root.parent else "All"
        found.append((d, split, label))
    return found


def _choose_part(groups: list[tuple[Path, str, int]], part: str | None, root: Path) -> list[tuple[Path, str, int]]:
    """Keep one part (the folder above the split) when the tree holds several."""
    parts = sorted({g[0].parent.parent.parent for g in groups})
    if len(parts) <= 1:
        return groups
    wanted = (part or PREFERRED_PART).lower()
    chosen = [p for p in parts if p.name.lower() == wanted]
    if not chosen:
        names = sorted({p.name for p in parts})
        if part is not None:
            raise DataError(f"{root}: no part named {part!r}; found {', '.join(names)}")
        return groups  # several splits of one set laid side by side: keep them all
    return [g for g in groups if g[0].parent.parent.parent == chosen[0]]


def _collect(images_dir: Path, split: str, label: int, source: str, result: Discovery) -> None:
    mask_dir = next((images_dir.parent / m for m in MASK_FOLDERS if (images_dir.parent / m).is_dir()), None)
    masks = {}
    if mask_dir is not None:
        masks = {p.stem: p for p in sorted(mask_dir.iterdir()) if is_image_file(p)}
    used = set()
    for p in sorted(images_dir.iterdir()):
        if not p.is_file():
            continue
        if not is_image_file(p):
            result.ignored_files.append(str(p))
            continue
        mask = masks.get(p.stem)
        if mask is not None:
            used.add(p.stem)
        result.manifest.samples.append(
            Sample(image=str(p), label=label, mask=str(mask) if mask else None, split=split, source=source)
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
