"""Shortcut controls for the masked-vs-raw study: what can a simple model tell from each part of the picture?

A probe is a multinomial logistic regression (L2, fitted with L-BFGS) on 32 x 32 thumbnails, standardised on Train.
Four inputs, each from the same images and lung masks:

- ``whole``: the picture;
- ``inside``: the lungs only (outside set to 0), what a masked classifier sees;
- ``outside``: everything but the lungs;
- ``outline``: the lung mask alone (its shape and position, no pixel of the picture).

If ``outside`` or ``outline`` tell the class about as well as ``whole``, masked inputs still carry a shortcut:
the mask's shape and position, or what it leaves. The source probe asks the same of the source set within one
class (where a class comes from two or more sources): above chance, the picture says where it was taken.

Seeds: each seed fits on a bootstrap resample of the Train clusters (patients or duplicated pictures); the interval
resamples seeds and Test clusters (:func:`lungcls.stats.two_level_bootstrap`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lungcls.stats import balanced_accuracy, cluster_draws, seed_spread, two_level_bootstrap

THUMB = 32
INPUTS = ("whole", "inside", "outside", "outline")


def thumbnails(images: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """uint8 (N, S, S) images and {0, 1} masks (memory-maps too, read in pieces) -> float (N, 32*32) per probe input."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in INPUTS}
    for start in range(0, len(images), 512):
        x = torch.from_numpy(np.asarray(images[start : start + 512], dtype=np.float32) / 255)[:, None]
        m = torch.from_numpy(np.asarray(masks[start : start + 512]) > 0).float()[:, None]
        parts = {"whole": x, "inside": x * m, "outside": x * (1 - m), "outline": m}
        for k, v in parts.items():
            out[k].append(F.adaptive_avg_pool2d(v, THUMB).flatten(1).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int, l2: float = 1e-3) -> np.ndarray:
    """Predicted classes of ``test_x`` by a logistic regression fitted on (``train_x``, ``train_y``)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a = torch.from_numpy((train_x - mean) / std).float()
    b = torch.from_numpy((test_x - mean) / std).float()
    y = torch.from_numpy(np.asarray(train_y)).long()
    w = torch.zeros(a.shape[1], k, requires_grad=True)
    bias = torch.zeros(k, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + bias, y) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (b @ w + bias).argmax(1).numpy()


def probe(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, clusters: list[str], k: int,
          seeds: int = 3, n_boot: int = 1000) -> dict:  # fmt: skip
    """One probe: ``seeds`` fits on bootstrap resamples of the Train clusters, each tested on Test.

    Returns:
        balanced accuracy per seed (mean, std, t-interval), accuracy with the interval over seeds and Test clusters,
        and chance (the largest class's share of Test, and 1/k).
    """
    rng = np.random.default_rng(0)
    train_clusters = [clusters[i] for i in train]
    preds = []
    for s in range(seeds):
        pick = train if s == 0 else train[cluster_draws(train_clusters, 1, rng)[0]]  # seed 0: Train as it is
        preds.append(fit_predict(x[pick], y[pick], x[test], k))
    preds = np.stack(preds)
    correct = preds == y[test]
    majority = max(np.mean(y[test] == c) for c in np.unique(y[test]))
    return {
        "balanced_accuracy": seed_spread([balanced_accuracy(p, y[test]) for p in preds]),
        "accuracy": float(correct.mean()),
        "accuracy_ci": two_level_bootstrap(correct, n_boot=n_boot, groups=[clusters[i] for i in test]),
        "chance_majority": float(majority), "chance_uniform": 1 / len(np.unique(y[test])), "n_test": int(len(test)),
    }  # fmt: skip


def class_probes(images, masks, labels, train, test, clusters, k, seeds=3, n_boot=1000) -> dict:  # noqa: ANN001
    """The four class probes (see the module's docstring)."""
    parts = thumbnails(images, masks)
    return {name: probe(parts[name], labels, train, test, clusters, k, seeds, n_boot) for name in INPUTS}


def source_probes(images, masks, labels, sources, train, test, clusters, class_names, seeds=3, n_boot=1000) -> dict:  # noqa: ANN001
    """Within each class that comes from two or more sources (in Train and in Test): the source set from the whole
    picture and from the lungs only."""
    parts = thumbnails(images, masks)
    out = {}
    for c, name in enumerate(class_names):
        tr, te = train[labels[train] == c], test[labels[test] == c]
        names = sorted(set(sources[tr]) & set(sources[te]))
        if len(names) < 2:
            out[name] = {"skipped": f"{name}: fewer than two sources in both Train and Test"}
            continue
        code = np.array([names.index(s) if s in names else -1 for s in sources])
        tr, te = tr[code[tr] >= 0], te[code[te] >= 0]
        out[name] = {"sources": names,
                     **{part: probe(parts[part], code, tr, te, clusters, len(names), seeds, n_boot)
                        for part in ("whole", "inside")}}  # fmt: skip
    return out
