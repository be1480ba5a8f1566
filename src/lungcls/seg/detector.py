"""COVID-19 from infection: a threshold on the infected share of the lungs, chosen on Val, and how any score detects
COVID-19 (sensitivity, specificity, AUROC with cluster-bootstrap intervals); and a score that combines two (a
logistic regression fitted on Val), for the classifier and the infection side by side.

    threshold = choose_threshold(val_shares, val_is_covid)
    detection(test_shares, test_is_covid, threshold, clusters)   # {"sensitivity": {"value", "ci95"}, ...}
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..stats import cluster_interval


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (the probability that a positive scores above a negative, ties counting half);
    NaN when one class is absent."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    allv = np.concatenate([pos, neg])
    for v in np.unique(allv):  # mid-ranks for ties
        tied = allv == v
        ranks[tied] = ranks[tied].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def choose_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The threshold (decide positive at ``score >= threshold``) with the highest sensitivity + specificity on these
    scores (Youden's J), halfway between two observed values; among equals, the lowest.

    Raises:
        ValueError: one class is absent.
    """
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    if positive.all() or not positive.any():
        raise ValueError("choosing a threshold needs positive and negative images")
    values = np.unique(scores)
    candidates = np.concatenate([[values[0]], (values[1:] + values[:-1]) / 2, [values[-1] + 1e-9]])
    best, best_j = candidates[0], -1.0
    for t in candidates:
        decided = scores >= t
        j = decided[positive].mean() + (~decided[~positive]).mean()
        if j > best_j + 1e-12:
            best, best_j = t, j
    return float(best)


def detection(
    scores: np.ndarray, positive: np.ndarray, threshold: float, clusters: Sequence | None = None, n_boot: int = 1000
) -> dict[str, dict]:
    """Sensitivity and specificity at ``threshold`` and AUROC, each ``{"value", "ci95"}`` (95% percentile interval
    over cluster-bootstrap resamples of the images; ``clusters``: a cluster id per image, default each its own)."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    decided = scores >= threshold
    clusters = list(range(len(scores))) if clusters is None else list(clusters)

    def sens(i: np.ndarray) -> float:
        p = positive[i]
        return float(decided[i][p].mean()) if p.any() else math.nan

    def spec(i: np.ndarray) -> float:
        n = ~positive[i]
        return float((~decided[i][n]).mean()) if n.any() else math.nan

    def area(i: np.ndarray) -> float:
        return auroc(scores[i], positive[i])

    every = np.arange(len(scores))
    return {
        name: {"value": f(every), "ci95": cluster_interval(f, clusters, n_boot)}
        for name, f in (("sensitivity", sens), ("specificity", spec), ("auroc", area))
    } | {"threshold": threshold, "n": len(scores), "positives": int(positive.sum())}


def fit_combination(features: np.ndarray, positive: np.ndarray, steps: int = 200) -> np.ndarray:
    """Weights of a logistic regression (with intercept, L2 1e-3) of ``positive`` on ``features`` (N, F), fitted by
    Newton's method: the combined score of :func:`combine`."""
    x = np.column_stack([np.ones(len(features)), np.asarray(features, np.float64)])
    y = np.asarray(positive, np.float64)
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (p - y) + 1e-3 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-3 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return w


def combine(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The combined probability of :func:`fit_combination`'s weights for ``features`` (N, F)."""
    x = np.column_stack([np.ones(len(features)), np.asarray(features, np.float64)])
    return 1 / (1 + np.exp(-np.clip(x @ weights, -30, 30)))


def logit(p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """log(p / (1 - p)), with p kept within [eps, 1 - eps]: the feature a probability or share enters
    :func:`fit_combination` as."""
    p = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
    return np.log(p / (1 - p))
