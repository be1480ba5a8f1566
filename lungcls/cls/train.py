"""Train stage 2: data -> packed cache (+ lung masks) -> ResNet-50 via the shared engine -> evaluation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load_model, read_json
from ..config import ClassifierConfig, TrainConfig, from_dict, to_dict
from ..data.augment import DeviceAugment
from ..data.cache import PackedCache, is_cache
from ..data.loader import CacheLoader
from ..data.training_data import open_training_data
from ..engine.device import autocast
from ..engine.distributed import main_first, rank_batch_size, setup
from ..engine.trainer import FitResult, fit, seed_everything
from ..errors import DataError
from ..masking import check_mode
from ..models import build_classifier
from ..runinfo import environment
from ..seg.segmenter import Segmenter
from .report import classification_report, format_markdown, plot_confusion
from .task import ClassificationTask

log = logging.getLogger(__name__)


def predicted_masks(segmenter: Segmenter, cache: PackedCache, progress: bool = True) -> np.ndarray:
    """Stage-1 masks (post-processed) for every cache row: uint8 (N, H, W) in {0, 1}."""
    from ..progress import progress_bar

    out = np.zeros(cache.images.shape, np.uint8)
    step = segmenter.batch_size
    for start in progress_bar(range(0, len(cache), step), desc="predicting lung masks", unit="batch", enabled=progress):
        images = torch.from_numpy(np.array(cache.images[start : start + step]))[:, None]
        out[start : start + len(images)] = segmenter.masks(images)[0][:, 0].cpu().numpy()
    return out


def class_weights(labels: np.ndarray, k: int) -> torch.Tensor:
    """Inverse-frequency weights ``n / (k * n_c)`` (a class absent from Train gets weight 0)."""
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    w = np.where(counts > 0, len(labels) / (k * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def train_classifier(
    data: Sequence[str | Path],
    out: str | Path,
    model: ClassifierConfig | None = None,
    train: TrainConfig | None = None,
    seg_model: str | Path | None = None,
    weights_file: str | Path | None = None,
    cache_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end=None,
    strict: bool = False,
) -> FitResult:
    """Train the ResNet-50 on ``data`` in ``model.mode``, then evaluate it on Val and Test.

    Args:
        model: classifier config; ``mask_source`` ``gt`` uses the dataset's masks (images without
            one fall back to raw, flagged), ``predicted`` needs ``seg_model``.
        seg_model: a ``train-seg`` run; its masks feed the masked/cropped modes.
        weights_file: ImageNet ResNet-50 weights to start from (else ``model.pretrained`` reads
            torchvision's cache; else random initialisation).
    """
    out = Path(out)
    if resume:
        saved = read_json(out / "config.json")
        model, train = from_dict(ClassifierConfig, saved["model"]), from_dict(TrainConfig, saved["train"])
        seg_model = saved.get("seg_model")
    model, train = model or ClassifierConfig(), train or TrainConfig(label_smoothing=0.1, class_weighting=True)
    check_mode(model.mode)
    if model.mode != "raw" and model.mask_source == "none":
        model.mask_source = "predicted" if seg_model else "gt"
    if model.mask_source == "predicted" and seg_model is None:
        raise DataError(f"mode {model.mode!r} with predicted masks needs a stage-1 run (--seg-model RUN)")
    model.pretrained = model.pretrained or weights_file is not None
    if len(data) == 1 and is_cache(data[0]):  # the classifier reads whatever size the cache holds
        model.working_size = PackedCache.open(data[0]).size[0]
    ranks, device = setup(train.device)
    cache = main_first(
        ranks,
        lambda: open_training_data(
            data,
            cache_dir or out / "cache",
            size=model.working_size,
            split_seed=train.seed,
            progress=progress,
            strict=strict,
        ),
    )
    model.working_size = cache.size[0]
    masks = None
    if model.mask_source == "predicted":
        masks = predicted_masks(Segmenter.load(seg_model, device=device), cache, progress)
    rows = {s: cache.indices(s) for s in ("Train", "Val", "Test")}
    if len(rows["Train"]) == 0 or len(rows["Val"]) == 0:
        raise DataError(f"{cache.path}: need images in Train ({len(rows['Train'])}) and Val ({len(rows['Val'])})")
    seed_everything(train.seed)
    weights = class_weights(cache.labels[rows["Train"]], model.num_classes) if train.class_weighting else None
    net = build_classifier(model, weights_file=weights_file)
    augment = DeviceAugment.from_config(train.augment)
    task = ClassificationTask(net, model, device, augment, train.channels_last, train.label_smoothing, weights)
    if train.compile:
        task.model = torch.compile(task.model)

    def loader(split: str, shuffle: bool) -> CacheLoader:
        r = rows[split]
        # training rows are sharded across processes, each taking its share of the global batch
        shard = {"rank": ranks.rank, "world_size": ranks.world} if shuffle else {}
        bs = rank_batch_size(train.batch_size, ranks) if shuffle else train.batch_size
        return CacheLoader(cache, r, bs, device, shuffle=shuffle, drop_last=shuffle and len(r) > train.batch_size,
                           with_masks=model.mode != "raw", seed=train.seed, placement=train.placement, masks=masks, **shard)  # fmt: skip

    run_config = {
        "kind": "classifier",
        "model": to_dict(model),
        "train": to_dict(train),
        "seg_model": str(Path(seg_model).resolve()) if seg_model else None,
        "data": {
            "inputs": [str(Path(p).resolve()) for p in data],
            "cache": str(cache.path.resolve()),
            "manifest_digest": cache.digest(),
            **{f"{s.lower()}_images": len(r) for s, r in rows.items()},
        },  # fmt: skip
        "environment": environment(),
    }
    result = fit(
        task, loader("Train", True), loader("Val", False), train, out, run_config, resume, progress, on_epoch_end, ranks
    )
    if not ranks.main:  # rank 0 evaluates and writes the reports
        return result
    load_model(out / "model.safetensors", task.model)  # evaluate the best epoch
    for split in ("Val", "Test"):
        if len(rows[split]):
            evaluate_split(task, loader(split, False), cache, out, split.lower(), train.amp)
    return result


def evaluate_split(
    task: ClassificationTask, loader: CacheLoader, cache: PackedCache, out: Path, name: str, amp: bool = True
) -> dict:
    """Evaluate on one loader; write ``eval_<name>.json``, ``.md`` and ``confusion_<name>.png`` into ``out``."""
    from ..atomic import write_json, write_text

    task.model.eval()
    with torch.inference_mode(), autocast(task.device, amp):
        p = task.predict(loader)
    sources = [cache.samples[int(i)].source for i in p["index"]]
    report = classification_report(p["probs"], p["labels"], task.cfg.class_names, sources)
    report["empty_masks"] = int(p["empty"].sum())
    report["mode"] = task.cfg.mode
    report["images"] = [  # per image, for paired comparisons between runs
        {"row": int(i), "image": cache.samples[int(i)].image, "source": src, "label": int(y), "pred": int(pr.argmax()),
         "probs": [round(float(v), 6) for v in pr], "empty_mask": bool(e)}
        for i, src, y, pr, e in zip(p["index"], sources, p["labels"], p["probs"], p["empty"])
    ]  # fmt: skip
    write_json(out / f"eval_{name}.json", report)
    write_text(out / f"eval_{name}.md", format_markdown(report, f"{name} ({task.cfg.mode})"))
    plot_confusion(report, out / f"confusion_{name}.png", f"{name}, {task.cfg.mode}: accuracy {report['accuracy']:.3f}")
    return report


def evaluate_classifier(
    classifier, cache: PackedCache, split: str | None, out: str | Path, seg_model: str | Path | None = None
) -> dict:
    """Evaluate a loaded :class:`~lungcls.cls.classifier.Classifier` on one split of ``cache`` (all rows when None).

    Masks come from the dataset (``gt``) or from ``seg_model`` (default: the stage-1 run the
    classifier was trained with). Writes ``eval_<split>.json``, ``.md`` and ``confusion_<split>.png``.
    """
    from ..errors import LungclsError

    masks = None
    if classifier.cfg.mask_source == "predicted":
        seg = seg_model or classifier.seg_model
        if seg is None:
            raise LungclsError("this classifier needs predicted masks: pass --seg-model RUN")
        masks = predicted_masks(Segmenter.load(seg, device=classifier.device), cache)
    loader = CacheLoader(cache, cache.indices(split), classifier.batch_size, classifier.device,
                         with_masks=classifier.needs_masks, masks=masks)  # fmt: skip
    return evaluate_split(classifier.task, loader, cache, Path(out), (split or "all").lower(), classifier.amp)
