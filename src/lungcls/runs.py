"""A training run's folder: starting one (never over an existing run by accident), what state it is in, what
it records about its data and environment, and the result object a stage's training returns."""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data.cache import PackedCache
from .engine.trainer import FitResult
from .errors import LungclsError
from .store import describe, read_json
from .version import __version__

log = logging.getLogger(__name__)

#: what a run folder holds (``--overwrite`` removes these and nothing else)
RUN_FILES = (
    "config.json",
    "model.safetensors",
    "last.json",
    "last.safetensors",
    "history.json",
    "history.csv",
    "images.json",
    "split.csv",
    "eval_*",
    "confusion_*",
    "reliability_*",
    "outlines_*",
    "tensorboard",
)


@dataclass
class TrainResult:
    """What training a stage produced.

    Attributes:
        folder: the run folder.
        fit: the engine's history, best epoch and metric.
        model: the trained model at its best epoch (a :class:`~lungcls.seg.segmenter.Segmenter` or
            :class:`~lungcls.cls.classifier.Classifier`), calibrated where the stage calibrates, ready to use.
        reports: evaluation reports by split name (``val``, ``test``), already written to ``folder``.
        split: what split was made for this run, if the data had none (else None).
    """

    folder: Path
    fit: FitResult
    model: Any
    reports: dict[str, Any] = field(default_factory=dict)
    split: str | None = None


def run_state(out: str | Path) -> str:
    """``"empty"`` (no folder, or nothing but a cache), ``"complete"`` (trained and evaluated), ``"interrupted"``
    (a resumable checkpoint), or ``"other"`` (files that are not a run)."""
    out = Path(out)
    files = [p for p in out.iterdir() if p.name != "cache"] if out.is_dir() else []
    if not files:
        return "empty"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        try:
            if read_json(out / "config.json").get("status") == "complete":
                return "complete"
        except LungclsError:
            return "other"
    return "interrupted" if (out / "last.json").is_file() and (out / "config.json").is_file() else "other"


def start_run(out: str | Path, kind: str, resume: bool, overwrite: bool) -> dict | None:
    """Check the run folder before training: never train over an existing run by accident.

    Returns:
        The saved ``config.json`` when resuming (the run continues with its own settings), else None.

    Raises:
        LungclsError: ``out`` holds files and neither ``resume`` nor ``overwrite`` was given; ``resume``
            without a resumable run; a run of the other stage.
    """
    out = Path(out)
    if resume and overwrite:
        raise LungclsError("give either --resume or --overwrite, not both")
    if out.exists() and not out.is_dir():
        raise LungclsError(f"--out {out} is a file, not a folder; choose a folder for the run")
    if resume:
        if not (out / "last.json").is_file() or not (out / "config.json").is_file():
            raise LungclsError(f"{out}: nothing to resume (expects an interrupted run folder; found {describe(out)})")
        saved = read_json(out / "config.json")
        if saved.get("kind") != kind:
            raise LungclsError(f"{out}: a {saved.get('kind')} run, not a {kind} run")
        return saved
    existing = [p for p in out.iterdir() if p.name != "cache"] if out.is_dir() else []
    if existing and not overwrite:
        shown = ", ".join(sorted(p.name for p in existing)[:5])
        raise LungclsError(
            f"{out} is not empty ({shown}); pass --resume to continue that run, --overwrite to "
            "replace it, or choose another --out"
        )
    if overwrite:
        for pattern in RUN_FILES:
            for p in out.glob(pattern):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    return None


def split_rows(cache: PackedCache, with_mask: bool = False) -> dict[str, np.ndarray]:
    """Cache rows per split name (Train, Val, Test)."""
    return {s: cache.indices(s, with_mask=with_mask) for s in ("Train", "Val", "Test")}


def images_record(cache: PackedCache, rows: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """Content hashes of the images of each split: what ``images.json`` records so later runs can check
    that a model never saw their test images."""
    return {s: sorted({cache.hashes[int(r)] for r in idx}) for s, idx in rows.items()}


def data_record(data: Sequence[str | Path], cache: PackedCache, rows: dict[str, np.ndarray]) -> dict:
    """What the run's ``config.json`` says about its data: inputs as given, sources, counts, the split's hash."""
    sources = sorted({cache.samples[int(r)].source for idx in rows.values() for r in idx})
    return {
        "inputs": [str(p) for p in data],
        "sources": sources,
        "manifest_digest": cache.digest(),
        "split_digest": _split_digest(cache),
        "image_size": list(cache.size),
        "counts": {s: _class_counts(cache, idx) for s, idx in rows.items()},
        **{f"{s.lower()}_images": int(len(idx)) for s, idx in rows.items()},
    }


def environment() -> dict:
    """Library versions, Python, platform, the GPU (if any) and the command line."""
    import segmentation_models_pytorch as smp
    import torch
    import torchvision

    return {
        "lungcls": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "segmentation_models_pytorch": smp.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "command": sys.argv,
    }


def _class_counts(cache: PackedCache, rows: np.ndarray) -> dict[str, int]:
    names = cache.class_names
    counts = np.bincount(cache.labels[rows], minlength=len(names)) if len(rows) else np.zeros(len(names), int)
    return {n: int(c) for n, c in zip(names, counts)}


def _split_digest(cache: PackedCache) -> str:
    h = hashlib.sha1()
    for s, digest in sorted(zip((x.split for x in cache.samples), cache.hashes)):
        h.update(f"{s}:{digest}\n".encode())
    return h.hexdigest()
