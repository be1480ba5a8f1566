"""Train stage 2: data -> packed cache (+ lung masks) -> ResNet via the shared engine -> calibrated, evaluated run."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_json
from ..checkpoint import read_json
from ..config import ClassifierConfig, TrainConfig, from_dict, to_dict
from ..data.augment import DeviceAugment
from ..data.cache import PackedCache, is_cache
from ..data.loader import CacheLoader
from ..data.training_data import open_training_data, seen_by
from ..engine.device import autocast
from ..engine.distributed import main_first, rank_batch_size, setup
from ..engine.trainer import fit, seed_everything
from ..errors import DataError
from ..masking import check_mode
from ..model_card import classifier_summary
from ..models import build_classifier
from ..models.resnet import describe_weights
from ..recipes import classifier_recipe
from ..runinfo import environment
from ..seg.segmenter import Segmenter
from ..training import TrainResult, data_record, images_record, split_rows, start_run
from .calibration import calibration_summary, fit_temperature
from .classifier import Classifier
from .report import ClassificationReport, classification_report, write_classification_report
from .task import ClassificationTask

log = logging.getLogger(__name__)

SegmenterLike = Segmenter | str | Path
MIN_CALIBRATION = 30  # Val images needed to fit a temperature (fewer: it stays 1)


MAX_CLASS_WEIGHT = 10.0


def class_weights(labels: np.ndarray, k: int) -> torch.Tensor:
    """Inverse-frequency weights ``n / (k * n_c)``, at most ``MAX_CLASS_WEIGHT`` (a class absent from Train
    gets weight 0). The cap keeps a class with a handful of Train images from dominating the loss."""
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    w = np.where(counts > 0, np.minimum(len(labels) / (k * np.maximum(counts, 1)), MAX_CLASS_WEIGHT), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def train_classifier(
    data: Sequence[str | Path],
    out: str | Path,
    config: ClassifierConfig | None = None,
    train: TrainConfig | None = None,
    *,
    segmenter: SegmenterLike | None = None,
    weights: str | Path | None = None,
    classes: Sequence[str] | None = None,
    hold_out: str | None = None,
    cache_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch_end=None,
    strict: bool = False,
    tensorboard: bool = False,
) -> TrainResult:
    """Train the classifier on ``data`` in ``model.mode``, calibrate it on Val, and evaluate it on Val and Test.

    Args:
        config, train: default :func:`lungcls.recipes.classifier_recipe` ``("default")`` (what ``lungcls
            train-cls`` trains with no options).
        segmenter: the stage-1 model whose masks feed the masked/cropped modes (a :class:`Segmenter`, a
            run folder, a bundle or a built-in name; default the built-in segmenter). ``model.mask_source
            == "gt"`` uses the dataset's masks instead (masked-gt: only images that have a mask).
        weights: start from ``"imagenet"`` (torchvision's local cache) or a weights file.
        classes: the class set, in output order (default: the classes found in the data).
        hold_out: a source set to hold out as Test (external validation): the classifier trains and
            validates on the other sources and is tested on this one.
        resume: continue an interrupted run in ``out``; ``overwrite``: replace the run in ``out``.
        strict: refuse data leaks (a patient or picture in two splits; Val/Test images the segmenter saw)
            instead of warning.
        tensorboard: also log to ``out/tensorboard`` (the ``tensorboard`` extra).

    Raises:
        LungclsError: bad settings, no data, a run folder in the way, or (``strict``) a leak.
    """
    out = Path(out)
    saved = start_run(out, "classifier", resume, overwrite)
    model = config  # the model's config: the architecture, and for stage 2 its inputs
    if saved is not None:
        model, train = from_dict(ClassifierConfig, saved["model"], "model."), from_dict(TrainConfig, saved["train"], "train.")
        segmenter = segmenter or _saved_segmenter(saved, out)
    recipe_model, recipe_train = classifier_recipe("default")
    model, train = model or recipe_model, train or recipe_train
    check_mode(model.mode)
    ranks, device = setup(train.device)
    seg = _segmenter_for(model, segmenter, device)  # a raw classifier may keep one too (for its bundle)
    masked = seg is not None and model.mode != "raw"  # the segmenter's masks feed the inputs
    if masked:
        model = dataclasses.replace(model, mask_source="predicted")
    elif model.mode != "raw" and model.mask_source != "gt":
        raise DataError(f"mode {model.mode!r} needs lung masks: a segmenter, or the dataset's masks (--gt-masks)")
    if weights is not None and saved is None:
        model = dataclasses.replace(model, pretrained=weights == "imagenet", init_weights=describe_weights(weights))
    if len(data) == 1 and is_cache(data[0]):  # the classifier reads whatever size the cache holds
        model = dataclasses.replace(model, working_size=PackedCache.open(data[0]).size[0])
    pinned = seg.seen_images if masked else set()
    cache, made = main_first(ranks, lambda: open_training_data(
        data, cache_dir or out / "cache", size=model.working_size, split_seed=train.seed, progress=progress,
        strict=strict, pinned=pinned, hold_out=hold_out))  # fmt: skip
    rows = split_rows(cache)
    if model.mask_source == "gt":  # masked-gt: only images that have a mask, never a raw fallback
        rows = _with_masks_only(cache, rows)
    names = list(classes) if classes else _class_set(cache, rows, hold_out)
    model = dataclasses.replace(model, working_size=cache.size[0], class_names=names, num_classes=len(names))
    labels = _labels(cache, names, rows, hold_out)
    rows = {s: r[labels[r] >= 0] for s, r in rows.items()}
    if len(rows["Train"]) == 0 or len(rows["Val"]) == 0:
        raise DataError(f"{cache.path}: need images in Train ({len(rows['Train'])}) and Val ({len(rows['Val'])})")
    if masked:
        check_segmenter_leak(seg, cache, np.concatenate([rows["Val"], rows["Test"]]), strict)
    masks = _masks(seg, cache, progress) if masked else None
    seed_everything(train.seed)
    counts = np.bincount(labels[rows["Train"]], minlength=len(names))
    if rare := [f"{c} ({n})" for c, n in zip(names, counts.tolist()) if 0 < n < 10]:
        log.warning("few Train images of %s: the classifier can hardly learn these classes, and their scores "
                    "mean little", ", ".join(rare))  # fmt: skip
    cw = class_weights(labels[rows["Train"]], len(names)) if train.class_weighting else None
    net = build_classifier(model, None if saved else weights)
    task = ClassificationTask(net, model, device, DeviceAugment(train.augment), train.channels_last,
                              train.label_smoothing, cw)  # fmt: skip
    if train.compile:
        task.model = torch.compile(task.model)

    def loader(split: str, shuffle: bool) -> CacheLoader:
        r = rows[split]
        # training rows are sharded across processes, each taking its share of the global batch
        shard = {"rank": ranks.rank, "world_size": ranks.world} if shuffle else {}
        bs = rank_batch_size(train.batch_size, ranks) if shuffle else train.batch_size
        return CacheLoader(cache, r, bs, device, shuffle=shuffle, drop_last=shuffle and len(r) > train.batch_size,
                           with_masks=model.mode != "raw", seed=train.seed, placement=train.placement, masks=masks,
                           labels=labels, **shard)  # fmt: skip

    run_config = {"kind": "classifier", "model": to_dict(model), "train": to_dict(train),
                  "segmenter": _segmenter_record(seg, out), "data": data_record(data, cache, rows),
                  "hold_out": hold_out, "environment": environment()}  # fmt: skip
    if ranks.main:
        write_json(out / "images.json", images_record(cache, rows))
        if made is not None:
            cache.manifest.write_csv(out / "split.csv")
    if tensorboard and ranks.main:
        on_epoch_end = _with_tensorboard(out, cache, rows["Train"], masks, on_epoch_end)
    result = fit(task, loader("Train", True), loader("Val", False), train, out, run_config, resume, progress,
                 on_epoch_end, ranks)  # fmt: skip
    if not ranks.main:  # rank 0 calibrates, evaluates and writes the reports
        return TrainResult(out, result, None, split=made)
    classifier = Classifier.load(out, device=device)
    val = _predict(classifier, loader("Val", False))
    temperature = fit_temperature(val["logits"], val["labels"]) if len(val["labels"]) >= MIN_CALIBRATION else 1.0
    if len(val["labels"]) < MIN_CALIBRATION:
        log.warning("only %d Val images: too few to fit a calibration temperature, the probabilities stay "
                    "uncalibrated (temperature 1)", len(val["labels"]))  # fmt: skip
    run_config = read_json(out / "config.json")  # as fit left it, with the best epoch's metrics
    run_config["model"]["temperature"] = temperature
    write_json(out / "config.json", run_config)
    classifier = Classifier.load(out, device=device)
    run = TrainResult(out, result, classifier, split=made)
    for split in ("Val", "Test"):
        if len(rows[split]):
            p = val if split == "Val" else _predict(classifier, loader(split, False))
            report = _report(classifier, cache, p, split.lower())
            write_classification_report(report, out)
            run.reports[split.lower()] = report
    run_config["evaluation"] = {k: classifier_summary(r) for k, r in run.reports.items()}
    write_json(out / "config.json", run_config)
    classifier.info["evaluation"] = run_config["evaluation"]
    return run


def evaluate_classifier(
    classifier: Classifier, cache: PackedCache, split: str | None = None, segmenter: SegmenterLike | None = None,
    strict: bool = False, progress: bool = True,
) -> ClassificationReport:  # fmt: skip
    """Evaluate a loaded classifier on one split of ``cache`` (every image when ``split`` is None).

    Masks come from the dataset (``gt``) or from ``segmenter`` (default: the stage-1 model the
    classifier was trained with). Warns (``strict``: raises) when the segmenter or the classifier
    itself was trained or validated on any of the evaluated images.
    """
    rows = cache.indices(split)
    if classifier.cfg.mask_source == "gt":
        rows = rows[cache.has_mask[rows]]
    seg = None
    if classifier.cfg.mask_source == "predicted":
        seg = segmenter if isinstance(segmenter, Segmenter) else Segmenter.load(
            segmenter or classifier.segmenter_spec(), device=classifier.device)  # fmt: skip
        check_segmenter_leak(seg, cache, rows, strict)
    _check_own_leak(classifier, cache, rows, strict)
    labels = cache.labels_for(classifier.class_names)
    masks = _masks(seg, cache, progress) if seg is not None else None
    loader = CacheLoader(cache, rows, classifier.batch_size, classifier.device, with_masks=classifier.needs_masks,
                         masks=masks, labels=labels)  # fmt: skip
    return _report(classifier, cache, _predict(classifier, loader), (split or "all").lower())


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
        log.info("the segmenter was validated on %d of the classifier's Val images (one split for both stages): "
                 "Test scores are not affected", shared)  # fmt: skip
    if leaked:
        name = segmenter.info.get("source", {}).get("name", "the segmenter")
        msg = (f"STAGE-1 LEAK: {name} was trained on, or chose its epoch on, {len(leaked)} of the {len(rows)} "
               f"images the classifier is validated or tested on (e.g. {cache.samples[leaked[0]].image}); "
               "masked-mode scores on them are optimistic. Use one split for both stages (`lungcls data split`) "
               "or a segmenter trained on other images")  # fmt: skip
        if strict:
            raise DataError(msg + "; or drop --strict")
        log.warning(msg)
    return leaked


def _check_own_leak(classifier: Classifier, cache: PackedCache, rows: np.ndarray, strict: bool) -> None:
    seen = set((classifier.images or {}).get("Train", [])) | set((classifier.images or {}).get("Val", []))
    leaked = seen_by(cache, rows, seen)
    if leaked:
        msg = (f"LEAK: the classifier was trained or validated on {len(leaked)} of the {len(rows)} images evaluated "
               f"(e.g. {cache.samples[leaked[0]].image}); these scores are optimistic")  # fmt: skip
        if strict:
            raise DataError(msg)
        log.warning(msg)


def _segmenter_for(model: ClassifierConfig, segmenter: SegmenterLike | None, device: torch.device) -> Segmenter | None:
    """The segmenter whose masks the classifier trains on, or None (raw, or the dataset's masks)."""
    from .. import builtin

    if model.mode == "raw" and segmenter is None:
        return None
    if model.mask_source == "gt":
        if segmenter is not None:
            raise DataError("give either a segmenter or the dataset's masks (--gt-masks), not both")
        return None
    if isinstance(segmenter, Segmenter):
        return segmenter
    if segmenter is None:
        log.warning("no segmenter given: using the built-in lung segmenter %r for the %s inputs",
                    builtin.DEFAULT, model.mode)  # fmt: skip
    return Segmenter.load(segmenter or builtin.DEFAULT, device=device)


def _segmenter_record(seg: Segmenter | None, out: Path) -> dict | None:
    """How the run names its segmenter: built-in name, or the path relative to the run folder, with the weights' hash."""
    if seg is None:
        return None
    source = seg.info.get("source", {})
    record = {"origin": source.get("origin"), "sha256": source.get("sha256")}
    if source.get("origin") == "builtin":
        return record | {"name": source.get("name")}
    path = Path(source.get("name", ""))
    record["path"] = os.path.relpath(path.resolve(), out.resolve()) if path.exists() else str(path)
    record["absolute"] = str(path.resolve()) if path.exists() else None
    return record


def _saved_segmenter(saved: dict, out: Path) -> str | Path | None:
    rec = saved.get("segmenter")
    if not rec:
        return None
    return rec["name"] if rec.get("origin") == "builtin" else out / rec["path"]


def _with_masks_only(cache: PackedCache, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    dropped = {s: int((~cache.has_mask[r]).sum()) for s, r in rows.items()}
    if any(dropped.values()):
        log.warning("masked with the dataset's masks: images without a mask are left out (%s), so every "
                    "image is masked and none falls back to raw", ", ".join(f"{s} {n}" for s, n in dropped.items()))  # fmt: skip
    return {s: r[cache.has_mask[r]] for s, r in rows.items()}


def _class_set(cache: PackedCache, rows: dict[str, np.ndarray], hold_out: str | None) -> list[str]:
    """The classes of the data; with a held-out source, the classes present in Train."""
    if hold_out is None:
        return cache.class_names
    from ..data.manifest import order_classes

    return order_classes({cache.class_names[cache.labels[r]] for r in rows["Train"]})


def _labels(cache: PackedCache, names: list[str], rows: dict[str, np.ndarray], hold_out: str | None) -> np.ndarray:
    """Cache labels as indices into ``names``; -1 for a held-out image whose class is not in training."""
    if hold_out is None:
        return cache.labels_for(names)
    lookup = np.array([names.index(c) if c in names else -1 for c in cache.class_names], dtype=np.int64)
    labels = lookup[cache.labels]
    unseen = int((labels[rows["Test"]] < 0).sum())
    if unseen:
        log.warning("held-out source %r: %d test image(s) of classes absent from training are left out", hold_out, unseen)
    return labels


def _masks(seg: Segmenter, cache: PackedCache, progress: bool) -> np.ndarray:
    """Stage-1 masks for every cache row, through the one inference path: uint8 (N, H, W) in {0, 1}.

    Predicted once per segmenter (weights and post-processing) and cache: kept beside the cache's data as
    ``predicted-<key>.u8`` and memory-mapped by every later run with the same segmenter.
    """
    import hashlib
    import json

    from ..atomic import write_bytes

    weights = seg.info.get("source", {}).get("sha256")
    key = hashlib.sha256(f"{weights}{json.dumps(vars(seg.post), sort_keys=True)}".encode()).hexdigest()[:16]
    stored = cache.path / cache.meta["data_dir"] / f"predicted-{key}.u8"
    if weights and stored.is_file() and stored.stat().st_size == cache.images.size:
        return np.memmap(stored, np.uint8, "r", shape=cache.images.shape)
    masks, _ = seg.masks(cache.images[:, None], progress=progress)
    masks = masks[:, 0].cpu().numpy()
    if weights:
        write_bytes(stored, masks.tobytes())
    return masks


def _predict(classifier: Classifier, loader: CacheLoader) -> dict[str, torch.Tensor]:
    classifier.model.eval()
    with torch.inference_mode(), autocast(classifier.device, classifier.amp):
        return classifier.task.predict(loader)


def _report(classifier: Classifier, cache: PackedCache, p: dict[str, torch.Tensor], name: str) -> ClassificationReport:
    t = classifier.cfg.temperature
    probs = torch.softmax(p["logits"] / t, dim=1)
    idx = p["index"].tolist()
    sources = [cache.samples[i].source for i in idx]
    patients = [f"{cache.samples[i].source}/{cache.samples[i].patient}" if cache.samples[i].patient else "" for i in idx]
    report = classification_report(probs, p["labels"], classifier.class_names, name, classifier.cfg.mode, sources, patients)
    report.calibration = calibration_summary(p["logits"], p["labels"], t)
    report.empty_masks = int(p["empty"].sum())
    report.images = [  # per image, for paired comparisons between runs
        {"row": i, "image": cache.samples[i].image, "hash": cache.hashes[i], "source": src, "patient": pat,
         "label": int(y), "pred": int(pr.argmax()), "probs": [round(float(v), 6) for v in pr], "empty_mask": bool(e)}
        for i, src, pat, y, pr, e in zip(idx, sources, patients, p["labels"], probs, p["empty"])
    ]  # fmt: skip
    return report


def _with_tensorboard(out: Path, cache: PackedCache, rows: np.ndarray, masks: np.ndarray | None, then):
    """``then`` (if any) after logging the epoch to ``out/tensorboard``, with 8 training images and their masks."""
    from ..tensorboard import TensorBoardLogger

    pick = rows[:: max(1, len(rows) // 8)][:8]
    images = torch.from_numpy(np.asarray(cache.images[pick]))[:, None]
    source = masks if masks is not None else cache.masks
    logger = TensorBoardLogger(out / "tensorboard", images, torch.from_numpy(np.asarray(source[pick]))[:, None])

    def callback(epoch: int, record: dict) -> None:
        logger(epoch, record)
        if then is not None:
            then(epoch, record)

    return callback
