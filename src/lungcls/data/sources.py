"""Open whatever the user points at (COVID-QU-Ex roots, set folders, CSV manifests) as one dataset."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError
from .cache import is_cache
from .covidqu import discover
from .manifest import Discovery, Manifest, read_manifest_csv


def open_dataset(paths: Sequence[str | Path], part: str | None = None, masks: str = "lungs") -> Discovery:
    """Discover each path and join them, in order.

    Args:
        paths: COVID-QU-Ex-style roots (any level), folders with a ``labels.csv`` manifest, or
            CSV manifest files. Each sample records the set it came from (the folder's name).
        part: the COVID-QU-Ex part to use when a root holds several.
        masks: the masks to read, ``lungs`` or ``infection`` (see :data:`~lungcls.data.manifest.MASK_KINDS`).

    Raises:
        DataError: a path does not exist or holds no dataset, or one image is given two labels.
    """
    if not paths:
        raise DataError("no dataset given")
    joined = Discovery(Manifest([], masks))
    for p in paths:
        p = Path(p)
        if p.is_file() and p.suffix.lower() == ".csv":
            found = Discovery(read_manifest_csv(p, masks=masks))
        elif p.is_dir():
            if is_cache(p):
                raise DataError(f"{p}: this is a packed cache; pass the dataset it was made from")
            found = discover(p, part=part, masks=masks)
        else:
            raise DataError(
                f"{p}: no such file or folder" if not p.exists() else f"{p}: expected a folder or a .csv manifest"
            )
        joined.extend(found)
    joined.manifest.check_labels()
    return joined
