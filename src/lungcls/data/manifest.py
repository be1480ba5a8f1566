"""A dataset as a list of samples: image path, label, optional mask, split, patient, source.

Every data source lungcls reads (a COVID-QU-Ex tree, a CSV manifest, a folder with ``labels.csv``)
becomes a :class:`Manifest`. It can be written to and read from CSV, so a split made once can be
reused, and it has a stable hash that checkpoints record.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..atomic import write_text
from ..defaults import CLASS_NAMES  # the default class set, and the names the aliases below map to
from ..errors import DataError

#: labels as written in common CXR sets -> the COVID-QU-Ex class they mean (case-insensitive). Any
#: other label is a class of its own (e.g. "Tuberculosis"); ``data inspect`` prints the mapping used.
LABEL_ALIASES = {
    "covid-19": "COVID-19",
    "covid19": "COVID-19",
    "covid": "COVID-19",
    "covid_19": "COVID-19",
    "non-covid": "Non-COVID",
    "non_covid": "Non-COVID",
    "noncovid": "Non-COVID",
    "non covid": "Non-COVID",
    "pneumonia": "Non-COVID",
    "normal": "Normal",
    "no finding": "Normal",
    "no_finding": "Normal",
    "no_findings": "Normal",
}

# CSV column names accepted for each field, first match wins.
IMAGE_COLUMNS = ("image", "image_path", "path", "filename", "file")
LABEL_COLUMNS = ("label", "class")
MASK_COLUMNS = ("mask", "mask_path", "lung_mask")
#: the masks a manifest can carry in :attr:`Sample.mask`: lung fields (stage 1) or infection (COVID-QU-Ex's
#: Infection Segmentation part: a drawn region on COVID-19 images, an empty mask on the others); per kind, the
#: CSV columns read (first match wins), the column written, and the folder names beside ``images/``
MASK_KINDS = {
    "lungs": {"columns": MASK_COLUMNS, "write": "mask", "folders": ("lung masks", "lung_masks", "lung-masks", "masks")},
    "infection": {"columns": ("infection_mask",), "write": "infection_mask",
                  "folders": ("infection masks", "infection_masks", "infection-masks")},
}  # fmt: skip


def check_mask_kind(masks: str) -> str:
    """``masks`` if it is a kind of :data:`MASK_KINDS`.

    Raises:
        DataError: any other name.
    """
    if masks not in MASK_KINDS:
        raise DataError(f"unknown kind of mask {masks!r}; choose {' or '.join(MASK_KINDS)}")
    return masks


SPLIT_COLUMNS = ("split",)
PATIENT_COLUMNS = ("patient_id", "patientid", "patient")
SOURCE_COLUMNS = ("source_set",)


def parse_label(value: str) -> str:
    """The class a label means: a COVID-QU-Ex class for the spellings in :data:`LABEL_ALIASES`, else the
    label itself (stripped), as a class of its own.

    Raises:
        ValueError: an empty label.
    """
    label = str(value).strip()
    if not label:
        raise ValueError("empty class label")
    return LABEL_ALIASES.get(label.lower(), label)


def order_classes(names: Iterable[str]) -> list[str]:
    """A class set in lungcls's order: the COVID-QU-Ex classes first (in their order), then others sorted."""
    present = set(names)
    return [c for c in CLASS_NAMES if c in present] + sorted(present - set(CLASS_NAMES))


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    Attributes:
        image: absolute path of the image file.
        label: class name (see :func:`parse_label`).
        mask: absolute path of the mask (of the manifest's kind, :attr:`Manifest.masks`), or None.
        split: split name (``Train``, ``Val``, ``Test``, ``All`` ...).
        patient: patient id, or "" when unknown.
        source: name of the set the sample came from (for per-source reports).
    """

    image: str
    label: str
    mask: str | None = None
    split: str = "All"
    patient: str = ""
    source: str = ""
    original_label: str = ""  # the label as the data wrote it, where it was mapped to another name


@dataclass
class Manifest:
    """An ordered list of samples (see :class:`Sample`); ``masks``: what their masks show (:data:`MASK_KINDS`)."""

    samples: list[Sample]
    masks: str = "lungs"

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self):
        return iter(self.samples)

    def __add__(self, other: Manifest) -> Manifest:
        if self.samples and other.samples and self.masks != other.masks:
            raise DataError(f"cannot join a manifest of {self.masks} masks with one of {other.masks} masks")
        return Manifest(self.samples + other.samples, self.masks if self.samples else other.masks)

    @property
    def splits(self) -> list[str]:
        """Split names in order of first appearance."""
        return list(dict.fromkeys(s.split for s in self.samples))

    @property
    def class_names(self) -> list[str]:
        """The classes present, in :func:`order_classes` order."""
        return order_classes(s.label for s in self.samples)

    def check_labels(self) -> None:
        """Raise when one image file is listed with two different labels (a label conflict).

        Raises:
            DataError: names the file and the labels it was given.
        """
        seen: dict[str, str] = {}
        for s in self.samples:
            other = seen.setdefault(s.image, s.label)
            if other != s.label:
                raise DataError(
                    f"label conflict: {s.image} is listed as {other} and as {s.label}; keep one label per "
                    "image (a file listed twice with one label is only a duplicate)"
                )

    def label_mapping(self) -> dict[str, dict[str, int]]:
        """{label as written in the data: {class used: images}}, for the labels that were renamed."""
        out: dict[str, Counter] = {}
        for s in self.samples:
            if s.original_label and s.original_label != s.label:
                out.setdefault(s.original_label, Counter())[s.label] += 1
        return {k: dict(v) for k, v in sorted(out.items())}

    def with_splits(self, splits: list[str]) -> Manifest:
        """A copy with the split of each sample replaced."""
        if len(splits) != len(self.samples):
            raise ValueError(f"{len(splits)} splits for {len(self.samples)} samples")
        return Manifest([replace(s, split=sp) for s, sp in zip(self.samples, splits)], self.masks)

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {class name: count}}."""
        out: dict[str, dict[str, int]] = {}
        names = self.class_names
        for split in self.splits:
            c = Counter(s.label for s in self.samples if s.split == split)
            out[split] = {name: c.get(name, 0) for name in names}
        return out

    def digest(self) -> str:
        """SHA-1 of the manifest's rows (paths, labels, masks, splits, patients), stable across runs."""
        return hashlib.sha1(self.to_csv_text().encode()).hexdigest()

    def to_csv_text(self) -> str:
        """The manifest as CSV text with columns image, label, mask (``infection_mask`` for infection masks), split,
        patient_id, source_set."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["image", "label", MASK_KINDS[self.masks]["write"], "split", "patient_id", "source_set"])
        for s in self.samples:
            w.writerow([s.image, s.label, s.mask or "", s.split, s.patient, s.source])
        return buf.getvalue()

    def write_csv(self, path: str | Path) -> None:
        """Write the manifest as CSV (atomically); paths stay absolute."""
        write_text(path, self.to_csv_text())


@dataclass
class Discovery:
    """What discovery found besides the samples: masks without an image, skipped files, and notes on
    what was chosen where a root was ambiguous (several data sets, several parts)."""

    manifest: Manifest
    orphan_masks: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def extend(self, other: Discovery) -> None:
        """Add ``other``'s samples and findings to this one."""
        self.manifest = self.manifest + other.manifest
        self.orphan_masks += other.orphan_masks
        self.ignored_files += other.ignored_files
        self.notes += other.notes


def read_manifest_csv(path: str | Path, source: str | None = None, masks: str = "lungs") -> Manifest:
    """Read a CSV manifest.

    Columns (case-insensitive, first match wins): image path (``image``/``path``/``filename``),
    label (``label``/``class``), optional mask path (``mask``/``lung_mask`` for lungs, ``infection_mask`` with
    ``masks="infection"``), split (``split``, default ``All``),
    patient id (``patient_id``/``patientid``). Relative paths are taken from the CSV's folder, or,
    for images, from its ``images/`` subfolder.

    Raises:
        DataError: a required column is missing, a label is unknown or an image path does not exist.
    """
    path = Path(path)
    base = path.parent
    source = source if source is not None else base.name
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = {name.strip().lower(): name for name in (reader.fieldnames or [])}
        image_col = _pick(fields, IMAGE_COLUMNS)
        label_col = _pick(fields, LABEL_COLUMNS)
        if image_col is None or label_col is None:
            raise DataError(
                f"{path}: a manifest needs an image column ({'/'.join(IMAGE_COLUMNS)}) and a label column "
                f"({'/'.join(LABEL_COLUMNS)}); found {', '.join(fields) or 'no columns'}"
            )
        kind = MASK_KINDS[check_mask_kind(masks)]
        mask_col, split_col = _pick(fields, kind["columns"]), _pick(fields, SPLIT_COLUMNS)
        patient_col, source_col = _pick(fields, PATIENT_COLUMNS), _pick(fields, SOURCE_COLUMNS)
        samples = []
        for line, row in enumerate(reader, start=2):
            written = (row[label_col] or "").strip()
            try:
                label = parse_label(written)
            except ValueError as e:
                raise DataError(f"{path}, line {line}: {e}") from None
            image = _resolve(base, row[image_col], ("", "images"))
            if image is None:
                raise DataError(f"{path}, line {line}: image {row[image_col]!r} not found under {base}")
            mask_value = (row.get(mask_col) or "").strip() if mask_col else ""
            mask = _resolve(base, mask_value, ("", kind["folders"][0])) if mask_value else None
            samples.append(
                Sample(
                    image=str(image),
                    label=label,
                    mask=str(mask) if mask else (str(base / mask_value) if mask_value else None),
                    split=(row.get(split_col) or "All").strip() if split_col else "All",
                    patient=(row.get(patient_col) or "").strip() if patient_col else "",
                    source=(row.get(source_col) or "").strip() if source_col else source,
                    original_label=written if written != label else "",
                )
            )
    if not samples:
        raise DataError(f"{path}: manifest has no rows")
    return Manifest(samples, masks)


def _pick(fields: dict[str, str], candidates: tuple[str, ...]) -> str | None:
    for c in candidates:
        if c in fields:
            return fields[c]
    return None


def _resolve(base: Path, value: str, subdirs: tuple[str, ...]) -> Path | None:
    p = Path(value.strip())
    if p.is_absolute():
        return p if p.exists() else None
    for sub in subdirs:
        candidate = base / sub / p
        if candidate.exists():
            return candidate.resolve()
    return None
