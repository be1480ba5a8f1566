"""Figures people would rather look at than read: training curves and lung-outline grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_curves(histories: dict[str, list[dict]], path: str | Path, title: str = "") -> None:
    """Training loss and validation loss/metric per epoch, one column per run.

    Args:
        histories: {run name: history records from ``fit``} (keys ``train_loss``, ``val_loss``, ``val_*``).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(histories), figsize=(4.2 * len(histories), 6), squeeze=False)
    for col, (name, hist) in enumerate(histories.items()):
        epochs = [r["epoch"] for r in hist]
        ax = axes[0, col]
        ax.plot(epochs, [r["train_loss"] for r in hist], label="train")
        if "val_loss" in hist[0]:
            ax.plot(epochs, [r["val_loss"] for r in hist], label="validation")
        ax.set_title(f"{name}: loss")
        ax.set_xlabel("epoch")
        ax.legend()
        ax = axes[1, col]
        for key in ("val_dice", "val_accuracy", "val_macro_f1"):
            if key in hist[0]:
                ax.plot(epochs, [r[key] for r in hist], label=key[4:])
        ax.set_ylim(0, 1)
        ax.set_title(f"{name}: validation")
        ax.set_xlabel("epoch")
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def outline_grid(
    images: Sequence[np.ndarray],
    predicted: Sequence[np.ndarray],
    truth: Sequence[np.ndarray | None],
    titles: Sequence[str],
    path: str | Path,
    columns: int = 6,
    title: str = "",
) -> None:
    """A grid of CXRs with the predicted lung outline (green) and the true one (red) where known."""
    plt = _pyplot()
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.5 * rows), squeeze=False)
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
    _save(fig, path)


def _save(fig, path: str | Path) -> None:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
