"""Classification metrics (torchmetrics), bootstrap confidence intervals, tables and the confusion-matrix figure."""

from __future__ import annotations

import math
from collections.abc import Sequence
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


def classification_report(
    probs: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    sources: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Everything the reference table and the confusion matrix need, plus CIs and per-source accuracy.

    Args:
        probs: float (N, K) class probabilities; labels: int64 (N,).
        sources: the source set of each image, for per-source accuracy.
        n_boot: bootstrap resamples for the 95% CIs of accuracy and macro F1.

    Returns:
        A JSON-ready dict: per_class (precision, recall, f1, support, specificity, auroc),
        accuracy, macro/weighted averages, confusion (counts and row-normalised), ci95, by_source.
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
    report = {
        "n": n,
        "class_names": list(class_names),
        "per_class": {
            name: {m: float(v[c]) for m, v in per.items()} | {"support": int(support[c])}
            for c, name in enumerate(class_names)
        },
        "accuracy": multiclass_accuracy(preds, labels, average="micro", **args).item(),
        "macro_avg": {m: _avg(preds, labels, m, "macro", k) for m in ("precision", "recall", "f1")},
        "weighted_avg": {m: _avg(preds, labels, m, "weighted", k) for m in ("precision", "recall", "f1")},
        "confusion": confusion.tolist(),
        "confusion_normalized": (confusion / confusion.sum(dim=1, keepdim=True).clamp_min(1)).tolist(),
        "ci95": bootstrap_ci(preds, labels, k, n_boot, seed),
    }
    if sources is not None:
        report["by_source"] = {}
        for src in sorted(set(sources)):
            idx = torch.tensor([i for i, s in enumerate(sources) if s == src])
            report["by_source"][src] = {"n": len(idx), "accuracy": float((preds[idx] == labels[idx]).float().mean())}
    return report


def bootstrap_ci(preds: torch.Tensor, labels: torch.Tensor, k: int, n_boot: int = 1000, seed: int = 0) -> dict:
    """95% percentile-bootstrap intervals of accuracy and macro F1 (images resampled with replacement)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    acc, f1 = [], []
    for _ in range(n_boot):
        idx = torch.from_numpy(rng.integers(0, n, n))
        p, y = preds[idx], labels[idx]
        acc.append(float((p == y).float().mean()))
        f1.append(multiclass_f1_score(p, y, num_classes=k, average="macro").item())
    return {
        "accuracy": [float(np.percentile(acc, 2.5)), float(np.percentile(acc, 97.5))],
        "macro_f1": [float(np.percentile(f1, 2.5)), float(np.percentile(f1, 97.5))],
        "n_boot": n_boot,
    }


def format_markdown(report: dict, title: str = "") -> str:
    """The reference layout (rows per class, accuracy, macro avg, weighted avg) and the extras."""
    n = report["n"]
    lines = [f"### {title}", ""] if title else []
    lines += ["| | precision | recall | f1-score | support |", "|---|---|---|---|---|"]
    for name, m in report["per_class"].items():
        lines.append(f"| {name} | {m['precision']:.2f} | {m['recall']:.2f} | {m['f1']:.2f} | {m['support']} |")
    lines.append(f"| accuracy | | | {report['accuracy']:.2f} | {n} |")
    for key, label in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        a = report[key]
        lines.append(f"| {label} | {a['precision']:.2f} | {a['recall']:.2f} | {a['f1']:.2f} | {n} |")
    ci = report["ci95"]
    lines += [
        "",
        f"95% bootstrap CI ({ci['n_boot']} resamples): accuracy {report['accuracy']:.3f} "
        f"[{ci['accuracy'][0]:.3f}, {ci['accuracy'][1]:.3f}], macro F1 {report['macro_avg']['f1']:.3f} "
        f"[{ci['macro_f1'][0]:.3f}, {ci['macro_f1'][1]:.3f}]",
        "",
        "| | specificity | AUROC (one-vs-rest) |",
        "|---|---|---|",
    ]
    for name, m in report["per_class"].items():
        lines.append(f"| {name} | {m['specificity']:.3f} | {_fmt(m['auroc'])} |")
    names = report["class_names"]
    lines += ["", "Confusion matrix (rows: true, columns: predicted; count, row share):", ""]
    lines += ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, counts, shares in zip(names, report["confusion"], report["confusion_normalized"]):
        lines.append(f"| {name} | " + " | ".join(f"{c} ({s:.2f})" for c, s in zip(counts, shares)) + " |")
    if report.get("by_source"):
        lines += ["", "| source set | images | accuracy |", "|---|---|---|"]
        lines += [f"| {s} | {v['n']} | {v['accuracy']:.3f} |" for s, v in report["by_source"].items()]
    return "\n".join(lines) + "\n"


def plot_confusion(report: dict, path: str | Path, title: str = "") -> None:
    """Counts and row-normalised confusion matrices side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..atomic import atomic_path

    names = report["class_names"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, key, fmt in ((axes[0], "confusion", "{:.0f}"), (axes[1], "confusion_normalized", "{:.2f}")):
        m = np.array(report[key], dtype=float)
        ax.imshow(m if key.endswith("normalized") else m / max(m.max(), 1), cmap="Blues", vmin=0, vmax=1)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(
                    j,
                    i,
                    fmt.format(m[i, j]),
                    ha="center",
                    va="center",
                    color="white" if m[i, j] > 0.6 * m.max() else "black",
                )
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("counts" if key == "confusion" else "share of true class")
    fig.suptitle(title or f"accuracy {report['accuracy']:.3f} (n = {report['n']})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _avg(preds: torch.Tensor, labels: torch.Tensor, metric: str, average: str, k: int) -> float:
    fn = {"precision": multiclass_precision, "recall": multiclass_recall, "f1": multiclass_f1_score}[metric]
    return fn(preds, labels, num_classes=k, average=average).item()


def _auroc(probs: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """One-vs-rest AUROC per class; NaN for a class with no positive or no negative image."""
    out = multiclass_auroc(probs.float(), labels, num_classes=k, average=None)
    present = torch.bincount(labels, minlength=k)
    return torch.where((present > 0) & (present < len(labels)), out, torch.tensor(math.nan))


def _fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"
