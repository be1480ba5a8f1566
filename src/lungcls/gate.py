"""The input gate: before either stage, is this picture a frontal adult chest X-ray, and if not, why?

Every check has a reason a person understands; an image is refused when any holds:

============================= ==========================================================================
``blank``                     (almost) one grey level: nothing to see
``colour``                    a colour picture: more than :attr:`GateConfig.max_colour` of its pixels are
                              coloured (a radiograph is grey, even when saved as RGB)
``aspect``                    width : height outside :attr:`GateConfig.aspect` (detector plates are 14 x 17
                              or 17 x 17 inches, 0.82 to 1.21; crops and borders widen that, not beyond 1 : 2)
``no-lung-fields``            stage 1 finds no lung, or lung over an implausible share of the picture
``inverted``                  stage 1 finds clear lungs only in the inverted picture (MONOCHROME1 shown as
                              is, or a negative)
``rotated-90`` / ``-180`` /   stage 1 finds clear lungs only when the picture is turned by that many degrees
``-270``                      clockwise
``unlike-training-cxrs``      the lung segmenter's encoder features lie further from those of its training
                              CXRs (Mahalanobis distance) than :attr:`GateConfig.threshold`, the 99.5th
                              percentile of its Val CXRs' distances
============================= ==========================================================================

The gate's **score** is that distance over the threshold, plus one per other reason: above 1 is refused. The
distance's mean and precision matrix were fitted on the Train images of the built-in lung segmenter, the
threshold on its Val images (:mod:`lungcls.builtin.package_gate`); the built-in gate is ``gate-covidqu``.
Its limits: the data holds no lateral views and no children, so the gate was not tested on them (lateral views
are likely, but not known, to be refused).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .config import check_values, limits
from .seg.postprocess import FLAG_NO_LUNG, FLAG_TOO_LARGE
from .seg.segmenter import Segmenter

REASONS = {
    "blank": "an (almost) uniform picture",
    "colour": "a colour picture, not a radiograph",
    "aspect": "an aspect ratio no whole chest X-ray has",
    "no-lung-fields": "no lung fields found",
    "inverted": "an inverted (negative) chest X-ray",
    "rotated-90": "a chest X-ray turned by 90 degrees",
    "rotated-180": "a chest X-ray upside down",
    "rotated-270": "a chest X-ray turned by 270 degrees",
    "unlike-training-cxrs": "unlike the chest X-rays the models were trained on",
}
#: the variants stage 1 is run on when the picture itself shows no clear lungs: (reason, transform)
VARIANTS = (
    ("inverted", lambda x: 255 - x),
    ("rotated-90", lambda x: torch.rot90(x, 1, (-2, -1))),  # turning back a picture turned 90 degrees clockwise
    ("rotated-180", lambda x: torch.rot90(x, 2, (-2, -1))),
    ("rotated-270", lambda x: torch.rot90(x, 3, (-2, -1))),
)


@dataclass
class GateConfig:
    """The gate's settings (in the built-in gate's ``config.json``).

    Attributes:
        threshold: Mahalanobis distance above which an image is ``unlike-training-cxrs``.
        max_colour: share of coloured pixels above which a picture is ``colour``.
        aspect: (lowest, highest) width / height.
        min_std: grey-level standard deviation (at the working size) under which a picture is ``blank``.
        min_clear: mean lung probability inside the mask above which stage 1 "finds clear lungs" in a variant.
        shrinkage: share of the identity mixed into the features' covariance before inverting it.
    """

    threshold: float = field(default=1.0, metadata=limits(0.0, 1e9))
    max_colour: float = field(default=0.05, metadata=limits(0.0, 1.0))
    aspect: list[float] = field(default_factory=lambda: [0.5, 2.0], metadata=limits(0.01, 100.0))
    min_std: float = field(default=4.0, metadata=limits(0.0, 255.0))
    min_clear: float = field(default=0.9, metadata=limits(0.0, 1.0))
    shrinkage: float = field(default=0.1, metadata=limits(0.0, 1.0))

    def __post_init__(self) -> None:
        check_values(self)


@dataclass
class GateVerdict:
    """One image's answer from the gate.

    Attributes:
        accepted: a frontal CXR like the training ones, as far as the gate can tell.
        score: distance over threshold, plus one per other reason (above 1: refused).
        distance: the Mahalanobis distance of its features.
        reasons: why it was refused (keys of :data:`REASONS`), empty when accepted.
    """

    accepted: bool
    score: float
    distance: float
    reasons: list[str] = field(default_factory=list)

    def why(self) -> str:
        """The reasons in words, e.g. ``"a colour picture, not a radiograph; no lung fields found"``."""
        return "; ".join(REASONS[r] for r in self.reasons)


def encoder_features(segmenter: Segmenter, images: torch.Tensor) -> torch.Tensor:
    """The lung segmenter's encoder features of uint8 (N, 1, H, W) images: the last two stages, each averaged
    over the picture, float64 (N, F) on the CPU."""
    out = []
    with torch.inference_mode():
        for chunk in images.split(segmenter.batch_size):
            stages = segmenter.model.encoder(segmenter.task.inputs(chunk))
            out.append(torch.cat([s.float().mean(dim=(2, 3)) for s in stages[-2:]], 1).double().cpu())
    return torch.cat(out) if out else torch.empty(0, 0, dtype=torch.float64)


def mahalanobis(features: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """sqrt((x - mean)^T P (x - mean)) per row of ``features`` (N, F)."""
    d = features.double() - mean.double()
    return ((d @ precision.double()) * d).sum(1).clamp_min(0).sqrt()


def fit_distribution(features: torch.Tensor, shrinkage: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and shrunk precision matrix of training features (N, F): the covariance mixed with ``shrinkage`` of
    the identity scaled to its mean variance, so the inverse exists with fewer images than features."""
    x = features.double()
    mean = x.mean(0)
    cov = torch.cov(x.T)
    target = torch.eye(len(mean), dtype=x.dtype) * cov.diagonal().mean()
    return mean, torch.linalg.inv((1 - shrinkage) * cov + shrinkage * target)


class InputGate:
    """The input gate around a lung segmenter: :meth:`check` answers for a batch.

    Args:
        segmenter: the lung segmenter whose encoder the distance is measured on (the one the gate was fitted for).
        cfg: the gate's settings; mean, precision: the fitted distribution of its training CXRs' features.
    """

    def __init__(self, segmenter: Segmenter, cfg: GateConfig, mean: torch.Tensor, precision: torch.Tensor) -> None:
        self.segmenter, self.cfg, self.mean, self.precision = segmenter, cfg, mean, precision

    @classmethod
    def load(cls, name: str = "gate-covidqu", segmenter: Segmenter | None = None, device: str = "auto") -> InputGate:
        """The built-in gate ``name`` (or a folder) with the lung segmenter it was fitted for (checked by SHA-256).

        Raises:
            CheckpointError: no such gate, its files fail the store's checks, or ``segmenter`` is another model.
        """
        from .errors import CheckpointError
        from .store import read_model

        files = read_model(name, "gate")
        cfg = files.section(GateConfig, "gate")
        wanted = files.config["segmenter"]
        segmenter = segmenter or Segmenter.load(wanted["name"], device=device, target="lungs")
        if segmenter.info.get("source", {}).get("sha256") != wanted["sha256"]:
            raise CheckpointError(f"{files.name}: fitted for segmenter {wanted['name']} ({wanted['sha256'][:12]}), "
                                  f"not for {segmenter.info.get('source', {}).get('name')}")  # fmt: skip
        return cls(segmenter, cfg, files.weights["mean"], files.weights["precision"])

    def check(
        self,
        images: torch.Tensor,
        colours: list[float] | None = None,
        sizes: list[tuple[int, int]] | None = None,
        lungs=None,
    ) -> list[GateVerdict]:
        """The verdict on each image.

        Args:
            images: uint8 (N, 1, S, S) at the working size.
            colours: share of coloured pixels of each file (:attr:`lungcls.reader.DecodedImage.colour`); sizes:
                each file's own (height, width). Without them the colour and aspect checks pass.
            lungs: the gate's segmenter's :class:`~lungcls.seg.segmenter.MaskBatch` of ``images`` with
                probabilities, when already computed.
        """
        n = len(images)
        colours, sizes = colours or [0.0] * n, sizes or [(1, 1)] * n
        lungs = lungs if lungs is not None and lungs.probs is not None else self.segmenter.masks(images, keep_probs=True)
        clear = _clear(lungs, self.cfg.min_clear)
        distance = self._distance(images)
        std = images.float().flatten(1).std(1).tolist()
        suspect = [not c or d > SUSPECT * self.cfg.threshold for c, d in zip(clear, distance)]
        turned = self._variants(images, suspect, distance)
        out = []
        for k in range(n):
            h, w = sizes[k]
            reasons = [r for r, bad in (
                ("blank", std[k] < self.cfg.min_std),
                ("colour", colours[k] > self.cfg.max_colour),
                ("aspect", not self.cfg.aspect[0] <= w / h <= self.cfg.aspect[1]),
                ("no-lung-fields", bool({FLAG_NO_LUNG, FLAG_TOO_LARGE} & set(lungs.flags[k])) and not turned[k]),
            ) if bad] + turned[k]  # fmt: skip
            if reasons and "blank" in reasons:
                reasons = ["blank"]  # a uniform picture is nothing else
            far = distance[k] / self.cfg.threshold
            if far > 1 and not turned[k] and reasons != ["blank"]:
                reasons.append("unlike-training-cxrs")
            score = far + sum(r != "unlike-training-cxrs" for r in reasons)
            out.append(GateVerdict(not reasons, float(score), float(distance[k]), reasons))
        return out

    def _distance(self, images: torch.Tensor) -> list[float]:
        return mahalanobis(encoder_features(self.segmenter, images), self.mean, self.precision).tolist()

    def _variants(self, images: torch.Tensor, suspect: list[bool], distance: list[float]) -> list[list[str]]:
        """For each suspect image (lungs not clear, or features near the threshold): the variant (inverted,
        rotated) that looks most like a training CXR, when it has clear lungs, lies within the threshold and
        nearer than the picture itself."""
        found: list[list[str]] = [[] for _ in range(len(images))]
        rows = [k for k, s in enumerate(suspect) if s]
        if not rows:
            return found
        subset, best = images[rows], {k: min(distance[k], self.cfg.threshold) for k in rows}
        for reason, turn in VARIANTS:
            turned = turn(subset)
            ok = _clear(self.segmenter.masks(turned, keep_probs=True), self.cfg.min_clear)
            for k, good, d in zip(rows, ok, self._distance(turned)):
                if good and d < best[k]:
                    found[k], best[k] = [reason], d
        return found


#: pictures whose distance is above this share of the threshold are also tried inverted and turned
SUSPECT = 0.7


def _clear(batch, min_clear: float = 0.9) -> list[bool]:
    """Whether stage 1 found two clear, unflagged lung fields in each image of a :class:`MaskBatch`."""
    m = batch.masks.float()
    confidence = ((batch.probs * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)).tolist()
    return [c >= min_clear and not f for c, f in zip(confidence, batch.flags)]


def gate_summary(verdicts: list[GateVerdict]) -> dict[str, int]:
    """How many images were accepted, refused, and refused for each reason."""
    counts = {"accepted": sum(v.accepted for v in verdicts), "refused": sum(not v.accepted for v in verdicts)}
    for v in verdicts:
        for r in v.reasons:
            counts[r] = counts.get(r, 0) + 1
    return counts


def as_numpy(verdicts: list[GateVerdict]) -> dict[str, np.ndarray]:
    """Scores, distances and decisions as arrays (for evaluations)."""
    return {
        "score": np.array([v.score for v in verdicts]),
        "distance": np.array([v.distance for v in verdicts]),
        "accepted": np.array([v.accepted for v in verdicts]),
    }
