"""Run a :class:`~lungcls.pipeline.Pipeline` over image files: batches, a CSV row per file, bad files skipped."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from .atomic import write_bytes, write_text
from .errors import ImageReadError
from .inputs import unique_stems
from .pipeline import Pipeline


def predict_files(
    paths: Sequence[Path], pipe: Pipeline, explain_dir: str | Path | None = None, progress: bool = True
) -> list[dict]:
    """Predict each file; unreadable files get a row with the error and the others go on.

    Args:
        explain_dir: also write a Grad-CAM overlay per image there and add ``in_lung_saliency``
            (the share of the Grad-CAM map inside the lungs) to each row.

    Returns:
        One dict per input: path, predicted, p_<class>..., lung_fraction, box, flags,
        in_lung_saliency (with explanations), error.
    """
    from .progress import progress_bar

    classes = pipe.class_names
    names = dict(zip(paths, unique_stems(paths)))  # output file names
    rows: list[dict] = []
    bar = progress_bar(total=len(paths), desc="predicting", unit="img", enabled=progress)
    step = pipe.classifier.batch_size
    for start in range(0, len(paths), step):
        chunk = list(paths[start : start + step])
        batch, slots = pipe.load_batch(chunk)  # each file decoded once; unreadable ones keep their error
        preds = pipe.predict(batch) if len(batch) else []
        shares: list[float | None] = [None] * len(preds)
        if explain_dir is not None and preds:
            readable = [path for path, slot in zip(chunk, slots) if not isinstance(slot, ImageReadError)]
            shares = _explain(pipe, batch, preds, [names[q] for q in readable], Path(explain_dir))
        for path, slot in zip(chunk, slots):
            if isinstance(slot, ImageReadError):
                rows.append({"path": str(path), "error": slot.reason})
                continue
            p, share = preds[slot], shares[slot]
            row = {"path": str(path), "predicted": p.label, **{f"p_{n}": round(p.probs[n], 5) for n in classes}}
            row["lung_fraction"] = "" if np.isnan(p.lung_fraction) else round(p.lung_fraction, 5)
            row["box"] = " ".join(map(str, p.box)) if p.box else ""
            row["flags"] = ";".join(p.flags)
            row["in_lung_saliency"] = "" if share is None or np.isnan(share) else round(float(share), 4)
            rows.append(row | {"error": ""})
        bar.update(len(chunk))
    bar.close()
    return rows


def _explain(pipe: Pipeline, batch: torch.Tensor, preds, names: Sequence[str], out: Path) -> list[float]:
    from .explain import heatmap_overlay

    out.mkdir(parents=True, exist_ok=True)
    results = pipe.explain(batch, targets=[pipe.class_names.index(p.label) for p in preds])
    for name, r in zip(names, results):
        ok, png = cv2.imencode(".png", heatmap_overlay(r["input"], r["cam"], r["lung"]))
        write_bytes(out / f"{name}.png", png.tobytes())
    return [r["in_lung_share"] for r in results]


def write_rows_csv(path: str | Path, rows: list[dict], class_names: Sequence[str]) -> None:
    """Write prediction rows as CSV (atomically), one column per field of :func:`predict_files`."""
    fields = [
        "path",
        "predicted",
        *[f"p_{n}" for n in class_names],
        "lung_fraction",
        "box",
        "flags",
        "in_lung_saliency",
        "error",
    ]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", restval="", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())
