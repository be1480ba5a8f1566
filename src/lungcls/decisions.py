"""What lungcls does with each image: answer, answer with a flag, fall back to the raw classifier, abstain, or
refuse. One policy, chosen by the user (``Pipeline(..., policy=...)``, ``--on-doubtful``, ``--abstain-below``,
``--no-gate``), and one column that says what happened and why (``decision``, ``decision_reason``).

In order, for each image that could be read:

1. **refused**: the input gate (:mod:`lungcls.gate`) says it is no frontal CXR like the training ones (the
   reason is the gate's); no class is given.
2. **doubtful lungs** (masked modes only: the classifier sees what the mask leaves): stage 1 flagged the mask, or
   its estimated Dice (:func:`lungcls.seg.segmenter.expected_dice`) is under ``min_dice_estimate``. Then, by
   ``doubtful``: ``flag`` answers and says so (**flagged**), ``abstain`` gives no class (**abstained**), ``raw``
   answers with the raw classifier beside it (**raw-fallback**; needs one).
3. **abstained**: the top calibrated probability is under ``abstain_below``.
4. otherwise **answered**.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .config import check_values, limits

DOUBTFUL = ("flag", "abstain", "raw")
#: an estimated Dice under this makes the lungs doubtful: the cut-off that flags masks with a true Dice under 0.9
#: on covidqu-infseg Val (benchmarks/results/mask_quality.md)
MIN_DICE_ESTIMATE = 0.969


@dataclass
class DecisionPolicy:
    """The user's choices (see the module's docstring).

    Attributes:
        doubtful: ``flag``, ``abstain`` or ``raw``: what a masked-mode pipeline does with doubtful lungs.
        abstain_below: give no class when the top calibrated probability is under this (None: always answer).
        min_dice_estimate: lungs whose mask's estimated Dice is under this are doubtful.
        gate: run the input gate (when the pipeline has one).
    """

    doubtful: str = field(default="flag", metadata=limits(choices=DOUBTFUL))
    abstain_below: float | None = field(default=None, metadata=limits(0.0, 1.0))
    min_dice_estimate: float = field(default=MIN_DICE_ESTIMATE, metadata=limits(0.0, 1.0))
    gate: bool = True

    def __post_init__(self) -> None:
        check_values(self)


def doubtful_lungs(flags: list[str], dice_estimate: float, min_dice_estimate: float) -> str | None:
    """Why the lungs are doubtful (their flags, or a low estimated Dice), or None."""
    why = list(flags)
    if not math.isnan(dice_estimate) and dice_estimate < min_dice_estimate:
        why.append(f"estimated Dice {dice_estimate:.3f} < {min_dice_estimate:.2f}")
    return ", ".join(why) or None


def decide(
    policy: DecisionPolicy, confidence: float, refused: str | None, doubtful: str | None, masked: bool
) -> tuple[str, str]:
    """(decision, reason) for one image (see the module's docstring).

    Args:
        confidence: the top calibrated probability of the classifier that answers (the raw one after a fallback).
        refused: the gate's reason, or None; doubtful: :func:`doubtful_lungs`, or None; masked: a masked mode.
    """
    if refused:
        return "refused", f"input gate: {refused}"
    if masked and doubtful:
        if policy.doubtful == "abstain":
            return "abstained", f"doubtful lungs ({doubtful})"
        if policy.doubtful == "raw":
            return "raw-fallback", f"doubtful lungs ({doubtful}): answered by the raw classifier"
    if policy.abstain_below is not None and confidence < policy.abstain_below:
        return "abstained", f"confidence {confidence:.3f} < {policy.abstain_below:.2f}"
    if masked and doubtful:
        return "flagged", f"doubtful lungs ({doubtful})"
    return "answered", ""


def summary(decisions: list[str]) -> dict[str, int]:
    """How many images got each decision."""
    return {d: decisions.count(d) for d in ("answered", "flagged", "raw-fallback", "abstained", "refused")}


def implied_coverage(curve: list[dict] | None, threshold: float) -> str:
    """A sentence on what ``abstain_below=threshold`` means on the classifier's Val images, from the dense
    coverage-accuracy curve its ``config.json`` records (or why it cannot say)."""
    if not curve:
        return f"--abstain-below {threshold}: this classifier records no Val coverage curve (trained by an older lungcls)"
    point = min(curve, key=lambda c: abs(c["threshold"] - threshold))
    everything = curve[0]
    return (
        f"--abstain-below {threshold}: on the classifier's Val images it answers {point['coverage']:.1%} of them, "
        f"with accuracy {point['accuracy']:.3f} (all: {everything['accuracy']:.3f})"
    )
