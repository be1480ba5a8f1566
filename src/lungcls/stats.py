"""The statistics of lungcls's reports and of the masked-vs-raw study, each small and tested against known values.

- :func:`bootstrap_indices`: resampling units for percentile bootstraps: patients where ids exist
  (all images of a drawn patient come along), else images.
- :func:`mcnemar`: the exact McNemar test of two classifiers on the same images.
- :func:`holm`: Holm's step-down correction of a family of p-values (valid under any dependence).
- :func:`seed_spread`: mean, standard deviation (ddof=1) and Student-t interval over training seeds.
- :func:`two_level_bootstrap`: an interval of a seed-averaged score that holds both sources of
  variation, the test set (patients resampled) and the training seed (seeds resampled).
- The study's evidence: :func:`balanced_accuracy`; :func:`cluster_draws` and :func:`cluster_interval` (clusters:
  a patient, or a group of duplicated pictures); :func:`hierarchical_difference` (the two-level paired bootstrap
  of a masked - raw difference over seeds and clusters) with :func:`noninferiority_p`; :func:`detectable_difference`
  (power); :func:`calibration_scores` (ECE, class-wise ECE, Brier, NLL).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as sps


def bootstrap_indices(
    n: int, n_boot: int, seed: int = 0, groups: Sequence[str] | None = None
) -> tuple[list[np.ndarray], str]:
    """``n_boot`` resamples of ``range(n)`` with replacement, by patient when ``groups`` gives ids.

    Args:
        groups: an id per item; items with an empty id count as patients of their own.

    Returns:
        (index arrays, unit): unit ``"patient"`` when at least one id is shared by two items, else ``"image"``.
    """
    rng = np.random.default_rng(seed)
    if n == 0:
        return [], "image"
    members = _members(n, groups)
    if len(members) == n:  # every item its own unit
        return [rng.integers(0, n, n) for _ in range(n_boot)], "image"
    draws = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(members), len(members))
        draws.append(np.concatenate([members[g] for g in pick]))
    return draws, "patient"


def _members(n: int, groups: Sequence[str] | None) -> list[np.ndarray]:
    if groups is None:
        return [np.array([i]) for i in range(n)]
    index: dict[str, list[int]] = {}
    out: list[list[int]] = []
    for i, g in enumerate(groups):
        if not g:
            out.append([i])
        elif g in index:
            index[g].append(i)
        else:
            index[g] = [i]
            out.append(index[g])
    return [np.array(m) for m in out]


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact McNemar test of two classifiers' correctness on the same images.

    Returns:
        {"a_only": images only A got right, "b_only": only B, "p_value": two-sided exact binomial p}.
    """
    a_only = int(np.sum(correct_a & ~correct_b))
    b_only = int(np.sum(~correct_a & correct_b))
    p = sps.binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": float(p)}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given (reject at level a where adjusted p <= a)."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def seed_spread(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean, std (ddof=1) and the Student-t interval of the mean over training seeds (NaN interval for one seed)."""
    v = np.asarray(values, dtype=float)
    mean = float(v.mean()) if v.size else math.nan
    if v.size < 2:
        return {"mean": mean, "std": math.nan, "ci": [math.nan, math.nan], "n": int(v.size)}
    std = float(v.std(ddof=1))
    half = float(sps.t.ppf(0.5 + level / 2, v.size - 1)) * std / math.sqrt(v.size)
    return {"mean": mean, "std": std, "ci": [mean - half, mean + half], "n": int(v.size)}


def two_level_bootstrap(
    correct: np.ndarray,
    score: Callable[[np.ndarray], float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> list[float]:
    """95% interval of a seed-averaged score with seeds and test patients both resampled.

    Args:
        correct: (S, N) per seed and test image, e.g. 1 where the prediction was right.
        score: maps an (S', N') slice to a number (default: the mean, i.e. seed-averaged accuracy).
        groups: a patient id per test image (see :func:`bootstrap_indices`).
    """
    correct = np.asarray(correct)
    s = correct.shape[0]
    score = score or (lambda a: float(a.mean()))
    rng = np.random.default_rng(seed + 1)
    draws, _ = bootstrap_indices(correct.shape[1], n_boot, seed, groups)
    values = [score(correct[rng.integers(0, s, s)][:, idx]) for idx in draws]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if values else [math.nan] * 2


# -- the study's evidence (issue: a primary endpoint, clusters, seeds, calibration and power) ------------------------


def balanced_accuracy(pred: np.ndarray, labels: np.ndarray, k: int | None = None) -> float:
    """Mean recall over the classes present in ``labels`` (a class absent from them does not count)."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    present = np.unique(labels) if k is None else [c for c in range(k) if np.any(labels == c)]
    return float(np.mean([np.mean(pred[labels == c] == c) for c in present])) if len(present) else math.nan


def cluster_draws(clusters: Sequence, n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n_boot`` cluster-bootstrap resamples of the items: whole clusters drawn with replacement.

    Args:
        clusters: a cluster id per item (a patient, a group of duplicated pictures, or the item itself).
    """
    members = _members(len(clusters), [str(c) for c in clusters])
    return [np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))]) for _ in range(n_boot)]


def hierarchical_difference(
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    labels: np.ndarray,
    clusters: Sequence,
    metric: Callable[[np.ndarray, np.ndarray], float] = balanced_accuracy,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """The difference B - A of a seed-averaged metric, with an interval that counts both the training seed and the
    test set: a two-level paired bootstrap.

    Each draw resamples A's seeds and B's seeds (independently: seed k of A and of B are separate trainings), and the
    test clusters (once, shared by A and B: the comparison is paired on the same images); the metric is computed per
    drawn seed on the drawn images and averaged over the drawn seeds.

    Args:
        pred_a, pred_b: predicted classes (S_a, N) and (S_b, N), one row per training seed, on the same test images.
        labels: the true class per image (N,); clusters: a cluster id per image (see :func:`cluster_draws`).
        metric: (predictions (N',), labels (N',)) -> number; default balanced accuracy.

    Returns:
        {"difference": on all seeds and images, "ci95": percentile interval, "draws": the bootstrap differences,
        "seeds": (S_a, S_b), "clusters": number of clusters, "n": images}.
    """
    pred_a, pred_b, labels = np.atleast_2d(pred_a), np.atleast_2d(pred_b), np.asarray(labels)
    rng = np.random.default_rng(seed)

    def mean_metric(pred: np.ndarray, rows: np.ndarray, idx: np.ndarray) -> float:
        return float(np.mean([metric(pred[r, idx], labels[idx]) for r in rows]))

    every = np.arange(len(labels))
    point = mean_metric(pred_b, np.arange(len(pred_b)), every) - mean_metric(pred_a, np.arange(len(pred_a)), every)
    diffs = []
    for idx in cluster_draws(clusters, n_boot, rng):
        ra, rb = rng.integers(0, len(pred_a), len(pred_a)), rng.integers(0, len(pred_b), len(pred_b))
        diffs.append(mean_metric(pred_b, rb, idx) - mean_metric(pred_a, ra, idx))
    d = np.asarray(diffs)
    return {"difference": point, "ci95": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))],
            "draws": d, "seeds": (len(pred_a), len(pred_b)), "clusters": len(set(map(str, clusters))),
            "n": len(labels)}  # fmt: skip


def noninferiority_p(draws: np.ndarray, margin: float) -> float:
    """One-sided bootstrap p-value of "B - A <= -margin" (B worse than A by the margin or more) against "B is not
    worse by that much": the share of draws at or below ``-margin``, counted with the +1 correction."""
    d = np.asarray(draws, dtype=float)
    return float((np.sum(d <= -abs(margin)) + 1) / (d.size + 1))


def detectable_difference(n: int, discordance: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest accuracy difference a paired comparison on ``n`` test images detects with the given power
    (two-sided level ``alpha``), when a share ``discordance`` of the images is right under one classifier only
    (McNemar, normal approximation: (z_{1-alpha/2} + z_power) * sqrt(discordance / n))."""
    if n <= 0:
        return math.nan
    return float((sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)) * math.sqrt(discordance / n))


def calibration_scores(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, float]:
    """Expected calibration error (top class, equal-width bins), class-wise ECE (mean over classes of each class's
    one-vs-rest ECE), Brier score (mean squared error of the probability vector) and negative log-likelihood."""
    probs, labels = np.asarray(probs, dtype=float), np.asarray(labels)
    n, k = probs.shape
    onehot = np.eye(k)[labels]

    def ece(conf: np.ndarray, hit: np.ndarray) -> float:
        edges = np.linspace(0, 1, bins + 1)
        which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
        return float(sum(abs(conf[which == b].mean() - hit[which == b].mean()) * np.mean(which == b)
                         for b in range(bins) if np.any(which == b)))  # fmt: skip

    top = probs.argmax(1)
    return {
        "ece": ece(probs.max(1), (top == labels).astype(float)),
        "classwise_ece": float(np.mean([ece(probs[:, c], onehot[:, c]) for c in range(k)])),
        "brier": float(np.mean(np.sum((probs - onehot) ** 2, axis=1))),
        "nll": float(-np.mean(np.log(np.clip(probs[np.arange(n), labels], 1e-12, 1.0)))),
    }


def cluster_interval(
    score: Callable[[np.ndarray], float], clusters: Sequence, n_boot: int = 1000, seed: int = 0
) -> list[float]:
    """95% percentile interval of ``score(indices)`` over cluster-bootstrap resamples of the items (resamples where
    the score is undefined, NaN, e.g. an AUROC without negatives, are left out)."""
    rng = np.random.default_rng(seed)
    values = np.array([score(idx) for idx in cluster_draws(clusters, n_boot, rng)], dtype=np.float64)
    values = values[~np.isnan(values)]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if len(values) else [math.nan] * 2
