"""The packed uint8 cache: decode a dataset once, then read it by memory-map, with no per-epoch decoding.

Layout of a cache folder::

    CACHE/manifest.json          format, working size, counts, per-sample rows, failed files
    CACHE/data-<id>/images.u8    N x H x W uint8, raw C order
    CACHE/data-<id>/masks.u8     N x H x W uint8 in {0, 1} (zeros where a sample has no mask)
    CACHE/data-<id>/thumbs.u8    N x 16 x 16 uint8 thumbnails of the native images (duplicate search)

``manifest.json`` is written last, atomically, and names its data folder, so an interrupted
``prepare`` leaves either the previous cache or nothing that loads. Rerunning ``prepare`` on
unchanged files does no work; files whose size and modification time are unchanged are copied
from the old cache rather than decoded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import write_json
from ..defaults import WORKING_SIZE
from ..errors import DataError
from ..reader import Size
from ..version import __version__
from .duplicates import THUMB, duplicate_groups
from .manifest import Manifest, Sample
from .scan import scan

CACHE_FORMAT = "lungcls-cache/2"  # 2: labels are class names, any class set


@dataclass
class PrepareResult:
    """What :func:`prepare_cache` did."""

    path: Path
    count: int
    decoded: int
    reused: int
    up_to_date: bool
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


def prepare_cache(
    manifest: Manifest,
    out: str | Path,
    size: Size = (WORKING_SIZE, WORKING_SIZE),
    workers: int | None = None,
    progress: bool = True,
) -> PrepareResult:
    """Decode every image and mask of ``manifest`` into a packed cache at ``out``.

    Streams: images are written as they are decoded, so memory does not grow with the dataset.
    Unreadable images are left out and listed in ``failed`` (and in ``manifest.json``).

    Args:
        size: working size (height, width).
        workers: decoding processes (default: all CPU cores).
    """
    t0 = time.perf_counter()
    out = Path(out)
    size = (int(size[0]), int(size[1]))
    stats = [_stat(s) for s in manifest]
    fingerprint = _fingerprint(manifest, stats, size)
    old = _read_manifest(out)
    if old is not None and old.get("fingerprint") == fingerprint and (out / old["data_dir"]).is_dir():
        return PrepareResult(
            out, old["count"], 0, 0, True, old.get("failed", []), time.perf_counter() - t0, old.get("counts", {})
        )

    reuse = _reusable(out, old, manifest, stats, size)
    todo = [i for i in range(len(manifest)) if i not in reuse]
    data_dir = out / f"data-{uuid.uuid4().hex[:12]}"
    data_dir.mkdir(parents=True)
    try:
        decoded = scan(
            manifest.samples, todo, size, keep_pixels=True, workers=workers, progress=progress, desc="prepare"
        )
        rows, failed = _write_arrays(data_dir, manifest, stats, reuse, decoded, size)
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    meta = {
        "format": CACHE_FORMAT,
        "library_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data_dir": data_dir.name,
        "size": list(size),
        "count": len(rows),
        "class_names": Manifest([_sample(r) for r in rows]).class_names,
        "fingerprint": fingerprint,
        "manifest_digest": manifest.digest(),
        "counts": Manifest([_sample(r) for r in rows]).counts(),
        "with_masks": sum(r["has_mask"] for r in rows),
        "masks": manifest.masks,
        "failed": failed,
        "samples": rows,
    }
    write_json(out / "manifest.json", meta)
    for stale in out.glob("data-*"):
        if stale.name != data_dir.name:
            shutil.rmtree(stale, ignore_errors=True)
    return PrepareResult(out, len(rows), len(todo), len(reuse), False, failed, time.perf_counter() - t0, meta["counts"])


@dataclass
class PackedCache:
    """A prepared cache, memory-mapped.

    Attributes:
        images: uint8 (N, H, W) memory-map.
        masks: uint8 (N, H, W) memory-map in {0, 1}.
        thumbs: uint8 (N, 16, 16) thumbnails of the native images.
        has_mask: bool (N,); labels: int64 (N,); split_names: split of each row.
        samples: one :class:`~lungcls.data.manifest.Sample` per row; hashes: content hash per row.
        meta: the whole ``manifest.json``.
    """

    path: Path
    images: np.ndarray
    masks: np.ndarray
    thumbs: np.ndarray
    has_mask: np.ndarray
    labels: np.ndarray
    samples: list[Sample]
    hashes: list[str]
    meta: dict

    @classmethod
    def open(cls, path: str | Path) -> PackedCache:
        """Open the cache at ``path`` by memory-map (nothing is read until used).

        Raises:
            DataError: not a complete lungcls cache.
        """
        path = Path(path)
        meta = _read_manifest(path)
        if meta is None:
            raise DataError(f"{path}: not a lungcls cache (no valid manifest.json); run `lungcls prepare` to make one")
        n, (h, w) = meta["count"], meta["size"]
        data_dir = path / meta["data_dir"]
        arrays = {}
        for name, shape in (("images", (n, h, w)), ("masks", (n, h, w)), ("thumbs", (n, THUMB, THUMB))):
            f = data_dir / f"{name}.u8"
            expected = int(np.prod(shape))
            if not f.is_file() or f.stat().st_size != expected:
                raise DataError(f"{f}: missing or wrong size (expected {expected} bytes); run `lungcls prepare` again")
            arrays[name] = np.memmap(f, np.uint8, "r", shape=shape) if n else np.zeros(shape, np.uint8)
        rows = meta["samples"]
        return cls(
            path=path,
            **arrays,
            has_mask=np.array([r["has_mask"] for r in rows], dtype=bool),
            labels=np.array([meta["class_names"].index(r["label"]) for r in rows], dtype=np.int64),
            samples=[_sample(r) for r in rows],
            hashes=[r["hash"] for r in rows],
            meta=meta,
        )

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def class_names(self) -> list[str]:
        """The classes of the cached images; :attr:`labels` index into it."""
        return list(self.meta["class_names"])

    def labels_for(self, class_names: list[str]) -> np.ndarray:
        """The labels as indices into ``class_names`` (a classifier's class set).

        Raises:
            DataError: a cached class is not in ``class_names``.
        """
        missing = sorted(set(self.class_names) - set(class_names))
        if missing:
            raise DataError(f"{self.path}: classes {', '.join(missing)} are not among {', '.join(class_names)}")
        lookup = np.array([class_names.index(c) for c in self.class_names], dtype=np.int64)
        return lookup[self.labels] if len(self.labels) else self.labels

    @property
    def size(self) -> Size:
        """Working size (height, width)."""
        return tuple(self.meta["size"])  # type: ignore[return-value]

    @property
    def manifest(self) -> Manifest:
        """The cached samples as a manifest."""
        return Manifest(list(self.samples), self.mask_kind)

    @property
    def mask_kind(self) -> str:
        """What the cached masks show: ``lungs`` or ``infection`` (see :data:`~lungcls.data.manifest.MASK_KINDS`)."""
        return self.meta.get("masks", "lungs")

    def indices(self, split: str | None = None, with_mask: bool = False) -> np.ndarray:
        """Row indices of one split (all rows when None), optionally only rows that have a mask."""
        keep = np.ones(len(self), dtype=bool)
        if split is not None:
            keep &= np.array([s.split == split for s in self.samples], dtype=bool)
        if with_mask:
            keep &= self.has_mask
        return np.flatnonzero(keep)

    def digest(self) -> str:
        """The data manifest hash that checkpoints record."""
        return self.meta["manifest_digest"]


def is_cache(path: str | Path) -> bool:
    """True when ``path`` is a folder holding a lungcls cache manifest."""
    return _read_manifest(Path(path)) is not None


def _read_manifest(path: Path) -> dict | None:
    f = path / "manifest.json"
    if not f.is_file():
        return None
    try:
        meta = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == CACHE_FORMAT else None


def _write_arrays(
    data_dir: Path, manifest: Manifest, stats: list, reuse: dict, decoded, size: Size
) -> tuple[list, list]:
    """Stream the images, masks and thumbnails of ``manifest`` (reused or freshly ``decoded``, in order) into
    ``data_dir``; returns (the rows of the samples written, the files that failed)."""
    rows, failed = [], []
    zeros = np.zeros(size, np.uint8)
    with (
        open(data_dir / "images.u8", "wb") as fi,
        open(data_dir / "masks.u8", "wb") as fm,
        open(data_dir / "thumbs.u8", "wb") as ft,
    ):
        for i, s in enumerate(manifest):
            if i in reuse:
                image, mask, thumb, row = reuse[i]
            else:
                r = next(decoded)
                if r.error is not None:
                    failed.append({"path": s.image, "reason": r.error})
                    continue
                image, mask, thumb = r.image, r.mask, r.thumb
                row = _row(s, stats[i], r.content_hash, mask is not None, r.mask_status)
            fi.write(np.ascontiguousarray(image).tobytes())
            fm.write(np.ascontiguousarray(mask if mask is not None else zeros).tobytes())
            ft.write(np.ascontiguousarray(thumb).tobytes())
            rows.append(row)
        for f in (fi, fm, ft):
            f.flush()
            os.fsync(f.fileno())
    return rows, failed


def _stat(s: Sample) -> list[int]:
    out = []
    for p in (s.image, s.mask):
        try:
            st = os.stat(p) if p else None
        except OSError:
            st = None
        out += [st.st_size, st.st_mtime_ns] if st else [-1, -1]
    return out


def _fingerprint(manifest: Manifest, stats: list[list[int]], size: Size) -> str:
    h = hashlib.sha1(f"{CACHE_FORMAT}{size}".encode())
    h.update(manifest.to_csv_text().encode())
    h.update(json.dumps(stats).encode())
    return h.hexdigest()


def _row(s: Sample, stat: list[int], content_hash: str, has_mask: bool, mask_status: str) -> dict:
    row = asdict(s)
    row["label"] = s.label
    row.update(hash=content_hash, has_mask=has_mask, mask_status=mask_status, stat=stat)
    return row


def _sample(row: dict) -> Sample:
    return Sample(
        image=row["image"],
        label=row["label"],
        mask=row["mask"],
        split=row["split"],
        patient=row["patient"],
        source=row["source"],
        original_label=row.get("original_label", ""),
    )


def _reusable(out: Path, old: dict | None, manifest: Manifest, stats: list[list[int]], size: Size) -> dict[int, tuple]:
    """Samples whose files are unchanged since the old cache: {index: (image, mask or None, row)}."""
    if old is None or list(old["size"]) != list(size):
        return {}
    try:
        cache = PackedCache.open(out)
    except DataError:
        return {}
    by_key = {(r["image"], r["mask"], tuple(r["stat"])): k for k, r in enumerate(old["samples"])}
    reuse = {}
    for i, (s, st) in enumerate(zip(manifest, stats)):
        k = by_key.get((s.image, s.mask, tuple(st)))
        if k is not None:
            r = old["samples"][k]
            mask = np.asarray(cache.masks[k]) if r["has_mask"] else None
            reuse[i] = (
                np.asarray(cache.images[k]),
                mask,
                np.asarray(cache.thumbs[k]),
                _row(s, st, r["hash"], r["has_mask"], r["mask_status"]),
            )
    return reuse


def fingerprints(
    manifest: Manifest, cache_path: str | Path | None = None, workers: int | None = None, progress: bool = True
) -> tuple[list[str], np.ndarray]:
    """Content hash and 16 x 16 thumbnail of every image of ``manifest`` ("" and zeros when unreadable),
    read from an existing cache where the files are unchanged, decoded otherwise."""
    known: dict[tuple, tuple[str, np.ndarray]] = {}
    if cache_path is not None and is_cache(cache_path):
        cache = PackedCache.open(cache_path)
        for k, r in enumerate(cache.meta["samples"]):
            known[(r["image"], tuple(r["stat"][:2]))] = (r["hash"], np.asarray(cache.thumbs[k]))
    hashes = [""] * len(manifest)
    thumbs = np.zeros((len(manifest), THUMB, THUMB), np.uint8)
    todo = []
    for i, (s, st) in enumerate(zip(manifest, (_stat(s) for s in manifest))):
        hit = known.get((s.image, tuple(st[:2])))
        if hit is None:
            todo.append(i)
        else:
            hashes[i], thumbs[i] = hit
    for r in scan(manifest.samples, todo, keep_pixels=False, workers=workers, progress=progress, desc="hashing"):
        if r.error is None:
            hashes[r.index], thumbs[r.index] = r.content_hash, r.thumb
    return hashes, thumbs


def cached_duplicates(
    manifest: Manifest, cache_path: str | Path | None = None, workers: int | None = None, progress: bool = True
) -> list[list[int]]:
    """Groups of duplicated images in ``manifest`` (see :mod:`lungcls.data.duplicates`), from :func:`fingerprints`."""
    return duplicate_groups(*fingerprints(manifest, cache_path, workers, progress))
