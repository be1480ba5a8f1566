"""Expand what a user passes on the command line (files, folders, globs) into image paths."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .reader import readable_kind

#: folders of masks in the layouts lungcls knows (COVID-QU-Ex, the shared sets): skipped in a folder input when
#: they sit beside an ``images`` folder, so that ``lungcls segment DATASET`` segments the images, not their masks
MASK_FOLDERS = (
    "lung masks",
    "lung_masks",
    "lung-masks",
    "infection masks",
    "infection_masks",
    "infection-masks",
    "masks",
)


@dataclass
class InputPaths:
    """What a list of command-line inputs expanded to.

    Attributes:
        paths: image files to read, in a stable order without repeats.
        problems: inputs that matched nothing, as ``{"path", "reason"}`` (the command exits 1 for these).
        skipped: files found in folders that lungcls does not read, as ``{"path", "reason"}`` (listed, not errors).
        skipped_folders: mask folders of known layouts that were not searched (listed, not errors).
    """

    paths: list[Path] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    skipped_folders: list[str] = field(default_factory=list)


def expand_inputs(items: Sequence[str | Path]) -> InputPaths:
    """Files as given, folders searched recursively, globs expanded (``**`` allowed).

    In folders, a file is taken when its suffix is one the reader knows (PNG, JPEG, BMP, TIFF, WebP,
    DICOM) or when it carries the DICOM marker (extension-less PACS exports); any other file is
    listed in ``skipped`` with the reason. Mask folders of known layouts (:data:`MASK_FOLDERS` beside an
    ``images`` folder) are not searched and are listed in ``skipped_folders``. A file or folder named
    explicitly is always taken (the reader says what is wrong with a file, if anything).
    """
    out = InputPaths()
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = _from_folder(p, out)
            if not found:
                out.problems.append({"path": str(p), "reason": "folder holds no image files lungcls reads"})
            out.paths += found
        elif p.exists():
            out.paths.append(p)
        elif any(c in str(item) for c in "*?["):
            found = sorted(Path(f) for f in glob.glob(str(item), recursive=True) if Path(f).is_file())
            if not found:
                out.problems.append({"path": str(item), "reason": "pattern matched no files"})
            out.paths += found
        else:
            out.problems.append({"path": str(p), "reason": "no such file or folder"})
    out.paths = list(dict.fromkeys(out.paths))
    return out


def _from_folder(folder: Path, out: InputPaths) -> list[Path]:
    found = []
    masks = sorted(d for d in folder.rglob("*") if is_mask_folder(d))
    out.skipped_folders += [str(d) for d in masks]
    for f in sorted(folder.rglob("*")):
        if not f.is_file() or any(d in f.parents for d in masks):
            continue
        if readable_kind(f) is not None:
            found.append(f)
        elif f.name.startswith("."):
            out.skipped.append({"path": str(f), "reason": "hidden file"})
        else:
            what = f"suffix {f.suffix!r}" if f.suffix else "no suffix and no DICOM marker"
            out.skipped.append({"path": str(f), "reason": f"not an image file lungcls reads ({what})"})
    return found


def is_mask_folder(path: Path) -> bool:
    """True for a folder of masks in a known layout: a :data:`MASK_FOLDERS` name beside an ``images`` folder."""
    return path.is_dir() and path.name.lower() in MASK_FOLDERS and (path.parent / "images").is_dir()
