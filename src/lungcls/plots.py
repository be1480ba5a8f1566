"""Figures people would rather look at than read: training curves, lung-outline grids, confusion matrices,
reliability diagrams.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so drawing never
touches the process's matplotlib backend (a notebook keeps its own); :func:`save_figure` writes one.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure

from .atomic import write_bytes


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> None:
    """Write ``fig`` as PNG, atomically."""
    write_bytes(path, figure_png(fig, dpi))


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """``fig`` as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def curves_figure(histories: dict[str, list[dict]], title: str = "") -> Figure:
    """Training loss and validation loss/metric per epoch, one column per run.

    Args:
        histories: {run name: history records from ``fit``} (keys ``train_loss``, ``val_loss``, ``val_*``).
    """
    fig = Figure(figsize=(4.2 * max(1, len(histories)), 6))
    axes = fig.subplots(2, max(1, len(histories)), squeeze=False)
    for col, (name, hist) in enumerate(histories.items()):
        epochs = [r["epoch"] for r in hist]
        ax = axes[0, col]
        ax.plot(epochs, [r["train_loss"] for r in hist], label="train")
        if hist and "val_loss" in hist[0]:
            ax.plot(epochs, [r["val_loss"] for r in hist], label="validation")
        ax.set_title(f"{name}: loss")
        ax.set_xlabel("epoch")
        ax.legend()
        ax = axes[1, col]
        for key in ("val_dice", "val_accuracy", "val_macro_f1"):
            if hist and key in hist[0]:
                ax.plot(epochs, [r[key] for r in hist], label=key[4:])
        ax.set_ylim(0, 1)
        ax.set_title(f"{name}: validation")
        ax.set_xlabel("epoch")
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def outline_grid(
    images: Sequence[np.ndarray],
    predicted: Sequence[np.ndarray | None],
    truth: Sequence[np.ndarray | None],
    titles: Sequence[str],
    columns: int = 6,
    title: str = "",
) -> Figure:
    """A grid of CXRs with the predicted lung outline (green) and the true one (red) where known."""
    rows = max(1, -(-len(images) // columns))
    fig = Figure(figsize=(2.3 * columns, 2.5 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, pred, true, text in zip(axes.ravel(), images, predicted, truth, titles):
        picture = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        for mask, colour in ((true, (220, 40, 40)), (pred, (40, 220, 40))):
            if mask is not None:
                contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                cv2.drawContours(picture, contours, -1, colour, 1)
        ax.imshow(picture)
        ax.set_title(text, fontsize=8)
    fig.suptitle(title or "green: predicted lungs, red: ground truth")
    fig.tight_layout()
    return fig


def confusion_figure(report, title: str = "") -> Figure:
    """Counts and row-normalised confusion matrices side by side (of a
    :class:`~lungcls.cls.report.ClassificationReport`)."""
    names = report.class_names
    fig = Figure(figsize=(10, 4.2))
    axes = fig.subplots(1, 2)
    for ax, m, fmt, sub in (
        (axes[0], report.confusion, "{:.0f}", "counts"),
        (axes[1], report.confusion_normalized, "{:.2f}", "share of true class"),
    ):
        m = np.array(m, dtype=float)
        shown = m if sub != "counts" else m / max(m.max(), 1)
        ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(
                    j, i, fmt.format(m[i, j]), ha="center", va="center", color="white" if shown[i, j] > 0.6 else "black"
                )
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(sub)
    fig.suptitle(title or f"accuracy {report.accuracy:.3f} (n = {report.n})")
    fig.tight_layout()
    return fig


def reliability_figure(calibration: dict, title: str = "") -> Figure:
    """Reliability diagram before and after temperature scaling (accuracy against confidence per bin)."""
    fig = Figure(figsize=(5, 4.6))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfectly calibrated")
    for key, label in (("before", "before"), ("after", f"after (T = {calibration['temperature']:.2f})")):
        r = calibration[f"reliability_{key}"]
        pts = [(c, a) for c, a, n in zip(r["confidence"], r["accuracy"], r["count"]) if n]
        if pts:
            c, a = zip(*pts)
            ax.plot(c, a, marker="o", label=f"{label}: ECE {calibration[f'ece_{key}']:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or "reliability")
    fig.tight_layout()
    return fig
