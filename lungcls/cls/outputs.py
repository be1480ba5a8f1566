"""``lungcls classify`` as a function: classify image files, write a CSV, keep going past bad files."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_text
from ..errors import ImageReadError
from ..io import read_image
from ..seg.segmenter import Segmenter
from .classifier import Classifier


def classify_files(
    paths: Sequence[Path], classifier: Classifier, segmenter: Segmenter | None = None, progress: bool = True
) -> list[dict]:
    """Classify each file; unreadable ones get a row with the error and the rest go on.

    Images are read at the classifier's working size; when its mode needs lung masks they come
    from ``segmenter`` (post-processed), and an image where no lung is found falls back to the raw
    image and is flagged.

    Returns:
        One dict per input: path, predicted, p_<class> for each class, lung_fraction, flags, error.
    """
    from tqdm.auto import tqdm

    if classifier.needs_masks and segmenter is None:
        raise ValueError(
            f"the classifier reads {classifier.cfg.mode!r} images and needs a segmentation model (--seg-model)"
        )
    size = classifier.cfg.working_size
    names = classifier.cfg.class_names
    rows: list[dict] = []
    bar = tqdm(total=len(paths), desc="classifying", unit="img", disable=not progress)
    for start in range(0, len(paths), classifier.batch_size):
        chunk = paths[start : start + classifier.batch_size]
        images, ok = [], []
        for path in chunk:
            try:
                images.append(read_image(path, (size, size)))
                ok.append(path)
            except ImageReadError as e:
                rows.append({"path": str(path), "error": e.reason})
        if images:
            batch = torch.from_numpy(np.stack(images))[:, None]
            masks, fractions, flags = None, [""] * len(ok), [[] for _ in ok]
            if segmenter is not None:
                results = segmenter.segment(batch)
                masks = torch.from_numpy(np.stack([r.mask for r in results]))[:, None]
                fractions = [round(r.lung_fraction, 5) for r in results]
                flags = [list(r.flags) for r in results]
            probs, empty = classifier.probabilities(batch, masks if classifier.needs_masks else None)
            for k, path in enumerate(ok):
                f = flags[k] + (["empty-mask-raw-used"] if empty[k] else [])
                row = {"path": str(path), "predicted": names[int(probs[k].argmax())]}
                row |= {f"p_{n}": round(float(probs[k, c]), 5) for c, n in enumerate(names)}
                rows.append(row | {"lung_fraction": fractions[k], "flags": ";".join(f), "error": ""})
        bar.update(len(chunk))
    bar.close()
    order = {str(p): k for k, p in enumerate(paths)}
    rows.sort(key=lambda r: order[r["path"]])
    return rows


def write_classify_csv(path: str | Path, rows: list[dict], class_names: Sequence[str]) -> None:
    """Write the rows of :func:`classify_files` as CSV (atomically)."""
    fields = ["path", "predicted", *[f"p_{n}" for n in class_names], "lung_fraction", "flags", "error"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", restval="")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())
