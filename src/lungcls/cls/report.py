"""Classification reports: the metrics (torchmetrics), bootstrap CIs, calibration, as one object; and its
one writer (JSON, Markdown, confusion-matrix and reliability figures)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
    multiclass_specificity,
)

from ..atomic import write_json, write_text
from ..plots import confusion_figure, reliability_figure, save_figure
from ..stats import bootstrap_indices


@dataclass
class ClassificationReport:
    """One classifier on one set of images.

    Attributes:
        name: what was evaluated (``val``, ``test``, ``all`` ...); mode: the classifier's input mode.
        n: images; class_names: the classes.
        per_class: {class: precision, recall, f1, specificity, auroc, support}.
        accuracy, macro_avg, weighted_avg: the reference table's summary rows.
        confusion, confusion_normalized: rows true, columns predicted (counts; shares of the true class).
        ci95: 95% percentile-bootstrap intervals of accuracy and macro F1, with the resampling ``unit``
            (``patient`` where patient ids exist, else ``image``).
        by_source: {source set: {n, accuracy}}.
        calibration: temperature, ECE before/after and reliability bins (when logits were given).
        empty_masks: images whose lung mask was empty (the raw image was used).
        coverage: the coverage-accuracy curve (:func:`coverage_curve`): answering only when the top calibrated
            probability is at least a threshold, the share answered and their accuracy.
        images: one record per image (row, image, source, label, pred, probs, empty_mask).
        warnings: the model cards' warnings (synthetic, smoke, near chance, out of scope), shown above the tables.
    """

    name: str
    mode: str
    n: int
    class_names: list[str]
    per_class: dict[str, dict[str, float]]
    accuracy: float
    macro_avg: dict[str, float]
    weighted_avg: dict[str, float]
    confusion: list[list[int]]
    confusion_normalized: list[list[float]]
    ci95: dict
    by_source: dict[str, dict[str, float]] = field(default_factory=dict)
    calibration: dict | None = None
    empty_masks: int = 0
    coverage: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)

    def markdown(self, title: str | None = None) -> str:
        """The reference layout (rows per class, accuracy, macro and weighted avg) and the extras."""
        return format_markdown(self, title if title is not None else f"{self.name} ({self.mode})")


def classification_report(
    probs: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    name: str = "",
    mode: str = "",
    sources: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> ClassificationReport:
    """Everything the reference table and the confusion matrix need, plus CIs and per-source accuracy.

    Args:
        probs: float (N, K) class probabilities; labels: int64 (N,).
        sources: the source set of each image, for per-source accuracy.
        groups: a patient id per image ("" when unknown): the bootstrap then resamples patients
            (an image without an id is its own patient); without ids it resamples images.
        n_boot: bootstrap resamples for the 95% CIs of accuracy and macro F1.
    """
    k, n = len(class_names), len(labels)
    preds = probs.argmax(dim=1)
    args = {"num_classes": k}
    per = {
        "precision": multiclass_precision(preds, labels, average=None, **args),
        "recall": multiclass_recall(preds, labels, average=None, **args),
        "f1": multiclass_f1_score(preds, labels, average=None, **args),
        "specificity": multiclass_specificity(preds, labels, average=None, **args),
        "auroc": _auroc(probs, labels, k),
    }
    support = torch.bincount(labels, minlength=k)
    confusion = multiclass_confusion_matrix(preds, labels, **args)
    report = ClassificationReport(
        name=name,
        mode=mode,
        n=n,
        class_names=list(class_names),
        per_class={
            c: {m: float(v[i]) for m, v in per.items()} | {"support": int(support[i])}
            for i, c in enumerate(class_names)
        },
        accuracy=multiclass_accuracy(preds, labels, average="micro", **args).item() if n else math.nan,
        macro_avg={m: _avg(preds, labels, m, "macro", k) for m in ("precision", "recall", "f1")},
        weighted_avg={m: _avg(preds, labels, m, "weighted", k) for m in ("precision", "recall", "f1")},
        confusion=confusion.tolist(),
        confusion_normalized=(confusion / confusion.sum(dim=1, keepdim=True).clamp_min(1)).tolist(),
        ci95=bootstrap_ci(preds, labels, k, n_boot, seed, groups),
        coverage=coverage_curve(probs, labels),
    )
    if sources is not None:
        for src in sorted(set(sources)):
            idx = torch.tensor([i for i, s in enumerate(sources) if s == src])
            report.by_source[src] = {"n": len(idx), "accuracy": float((preds[idx] == labels[idx]).float().mean())}
    return report


def bootstrap_ci(
    preds: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    n_boot: int = 1000,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> dict:
    """95% percentile-bootstrap intervals of accuracy and macro F1, resampling patients where ``groups``
    gives ids (see :func:`lungcls.stats.bootstrap_indices`), else images."""
    acc, f1, per = [], [], []
    draws, unit = bootstrap_indices(len(labels), n_boot, seed, groups)
    for idx in draws:
        p, y = preds[torch.from_numpy(idx)], labels[torch.from_numpy(idx)]
        acc.append(float((p == y).float().mean()))
        per.append(multiclass_f1_score(p, y, num_classes=k, average=None).tolist())
        f1.append(float(np.mean(per[-1])))
    pct = lambda v: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else [math.nan, math.nan]  # noqa: E731
    per_class = [pct([d[c] for d in per]) for c in range(k)]
    return {"accuracy": pct(acc), "macro_f1": pct(f1), "per_class_f1": per_class, "n_boot": n_boot, "unit": unit}


#: the confidence thresholds the coverage-accuracy curve is tabled at (0: answer everything)
COVERAGE_THRESHOLDS = (0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def coverage_curve(
    probs: torch.Tensor, labels: torch.Tensor, thresholds: Sequence[float] = COVERAGE_THRESHOLDS
) -> list[dict]:
    """Per threshold (default :data:`COVERAGE_THRESHOLDS`): the share of images whose top probability reaches it
    (``coverage``) and the accuracy on them (NaN when none does)."""
    confidence, correct = probs.max(dim=1).values, probs.argmax(dim=1) == labels
    out = []
    for t in thresholds:
        kept = confidence >= t
        accuracy = float(correct[kept].float().mean()) if kept.any() else math.nan
        out.append({"threshold": t, "coverage": float(kept.float().mean()) if len(kept) else math.nan, "accuracy": accuracy})
    return out


def format_markdown(report: ClassificationReport, title: str = "") -> str:
    """The reference layout (rows per class, accuracy, macro avg, weighted avg) and the extras."""
    r, n = report, report.n
    lines = [f"### {title}", ""] if title else []
    lines += [f"> **WARNING {w}.**" for w in r.warnings] + ([""] if r.warnings else [])
    lines += ["| | precision | recall | f1-score | support |", "|---|---|---|---|---|"]
    for name, m in r.per_class.items():
        lines.append(f"| {name} | {m['precision']:.2f} | {m['recall']:.2f} | {m['f1']:.2f} | {m['support']} |")
    lines.append(f"| accuracy | | | {r.accuracy:.2f} | {n} |")
    for a, label in ((r.macro_avg, "macro avg"), (r.weighted_avg, "weighted avg")):
        lines.append(f"| {label} | {a['precision']:.2f} | {a['recall']:.2f} | {a['f1']:.2f} | {n} |")
    ci = r.ci95
    lines += [
        "",
        f"95% bootstrap CI ({ci['n_boot']} resamples of {ci['unit']}s): accuracy {r.accuracy:.3f} "
        f"[{ci['accuracy'][0]:.3f}, {ci['accuracy'][1]:.3f}], macro F1 {r.macro_avg['f1']:.3f} "
        f"[{ci['macro_f1'][0]:.3f}, {ci['macro_f1'][1]:.3f}]",
        "",
        "| | specificity | AUROC (one-vs-rest) |",
        "|---|---|---|",
    ]
    for name, m in r.per_class.items():
        lines.append(f"| {name} | {m['specificity']:.3f} | {_fmt(m['auroc'])} |")
    lines += ["", "Confusion matrix (rows: true, columns: predicted; count, row share):", ""]
    lines += ["| true \\ predicted | " + " | ".join(r.class_names) + " |", "|---" * (len(r.class_names) + 1) + "|"]
    for name, counts, shares in zip(r.class_names, r.confusion, r.confusion_normalized):
        lines.append(f"| {name} | " + " | ".join(f"{c} ({s:.2f})" for c, s in zip(counts, shares)) + " |")
    if r.by_source:
        lines += ["", "| source set | images | accuracy |", "|---|---|---|"]
        lines += [f"| {s or '(unnamed)'} | {v['n']} | {v['accuracy']:.3f} |" for s, v in r.by_source.items()]
    if r.calibration:
        c = r.calibration
        lines += [
            "",
            f"Calibration: temperature {c['temperature']:.3f} (fitted on Val); expected calibration error "
            f"{_fmt(c['ece_before'])} before, {_fmt(c['ece_after'])} after.",
        ]
    if r.coverage:
        lines += ["", "Answering only above a confidence (top calibrated probability): coverage and accuracy", "",
                  "| confidence >= | " + " | ".join(f"{c['threshold']:.2f}" for c in r.coverage) + " |",
                  "|---" * (len(r.coverage) + 1) + "|",
                  "| coverage | " + " | ".join(f"{c['coverage']:.3f}" for c in r.coverage) + " |",
                  "| accuracy | " + " | ".join(_fmt(c["accuracy"]) for c in r.coverage) + " |"]  # fmt: skip
    if r.empty_masks:
        lines += ["", f"{r.empty_masks} image(s) had an empty lung mask and were classified raw."]
    return "\n".join(lines) + "\n"


def write_classification_report(
    report: ClassificationReport, folder: str | Path, name: str | None = None
) -> list[Path]:
    """The one writer: ``eval_<name>.json``, ``eval_<name>.md``, ``confusion_<name>.png`` and, with
    calibration, ``reliability_<name>.png`` into ``folder``. Returns the paths written."""

    folder, name = Path(folder), name or report.name
    paths = [folder / f"eval_{name}.json", folder / f"eval_{name}.md", folder / f"confusion_{name}.png"]
    write_json(paths[0], report.to_dict())
    write_text(paths[1], report.markdown())
    save_figure(
        confusion_figure(report, f"{name}, {report.mode}: accuracy {report.accuracy:.3f} (n = {report.n})"), paths[2]
    )
    if report.calibration:
        paths.append(folder / f"reliability_{name}.png")
        save_figure(reliability_figure(report.calibration, f"{name}, {report.mode}"), paths[-1])
    return paths


def _avg(preds: torch.Tensor, labels: torch.Tensor, metric: str, average: str, k: int) -> float:
    fn = {"precision": multiclass_precision, "recall": multiclass_recall, "f1": multiclass_f1_score}[metric]
    return fn(preds, labels, num_classes=k, average=average).item() if len(labels) else math.nan


def _auroc(probs: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """One-vs-rest AUROC per class; NaN for a class with no positive or no negative image."""
    if len(labels) == 0:
        return torch.full((k,), math.nan)
    with warnings.catch_warnings():  # torchmetrics warns for such a class; it is reported as n/a below
        warnings.filterwarnings("ignore", message="No (positive|negative) samples in targets")
        out = multiclass_auroc(probs.float(), labels, num_classes=k, average=None)
    present = torch.bincount(labels, minlength=k)
    return torch.where((present > 0) & (present < len(labels)), out, torch.tensor(math.nan))


def _fmt(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.3f}"
