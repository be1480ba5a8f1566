"""Per-file results of ``lungcls segment``, ``classify`` and ``predict``: the rows, and every file written for them.

All three read files the same way (:func:`lungcls.reader.read_images`), segment through the one
stage-1 path (:meth:`lungcls.seg.segmenter.Segmenter.masks`) at the working size, and share their CSV
columns and units:

============== =====================================================================================
path, name     the input file, and the stem its output files are named after (``_2``... on clashes)
width, height  the image's own size in pixels
lung_fraction  share of the image that is lung (computed on the working-size mask)
box_x0..box_y1 the lungs' bounding box in the image's own pixels (x1, y1 exclusive), empty when no lung
flags          mask-quality and other flags, ``;``-separated
mask_dice_     the Dice the lung mask is expected to have (:func:`lungcls.seg.segmenter.expected_dice`)
estimate
error          why the file could not be read (empty when it could)
model_warnings the warnings of the models' cards (synthetic, smoke, near chance, out of scope), ``;``-separated
============== =====================================================================================

Every writer here follows :mod:`lungcls.output_policy`: nothing existing is replaced unless ``force``, and
a folder's outputs appear together when they are complete.

``segment --infection`` adds the ``infection_*`` columns of :class:`lungcls.seg.infection.InfectionResult` (infected
share of both lungs and of each, extent score 0-8, grade, COVID-19 from infection), ``infection/`` masks, and
overlays with the lungs outlined in green and the infection filled in red.

``classify`` and ``predict`` add ``predicted`` and ``p_<class>`` (calibrated probabilities);
``predict --explain`` adds ``in_lung_saliency``. Masks written by ``segment`` are the working-size
masks brought to each image's own size (bilinear on {0, 1}, then > 0.5); crops use the classifier's
crop rule (:func:`lungcls.masking.lung_boxes`), with the loaded classifier's margin (``segment``, which
has no classifier: :data:`lungcls.defaults.CROP_MARGIN`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from .atomic import write_bytes, write_text
from .defaults import CROP_MARGIN, WORKING_SIZE
from .errors import ImageReadError
from .masking import lung_boxes
from .model_card import announce, model_warnings
from .output_policy import check_file, staged_folder
from .progress import progress_bar
from .reader import Size, read_images
from .seg.segmenter import Segmenter, describe

COMMON_FIELDS = [
    "path",
    "name",
    "width",
    "height",
    "lung_fraction",
    "box_x0",
    "box_y0",
    "box_x1",
    "box_y1",
    "flags",
    "mask_dice_estimate",
    "error",
    "model_warnings",
]
#: what ``segment`` and ``predict`` write into their output folders (see :func:`lungcls.output_policy.staged_folder`)
SEGMENT_OUTPUTS = ("masks", "infection", "overlays", "crops", "segment.csv")
PREDICT_OUTPUTS = ("explain", "decisions.md", "predictions.csv")


def unique_names(paths: Sequence[Path]) -> list[str]:
    """Output names for ``paths``: each file's stem, with ``_2``, ``_3``... added where a name is taken."""
    taken: set[str] = set()
    names = []
    for p in paths:
        name, k = p.stem, 1
        while name in taken:
            k += 1
            name = f"{p.stem}_{k}"
        taken.add(name)
        names.append(name)
    return names


def segment_files(
    paths: Sequence[Path],
    segmenter: Segmenter,
    out: str | Path,
    size: int = WORKING_SIZE,
    progress: bool = True,
    masks_only: bool = False,
    force: bool = False,
    infection: Segmenter | None = None,
) -> list[dict]:
    """Segment each file and write ``masks/``, ``overlays/``, ``crops/`` PNGs and ``segment.csv`` under ``out``
    (with an ``infection`` segmenter also ``infection/`` masks and the infection columns).

    Unreadable files get a CSV row with the error and no outputs; the others go on.

    Args:
        size: the working size the masks are made at (the same as ``Pipeline``'s).
        masks_only: write ``masks/`` and ``segment.csv`` only (no overlays, no crops).
        force: replace the outputs of an earlier run in ``out`` (see :mod:`lungcls.output_policy`).

    Returns:
        One dict per input (the CSV rows).

    Raises:
        OutputExistsError: ``out`` is a file, or holds files and ``force`` was not given.
    """
    with staged_folder(out, force, SEGMENT_OUTPUTS) as staging:
        return _segment_into(paths, segmenter, staging, size, progress, masks_only, infection)


def _segment_into(
    paths: Sequence[Path],
    segmenter: Segmenter,
    out: Path,
    size: int,
    progress: bool,
    masks_only: bool,
    infection: Segmenter | None = None,
) -> list[dict]:
    from .seg.infection import INFECTION_FIELDS, measure

    warnings = "; ".join(announce(model_warnings(segmenter) + (model_warnings(infection) if infection else [])))
    names = dict(zip(paths, unique_names(paths)))
    rows: list[dict] = []
    bar = progress_bar(total=len(paths), desc="segmenting", unit="img", enabled=progress)
    for chunk in _chunks(paths, segmenter.batch_size):
        read = read_images(chunk, (size, size), keep_native=True)
        batch = segmenter.masks(torch.from_numpy(read.images)[:, None]) if len(read.images) else None
        results = describe(batch) if batch is not None else []
        crops = lung_boxes(batch.masks, CROP_MARGIN)[0].tolist() if batch is not None else []
        infected = []
        if infection is not None and batch is not None:
            found = infection.masks(torch.from_numpy(read.images)[:, None].to(infection.device)).masks
            infected = measure(found.to(batch.masks.device), batch.masks, batch.flags, detector_threshold(infection))
        for path, slot in zip(chunk, read.slots):
            if isinstance(slot, ImageReadError):
                rows.append({"path": str(path), "name": names[path], "error": slot.reason})
                continue
            r, inf = results[slot], (infected[slot] if infected else None)
            write_segmentation(
                out, names[path], read.natives[slot], r.mask, crops[slot] if r.box else None, size, masks_only,
                inf.mask if inf else None,
            )  # fmt: skip
            rows.append(common_row(path, names[path], read.sizes[slot], r.lung_fraction, r.box, r.flags, size,
                                   r.dice_estimate))  # fmt: skip
            if inf is not None:
                rows[-1].update(inf.row(), flags=";".join(r.flags + inf.flags))
        bar.update(len(chunk))
    bar.close()
    for row in rows:
        row["model_warnings"] = warnings
    fields = COMMON_FIELDS[:-2] + list(INFECTION_FIELDS) + COMMON_FIELDS[-2:] if infection else COMMON_FIELDS
    write_csv(out / "segment.csv", rows, fields)
    return rows


def detector_threshold(infection: Segmenter) -> float | None:
    """The COVID-19-from-infection threshold on the infected share of the lungs that an infection segmenter carries
    (chosen on Val when it was packaged; None when it has none)."""
    return (infection.info.get("detector") or {}).get("threshold")


def write_segmentation(
    out: Path,
    name: str,
    native: np.ndarray,
    mask: np.ndarray,
    crop,
    size: int,
    masks_only: bool = False,
    infection: np.ndarray | None = None,
) -> None:
    """``masks/``, ``overlays/`` and ``crops/`` PNGs of one image under ``out``, at the image's own size (and
    ``infection/`` when there is an infection mask).

    Args:
        native: uint8 (H, W) the image as read; mask: uint8 (S, S) at the working size; crop: the crop
            box at the working size (None when there is no lung: no crop is written).
        masks_only: the masks only.
        infection: uint8 (S, S) infection mask at the working size, or None.
    """
    mask = mask_at(mask, native.shape)
    write_bytes(out / "masks" / f"{name}.png", png(mask * 255))
    infected = mask_at(infection, native.shape) if infection is not None else None
    if infected is not None:
        write_bytes(out / "infection" / f"{name}.png", png(infected * 255))
    if masks_only:
        return
    write_bytes(out / "overlays" / f"{name}.png", png(overlay(native, mask, infection=infected)))
    if crop is not None:
        x0, y0, x1, y1 = box_at(crop, size, native.shape)
        write_bytes(out / "crops" / f"{name}.png", png(native[y0:y1, x0:x1]))


def classify_to_csv(
    paths: Sequence[Path], pipe, out: str | Path, force: bool = False, progress: bool = True
) -> list[dict]:
    """``lungcls classify``: predict each file and write the rows to the CSV file ``out`` (refused when it exists,
    unless ``force``: then replaced atomically). Returns the rows."""
    out = check_file(out, force)
    rows = predict_files(paths, pipe, progress=progress)
    write_csv(out, rows, prediction_fields(pipe.class_names))
    return rows


def predict_to_folder(
    paths: Sequence[Path],
    pipe,
    out: str | Path,
    force: bool = False,
    explain: bool = False,
    cam_method: str = "gradcam",
    cam_target: str | None = None,
    progress: bool = True,
) -> list[dict]:
    """``lungcls predict``: ``predictions.csv`` (and with ``explain`` an ``explain/`` picture per image) in the
    folder ``out`` (see :mod:`lungcls.output_policy`). Returns the rows."""
    with staged_folder(out, force, PREDICT_OUTPUTS) as staging:
        rows = predict_files(
            paths,
            pipe,
            explain_dir=staging / "explain" if explain else None,
            progress=progress,
            cam_method=cam_method,
            cam_target=cam_target,
        )
        write_text(staging / "decisions.md", decisions_markdown(rows))
        write_csv(staging / "predictions.csv", rows, prediction_fields(pipe.class_names, explain))
    return rows


def decisions_markdown(rows: list[dict], examples: int = 5) -> str:
    """What happened to each image, counted (answered, flagged, raw-fallback, abstained, refused, unreadable),
    with examples of everything but plain answers: what ``lungcls report`` shows of a ``predict`` folder."""
    from collections import Counter

    kinds = ["answered", "flagged", "raw-fallback", "abstained", "refused", "unreadable"]
    decided = Counter("unreadable" if r.get("error") else r.get("decision", "answered") for r in rows)
    lines = ["# Decisions", "", f"{len(rows)} images.", "", "| decision | images |", "|---|---|"]
    lines += [f"| {k} | {decided.get(k, 0)} |" for k in kinds]
    for k in kinds[1:]:
        picked = [r for r in rows if ("unreadable" if r.get("error") else r.get("decision")) == k][:examples]
        if picked:
            lines += ["", f"**{k}** (e.g.):", ""]
            lines += [f"- `{r['name']}`: {r.get('error') or r.get('decision_reason') or '-'}" for r in picked]
    return "\n".join(lines) + "\n"


def predict_files(
    paths: Sequence[Path],
    pipe,
    explain_dir: str | Path | None = None,
    progress: bool = True,
    cam_method: str = "gradcam",
    cam_target: str | None = None,
    segment_dir: str | Path | None = None,
    names: dict[Path, str] | None = None,
) -> list[dict]:
    """Predict each file with a :class:`~lungcls.pipeline.Pipeline`; unreadable files get a row with the error.

    Args:
        explain_dir: also write a class-activation picture per image there (the image at its own size,
            at least 512 px, with the map, the lung outline, the class, its probability and the in-lung
            share on it) and add ``in_lung_saliency`` to each row.
        cam_method: see :data:`lungcls.explain.CAM_METHODS`; cam_target: the class to explain (default:
            the predicted one).
        segment_dir: also write the masks, overlays and crops that ``lungcls segment`` writes there (from
            the same masks: every file is read and segmented once).
        names: each file's output name, when ``paths`` is a part of a larger input (default: :func:`unique_names`).

    Returns:
        One dict per input (the CSV rows of :func:`prediction_fields`).
    """

    if cam_target is not None and cam_target not in pipe.class_names:
        raise ValueError(f"--cam-target {cam_target!r} is not a class of this model ({', '.join(pipe.class_names)})")
    names = names or dict(zip(paths, unique_names(paths)))
    explain = (Path(explain_dir), cam_method, cam_target) if explain_dir is not None else None
    rows: list[dict] = []
    bar = progress_bar(total=len(paths), desc="predicting", unit="img", enabled=progress)
    for chunk in _chunks(paths, pipe.classifier.batch_size):
        rows += _predict_chunk(pipe, chunk, names, explain, Path(segment_dir) if segment_dir is not None else None)
        bar.update(len(chunk))
    bar.close()
    return rows


def _predict_chunk(pipe, chunk: list[Path], names: dict, explain: tuple | None, segment_dir: Path | None) -> list[dict]:
    """The rows of one batch of files (each read and segmented once), and the pictures asked for."""
    s = pipe.size
    read = read_images(chunk, (s, s), keep_native=explain is not None or segment_dir is not None)
    batch = torch.from_numpy(read.images)[:, None]
    segmented = pipe.segmenter.masks(batch, keep_probs=pipe.gate is not None) if pipe.segmenter is not None and len(batch) else None
    preds = pipe.predict_batch(batch, segmented=segmented, colours=read.colours, sizes=read.sizes) if len(batch) else []
    readable = [(path, slot) for path, slot in zip(chunk, read.slots) if not isinstance(slot, ImageReadError)]
    if segment_dir is not None and segmented is not None:
        crops = lung_boxes(segmented.masks, pipe.classifier.cfg.margin)[0].tolist()
        for path, slot in readable:
            p = preds[slot]
            write_segmentation(segment_dir, names[path], read.natives[slot], p.mask, crops[slot] if p.box else None, s)
    shares: list[float] = [math.nan] * len(preds)
    if explain is not None and preds:
        masks = segmented.masks if segmented is not None else None
        shares = _explain(pipe, batch, masks, preds, read.natives, [names[p] for p, _ in readable], *explain)
    rows = []
    for path, slot in zip(chunk, read.slots):
        if isinstance(slot, ImageReadError):
            rows.append({"path": str(path), "name": names[path], "error": slot.reason})
            continue
        rows.append(prediction_row(pipe, path, names[path], read.sizes[slot], preds[slot], shares[slot]))
    return rows


def prediction_row(pipe, path, name: str, native: Size, p, saliency: float = math.nan) -> dict:
    """The CSV row (:func:`prediction_fields`) of one :class:`~lungcls.pipeline.Prediction` of ``pipe``."""
    row = common_row(path, name, native, p.lung_fraction, p.box, p.flags, pipe.size, p.dice_estimate)
    row |= {"predicted": p.label, **{f"p_{n}": round(p.probs[n], 5) for n in pipe.class_names if n in p.probs}}
    row |= {"decision": p.decision, "decision_reason": p.reason, "confidence": round(p.confidence, 5),
            "gate_score": "" if p.gate is None else round(p.gate.score, 4)}  # fmt: skip
    row["in_lung_saliency"] = "" if math.isnan(saliency) else round(float(saliency), 4)
    return row | {"model_warnings": "; ".join(pipe.warnings)}


def prediction_fields(class_names: Sequence[str], explain: bool = False) -> list[str]:
    """The columns of ``classify.csv`` / ``predictions.csv``."""
    head, tail = COMMON_FIELDS[:4], COMMON_FIELDS[4:]
    return (
        head
        + ["predicted", "decision", "decision_reason", "confidence", *[f"p_{n}" for n in class_names], "gate_score"]
        + tail[:-2]
        + (["in_lung_saliency"] if explain else [])
        + tail[-2:]
    )


def common_row(
    path: Path,
    name: str,
    native: Size,
    fraction: float,
    box,
    flags: Sequence[str],
    size: int,
    dice_estimate: float = math.nan,
) -> dict:
    """The columns every per-file CSV shares (see the module doc), box brought to the image's own pixels."""
    x0, y0, x1, y1 = box_at(box, size, native) if box is not None else ("",) * 4
    return {
        "path": str(path),
        "name": name,
        "width": native[1],
        "height": native[0],
        "lung_fraction": "" if fraction is None or math.isnan(fraction) else round(fraction, 5),
        "box_x0": x0,
        "box_y0": y0,
        "box_x1": x1,
        "box_y1": y1,
        "flags": ";".join(flags),
        "mask_dice_estimate": "" if math.isnan(dice_estimate) else round(dice_estimate, 4),
        "error": "",
    }


def box_at(box: Sequence[float], size: int, native: Size) -> tuple[int, int, int, int]:
    """A box (x0, y0, x1, y1) at the working size -> the image's own pixels, grown outwards to whole pixels."""
    h, w = native
    x0, y0, x1, y1 = (float(v) for v in box)
    return (
        max(0, math.floor(x0 * w / size)),
        max(0, math.floor(y0 * h / size)),
        min(w, math.ceil(x1 * w / size)),
        min(h, math.ceil(y1 * h / size)),
    )


def mask_at(mask: np.ndarray, native: Size) -> np.ndarray:
    """A {0, 1} mask at the working size brought to the image's own size: bilinear, then > 0.5 (smooth outlines)."""
    if mask.shape == tuple(native):
        return mask.astype(np.uint8)
    up = cv2.resize(mask.astype(np.float32), (native[1], native[0]), interpolation=cv2.INTER_LINEAR)
    return (up > 0.5).astype(np.uint8)


def overlay(
    image: np.ndarray, mask: np.ndarray, max_side: int = 1024, infection: np.ndarray | None = None
) -> np.ndarray:
    """BGR uint8 picture of ``image`` (H, W) with the outline of ``mask`` drawn in green, and ``infection`` (same
    size, {0, 1}) filled in translucent red with a red outline."""
    scale = min(1.0, max_side / max(image.shape))
    if scale < 1:
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        infection = cv2.resize(infection, size, interpolation=cv2.INTER_NEAREST) if infection is not None else None
    picture = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    width = max(1, round(max(image.shape) / 256))
    if infection is not None and infection.any():
        red = picture.copy()
        red[infection != 0] = (0, 0, 255)
        picture = cv2.addWeighted(red, 0.35, picture, 0.65, 0)
        contours, _ = cv2.findContours(infection.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(picture, contours, -1, (0, 0, 255), width)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(picture, contours, -1, (0, 220, 0), width)
    return picture


def png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 array."""
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def write_csv(path: str | Path, rows: list[dict], fields: Sequence[str]) -> None:
    """Write ``rows`` as CSV with ``fields`` as columns (missing values empty), atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n", restval="", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def _chunks(paths: Sequence[Path], n: int):
    for start in range(0, len(paths), max(1, n)):
        yield list(paths[start : start + n])


def _explain(pipe, batch, masks, preds, natives, names, out: Path, method: str, target: str | None) -> list[float]:
    from .explain import explain, explanation_picture

    classes = pipe.class_names
    targets = [classes.index(target or p.label) for p in preds]
    results = explain(pipe.classifier, batch, masks, targets, method)
    for name, native, p, r, t in zip(names, natives, preds, results, targets):
        share = "" if math.isnan(r["in_lung_share"]) else f", {r['in_lung_share']:.0%} of the map in the lungs"
        caption = (
            f"{p.label} {p.probs[p.label]:.2f}" + (f" | map of {classes[t]}" if classes[t] != p.label else "") + share
        )
        write_bytes(out / f"{name}.png", png(explanation_picture(native, r, pipe.size, p.mask, caption)))
    return [r["in_lung_share"] for r in results]
