"""``lungcls segment`` as a function: segment image files and write masks, overlays, crops and a CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from ..atomic import write_bytes, write_text
from ..errors import ImageReadError
from ..inputs import unique_stems
from ..io import decode_image, resize_image
from .postprocess import postprocess
from .segmenter import Segmenter, SegmentResult, describe

CSV_FIELDS = [
    "path",
    "name",
    "width",
    "height",
    "lung_fraction",
    "bbox_x0",
    "bbox_y0",
    "bbox_x1",
    "bbox_y1",
    "flags",
    "error",
]


def overlay(image: np.ndarray, mask: np.ndarray, max_side: int = 1024) -> np.ndarray:
    """BGR uint8 picture of ``image`` (H, W) with the outline of ``mask`` drawn in green."""
    scale = min(1.0, max_side / max(image.shape))
    if scale < 1:
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    picture = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(picture, contours, -1, (0, 220, 0), max(1, round(max(image.shape) / 256)))
    return picture


def crop_box(bbox: tuple[int, int, int, int], shape: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """Grow ``bbox`` (x0, y0, x1, y1) by ``margin`` of its size on each side, clipped to ``shape`` (H, W)."""
    x0, y0, x1, y1 = bbox
    mx, my = round((x1 - x0) * margin), round((y1 - y0) * margin)
    return max(0, x0 - mx), max(0, y0 - my), min(shape[1], x1 + mx), min(shape[0], y1 + my)


def segment_files(
    paths: Sequence[Path],
    segmenter: Segmenter,
    out: str | Path,
    margin: float = 0.05,
    progress: bool = True,
) -> list[dict]:
    """Segment each file and write ``masks/``, ``overlays/``, ``crops/`` PNGs and ``segment.csv`` under ``out``.

    Unreadable files get a CSV row with the error and no outputs; the others go on. Outputs are
    written at each image's native size; names are the input stems (``_2``, ``_3``... on clashes).

    Returns:
        One dict per input (the CSV rows).
    """
    from ..progress import progress_bar

    out = Path(out)
    for sub in ("masks", "overlays", "crops"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    names = unique_stems(paths)
    rows: list[dict] = []
    s = segmenter.cfg.image_size
    bar = progress_bar(total=len(paths), desc="segmenting", unit="img", enabled=progress)
    for start in range(0, len(paths), segmenter.batch_size):
        chunk = list(zip(paths[start : start + segmenter.batch_size], names[start : start + segmenter.batch_size]))
        natives, ok = [], []
        for path, name in chunk:
            try:
                natives.append(decode_image(path).pixels)
                ok.append((path, name))
            except ImageReadError as e:
                rows.append({"path": str(path), "name": name, "error": e.reason})
        if natives:
            batch = torch.from_numpy(np.stack([resize_image(n, (s, s)) for n in natives]))[:, None]
            probs = segmenter.probabilities(batch).float().cpu().numpy()[:, 0]
            for (path, name), native, prob in zip(ok, natives, probs):
                result = _at_native(prob, native.shape, segmenter)
                _write(out, name, native, result, margin)
                rows.append(_row(path, name, native.shape, result))
        bar.update(len(chunk))
    bar.close()
    order = {str(p): k for k, p in enumerate(paths)}
    rows.sort(key=lambda r: order[r["path"]])
    _write_csv(out / "segment.csv", rows)
    return rows


def _at_native(prob: np.ndarray, shape: tuple[int, int], segmenter: Segmenter) -> SegmentResult:
    if prob.shape != shape:
        prob = cv2.resize(prob, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return describe(*postprocess(prob, segmenter.post))


def _write(out: Path, name: str, native: np.ndarray, r: SegmentResult, margin: float) -> None:
    write_bytes(out / "masks" / f"{name}.png", _png(r.mask * 255))
    write_bytes(out / "overlays" / f"{name}.png", _png(overlay(native, r.mask)))
    if r.bbox is not None:
        x0, y0, x1, y1 = crop_box(r.bbox, native.shape, margin)
        write_bytes(out / "crops" / f"{name}.png", _png(native[y0:y1, x0:x1]))


def _row(path: Path, name: str, shape: tuple[int, int], r: SegmentResult) -> dict:
    box = r.bbox or ("", "", "", "")
    return {"path": str(path), "name": name, "width": shape[1], "height": shape[0],
            "lung_fraction": round(r.lung_fraction, 5), "bbox_x0": box[0], "bbox_y0": box[1], "bbox_x1": box[2],
            "bbox_y1": box[3], "flags": ";".join(r.flags), "error": ""}  # fmt: skip


def _png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n", restval="")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())
