"""Calibrated probabilities: temperature scaling fitted on Val, expected calibration error, reliability bins.

Temperature scaling (Guo et al., ICML 2017) divides the logits by one number T > 0 chosen to
minimise the negative log-likelihood of the validation labels. It changes no prediction (the
argmax is the same), only how confident the probabilities are. lungcls fits T after training,
saves it in the classifier's config, and applies it wherever probabilities are shown.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..defaults import TEMPERATURE_BOUNDS

N_BINS = 15


def calibrated(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Calibrated probabilities float32 (N, K): ``softmax(logits / temperature)``. Every probability lungcls shows
    (reports, CSVs, the ONNX export's head) is computed here."""
    return torch.softmax(logits.float() / temperature, dim=1)


def fit_temperature(
    logits: torch.Tensor, labels: torch.Tensor, bounds: tuple[float, float] = TEMPERATURE_BOUNDS
) -> float:
    """The T in ``bounds`` that minimises the NLL of ``softmax(logits / T)`` on ``labels``.

    A golden-section search on log T (the NLL is unimodal in log T), to 1e-4 relative precision.

    Args:
        logits: float (N, K); labels: int64 (N,).
    """
    if len(labels) == 0:
        return 1.0
    logits, labels = logits.double(), labels.long()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), labels))

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    while hi - lo > 1e-4:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return math.exp((lo + hi) / 2)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> float:
    """Top-label ECE (torchmetrics, equal-width bins, L1): the confidence-weighted gap between confidence and
    accuracy."""
    from torchmetrics.functional.classification import multiclass_calibration_error  # a slow import: only here

    if len(labels) == 0:
        return math.nan
    return float(
        multiclass_calibration_error(probs.float(), labels, num_classes=probs.shape[1], n_bins=n_bins, norm="l1")
    )


def reliability(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> dict:
    """Per confidence bin: mean confidence, accuracy and count (the points of a reliability diagram)."""
    conf, pred = probs.float().max(dim=1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    which = torch.bucketize(conf, edges[1:-1], right=True)
    out = {"edges": edges.tolist(), "confidence": [], "accuracy": [], "count": []}
    for b in range(n_bins):
        sel = which == b
        n = int(sel.sum())
        out["count"].append(n)
        out["confidence"].append(float(conf[sel].mean()) if n else math.nan)
        out["accuracy"].append(float(correct[sel].mean()) if n else math.nan)
    return out


def calibration_summary(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> dict:
    """ECE and reliability bins before (T = 1) and after temperature scaling."""
    before, after = calibrated(logits, 1.0), calibrated(logits, temperature)
    return {
        "temperature": temperature,
        "ece_before": expected_calibration_error(before, labels),
        "ece_after": expected_calibration_error(after, labels),
        "reliability_before": reliability(before, labels),
        "reliability_after": reliability(after, labels),
    }
