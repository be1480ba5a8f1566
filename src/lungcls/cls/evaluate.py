"""Evaluate a classifier on cached images: predictions over a loader, the report (reference table, intervals,
calibration, per source and per image), and the checks that no model saw the images it is scored on.
The report's one writer is :func:`lungcls.cls.report.write_classification_report`."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import torch

from ..data.cache import PackedCache
from ..data.loader import CacheLoader
from ..data.training_data import seen_by
from ..engine.device import autocast
from ..errors import DataError
from ..model_card import announce, pipeline_warnings
from ..seg.segmenter import Segmenter
from .calibration import calibrated, calibration_summary
from .classifier import Classifier
from .report import ClassificationReport, classification_report

log = logging.getLogger(__name__)


def evaluate_classifier(
    classifier: Classifier,
    cache: PackedCache,
    split: str | None = None,
    segmenter: Segmenter | str | None = None,
    strict: bool = False,
    progress: bool = True,
) -> ClassificationReport:
    """Evaluate a loaded classifier on one split of ``cache`` (every image when ``split`` is None).

    Masks come from the dataset (``gt``) or from ``segmenter`` (default: the stage-1 model the
    classifier was trained with). Warns (``strict``: raises) when the segmenter or the classifier
    itself was trained or validated on any of the evaluated images.
    """
    rows = cache.indices(split)
    if classifier.cfg.mask_source == "gt":
        rows = rows[cache.has_mask[rows]]
    masks, seg = None, None
    if classifier.cfg.mask_source == "predicted":
        seg = (
            segmenter
            if isinstance(segmenter, Segmenter)
            else Segmenter.load(segmenter or classifier.segmenter_spec(), device=classifier.device)
        )
        check_segmenter_leak(seg, cache, rows, strict)
        masks = seg.cache_masks(cache, progress)
    warnings = announce(pipeline_warnings(seg, classifier))
    check_own_leak(classifier, cache, rows, strict)
    loader = CacheLoader(
        cache,
        rows,
        classifier.batch_size,
        classifier.device,
        with_masks=classifier.needs_masks,
        masks=masks,
        labels=cache.labels_for(classifier.class_names),
    )
    report = report_of(classifier, cache, predict(classifier, loader), (split or "all").lower())
    report.warnings = warnings
    return report


def predict(classifier: Classifier, loader: Iterable) -> dict[str, torch.Tensor]:
    """Uncalibrated logits, labels, cache rows and empty-mask flags of every batch of ``loader`` (CPU tensors)."""
    classifier.model.eval()
    with torch.inference_mode(), autocast(classifier.device, classifier.amp):
        return classifier.task.predict(loader)


def report_of(
    classifier: Classifier, cache: PackedCache, p: dict[str, torch.Tensor], name: str
) -> ClassificationReport:
    """The report of predictions ``p`` (from :func:`predict`), with calibration and one record per image."""
    t = classifier.cfg.temperature
    probs = calibrated(p["logits"], t)
    idx = p["index"].tolist()
    samples = [cache.samples[i] for i in idx]
    sources = [s.source for s in samples]
    patients = [f"{s.source}/{s.patient}" if s.patient else "" for s in samples]
    report = classification_report(
        probs, p["labels"], classifier.class_names, name, classifier.cfg.mode, sources, patients
    )
    report.calibration = calibration_summary(p["logits"], p["labels"], t)
    report.empty_masks = int(p["empty"].sum())
    report.images = [  # per image, for paired comparisons between runs
        {
            "row": i,
            "image": s.image,
            "hash": cache.hashes[i],
            "source": s.source,
            "patient": pat,
            "label": int(y),
            "pred": int(pr.argmax()),
            "probs": [round(float(v), 6) for v in pr],
            "empty_mask": bool(e),
        }
        for i, s, pat, y, pr, e in zip(idx, samples, patients, p["labels"], probs, p["empty"])
    ]
    return report


def check_segmenter_leak(segmenter: Segmenter, cache: PackedCache, rows: np.ndarray, strict: bool = False) -> list[int]:
    """Rows among ``rows`` (the classifier's Val/Test images) whose masks the segmenter learnt or was chosen on.

    A leak is a row the segmenter was trained on, or validated on unless the row is also in the cache's Val
    split (one split for both stages: both stages choose their epoch on the same Val images, and Test stays
    clean). Masks of leaked rows are better than the masks new images get, so masked-mode scores on them are
    optimistic: logged as a loud warning, or with ``strict`` raised. Compares exact content hashes.
    """
    images = segmenter.images or {}
    val = set(cache.indices("Val").tolist())
    trained = set(seen_by(cache, rows, images.get("Train", [])))
    validated = seen_by(cache, rows, images.get("Val", []))
    leaked = sorted(trained | {r for r in validated if r not in val})
    shared = len([r for r in validated if r in val and r not in trained])
    if shared:
        log.info(
            "the segmenter was validated on %d of the classifier's Val images (one split for both stages): "
            "Test scores are not affected",
            shared,
        )
    if leaked:
        name = segmenter.info.get("source", {}).get("name", "the segmenter")
        _leak(
            f"STAGE-1 LEAK: {name} was trained on, or chose its epoch on, {len(leaked)} of the {len(rows)} images "
            f"the classifier is validated or tested on (e.g. {cache.samples[leaked[0]].image}); masked-mode scores "
            "on them are optimistic. Use one split for both stages (`lungcls data split`) or a segmenter trained on "
            "other images",
            strict,
        )
    return leaked


def check_own_leak(classifier: Classifier, cache: PackedCache, rows: np.ndarray, strict: bool = False) -> list[int]:
    """Rows among ``rows`` the classifier itself was trained or validated on (a loud warning, or ``strict``: an
    error)."""
    seen = set((classifier.images or {}).get("Train", [])) | set((classifier.images or {}).get("Val", []))
    leaked = seen_by(cache, rows, seen)
    if leaked:
        _leak(
            f"LEAK: the classifier was trained or validated on {len(leaked)} of the {len(rows)} images evaluated "
            f"(e.g. {cache.samples[leaked[0]].image}); these scores are optimistic",
            strict,
        )
    return leaked


def _leak(message: str, strict: bool) -> None:
    if strict:
        raise DataError(message + "; or drop --strict")
    log.warning(message)
