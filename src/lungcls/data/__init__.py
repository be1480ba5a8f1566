"""Datasets: discovery, manifests, splits, the packed cache and device batches."""

from .cache import PackedCache, is_cache, prepare_cache
from .covidqu import discover
from .manifest import CLASS_NAMES, Manifest, Sample, read_manifest_csv
from .sources import open_dataset
from .split import make_split

__all__ = [
    "CLASS_NAMES",
    "Manifest",
    "PackedCache",
    "Sample",
    "discover",
    "is_cache",
    "make_split",
    "open_dataset",
    "prepare_cache",
    "read_manifest_csv",
]
