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
``unlike-training-cxrs``      the lung segmenter's own feature statistics are unlike those it learned on its
                              training CXRs: :func:`feature_distance` over :attr:`GateConfig.threshold`, the
                              99.5th percentile of its Val CXRs' distances
============================= ==========================================================================

The gate's **score** is that distance over the threshold, plus one per other reason: above 1 is refused.

The distance needs no fitted statistics of its own: it compares the activations entering each batch-norm layer
of the segmenter's decoder (per channel, their mean and spread over the picture) with the running mean and
variance that layer kept while the segmenter trained, i.e. with its training CXRs. The only number fitted is
the threshold, one float, chosen on the segmenter's Val images when stage 1 finishes training
(:func:`calibrate`) and kept in the segmenter's ``config.json`` (section ``gate``); the built-in lung segmenter
carries one (``scripts/builtin_gate.sh`` reproduces it). Its limits: the data holds no lateral views and no
children, so the gate was not tested on them (lateral views are likely, but not known, to be refused).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from .config import check_values, from_dict, limits, to_dict
from .errors import CheckpointError, ConfigError, LungclsError
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
    """The gate's settings (section ``gate`` of its lung segmenter's ``config.json``).

    Attributes:
        threshold: :func:`feature_distance` above which an image is ``unlike-training-cxrs``.
        max_colour: share of coloured pixels above which a picture is ``colour``.
        aspect: (lowest, highest) width / height.
        min_std: grey-level standard deviation (at the working size) under which a picture is ``blank``.
        min_clear: mean lung probability inside the mask above which stage 1 "finds clear lungs" in a variant.
    """

    threshold: float = field(default=1.0, metadata=limits(0.0, 1e9))
    max_colour: float = field(default=0.05, metadata=limits(0.0, 1.0))
    aspect: list[float] = field(default_factory=lambda: [0.5, 2.0], metadata=limits(0.01, 100.0))
    min_std: float = field(default=4.0, metadata=limits(0.0, 255.0))
    min_clear: float = field(default=0.9, metadata=limits(0.0, 1.0))

    def __post_init__(self) -> None:
        check_values(self)


@dataclass
class GateVerdict:
    """One image's answer from the gate.

    Attributes:
        accepted: a frontal CXR like the training ones, as far as the gate can tell.
        score: distance over threshold, plus one per other reason (above 1: refused).
        distance: its :func:`feature_distance`.
        reasons: why it was refused (keys of :data:`REASONS`), empty when accepted.
    """

    accepted: bool
    score: float
    distance: float
    reasons: list[str] = field(default_factory=list)

    def why(self) -> str:
        """The reasons in words, e.g. ``"a colour picture, not a radiograph; no lung fields found"``."""
        return "; ".join(REASONS[r] for r in self.reasons)


def normalised_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The batch-norm layers of a U-Net's decoder, whose running statistics :func:`feature_distance` reads."""
    return [m for n, m in model.named_modules() if n.startswith("decoder") and isinstance(m, _BatchNorm)]


def feature_distance(segmenter: Segmenter, images: torch.Tensor) -> torch.Tensor:
    """How unlike its training CXRs each image looks to the segmenter, float64 (N,) on the CPU.

    For each batch-norm layer of the decoder and each channel: the squared z-score of the activations' mean over
    the picture against the layer's running mean (in running standard deviations), plus the squared log-ratio of
    their variance to the running variance; averaged over channels, then over layers. Near 0 for CXRs like the
    training ones (the built-in segmenter: median 0.06 on its Val images).

    Raises:
        LungclsError: the segmenter's decoder has no batch-norm layer.
    """
    layers = normalised_layers(segmenter.model)
    if not layers:
        raise LungclsError("the input gate needs a lung segmenter with batch-norm layers in its decoder")
    found: list[torch.Tensor] = []

    def measure(layer, inputs, _):
        x, var = inputs[0].float(), layer.running_var.float() + layer.eps
        shift = (x.mean((2, 3)) - layer.running_mean.float()).pow(2) / var
        spread = torch.log((x.var((2, 3)) + layer.eps) / var).pow(2)
        found.append((shift + spread).mean(1))

    hooks = [layer.register_forward_hook(measure) for layer in layers]
    out = []
    try:
        with torch.inference_mode():
            for chunk in images.split(segmenter.batch_size):
                found.clear()
                segmenter.model(segmenter.task.inputs(chunk))
                out.append(torch.stack(found).mean(0).double().cpu())
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)


#: the percentile of the Val CXRs' distances the threshold is set to
QUANTILE = 99.5
#: fewest Val images that percentile is estimated from (below 1 / (1 - 0.995) = 200 it would be the largest one)
MIN_VAL_IMAGES = 200


def calibrate(segmenter: Segmenter, val_images: torch.Tensor) -> dict | None:
    """The ``gate`` section for a lung segmenter's config: the threshold at the :data:`QUANTILE` of its Val images'
    distances (uint8 (N, 1, S, S)), with how it was fitted; None when the segmenter has no batch-norm decoder or
    there are fewer than :data:`MIN_VAL_IMAGES` Val images (such a segmenter runs without a gate)."""
    if not normalised_layers(segmenter.model) or len(val_images) < MIN_VAL_IMAGES:
        return None
    val = feature_distance(segmenter, val_images).numpy()
    cfg = GateConfig(threshold=float(np.percentile(val, QUANTILE)))
    fitted = {"val_images": len(val), "quantile": QUANTILE, "median": float(np.median(val)), "max": float(val.max())}
    return to_dict(cfg) | {"fitted": fitted}


class InputGate:
    """The input gate around a lung segmenter: :meth:`check` answers for a batch.

    Args:
        segmenter: the lung segmenter whose features the distance is measured on.
        cfg: the gate's settings, with the threshold calibrated for that segmenter.
    """

    def __init__(self, segmenter: Segmenter, cfg: GateConfig) -> None:
        self.segmenter, self.cfg = segmenter, cfg

    @classmethod
    def for_segmenter(cls, segmenter: Segmenter) -> InputGate:
        """The gate calibrated for ``segmenter`` (the ``gate`` section of its config, written when it was trained).

        Raises:
            CheckpointError: the segmenter carries no gate (a lung segmenter trained before lungcls had one, or an
                infection segmenter).
        """
        section = dict(segmenter.info.get("gate") or {})
        name = segmenter.info.get("source", {}).get("name", "this segmenter")
        if not section or segmenter.cfg.target != "lungs":
            raise CheckpointError(f"{name}: carries no calibrated input gate (see lungcls.gate.calibrate)")
        section.pop("fitted", None)
        try:
            return cls(segmenter, from_dict(GateConfig, section, "gate."))
        except ConfigError as e:
            raise CheckpointError(f"{name}: {e}") from None

    @classmethod
    def load(cls, segmenter: str | Segmenter | None = None, device: str = "auto") -> InputGate:
        """The gate of a lung segmenter (a :class:`Segmenter`, its folder, a bundle or a built-in name; default: the
        built-in one). Raises :class:`CheckpointError` when it carries none."""
        from . import builtin

        if not isinstance(segmenter, Segmenter):
            segmenter = Segmenter.load(segmenter or builtin.DEFAULT, device=device, target="lungs")
        return cls.for_segmenter(segmenter)

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
        return feature_distance(self.segmenter, images).tolist()

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
