"""Comparing classifiers on the same test images: seed-averaged bootstrap CIs, paired differences, McNemar."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import binomtest
from torchmetrics.functional.classification import multiclass_f1_score


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact McNemar test of two classifiers' correctness on the same images.

    Returns:
        {"a_only": images only A got right, "b_only": only B, "p_value": two-sided exact binomial p}.
    """
    a_only = int(np.sum(correct_a & ~correct_b))
    b_only = int(np.sum(~correct_a & correct_b))
    p = binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": float(p)}


def _scores(preds: np.ndarray, labels: np.ndarray, k: int) -> tuple[float, float]:
    """Accuracy and macro F1 averaged over seeds; preds (S, N)."""
    y = torch.from_numpy(labels)
    acc = float((preds == labels[None]).mean())
    f1 = float(
        np.mean([multiclass_f1_score(torch.from_numpy(p), y, num_classes=k, average="macro").item() for p in preds])
    )
    return acc, f1


def paired_bootstrap(
    preds: dict[str, np.ndarray], labels: np.ndarray, k: int, reference: str = "raw", n_boot: int = 1000, seed: int = 0
) -> dict:
    """95% CIs of seed-averaged accuracy and macro F1 per mode, and of each mode's difference to ``reference``.

    Every resample draws the same test images for all modes and seeds (a paired bootstrap).

    Args:
        preds: {mode: int (S, N) predicted classes, one row per seed}, on the same N test images.
        labels: int (N,) true classes.
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    draws: dict[str, list[tuple[float, float]]] = {m: [] for m in preds}
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        for m, p in preds.items():
            draws[m].append(_scores(p[:, idx], labels[idx], k))
    out: dict = {"n_boot": n_boot, "modes": {}, "vs_" + reference: {}}
    for m, d in draws.items():
        a = np.array(d)
        out["modes"][m] = {"accuracy": _ci(a[:, 0]), "macro_f1": _ci(a[:, 1])}
        if m != reference and reference in draws:
            diff = a - np.array(draws[reference])
            point = np.subtract(_scores(preds[m], labels, k), _scores(preds[reference], labels, k))
            out["vs_" + reference][m] = {
                "accuracy_diff": float(point[0]), "accuracy_diff_ci": _ci(diff[:, 0]),
                "macro_f1_diff": float(point[1]), "macro_f1_diff_ci": _ci(diff[:, 1]),
            }  # fmt: skip
    return out


def _ci(values: np.ndarray) -> list[float]:
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
