"""The statistics of lungcls's reports and of the masked-vs-raw study, each small and tested against known values.

- :func:`bootstrap_indices`: resampling units for percentile bootstraps: patients where ids exist
  (all images of a drawn patient come along), else images.
- :func:`mcnemar`: the exact McNemar test of two classifiers on the same images.
- :func:`holm`: Holm's step-down correction of a family of p-values (valid under any dependence).
- :func:`seed_spread`: mean, standard deviation (ddof=1) and Student-t interval over training seeds.
- :func:`two_level_bootstrap`: an interval of a seed-averaged score that holds both sources of
  variation, the test set (patients resampled) and the training seed (seeds resampled).
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
