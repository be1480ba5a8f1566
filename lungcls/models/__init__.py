"""Model builders, one file per family, and a plain registry from ``arch`` name to builder."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .resnet import build_classifier
from .unet import build_segmenter

BUILDERS: dict[str, Callable[..., torch.nn.Module]] = {
    "unet": build_segmenter,
    "resnet50": build_classifier,
    "resnet18": build_classifier,
}


def build_model(config) -> torch.nn.Module:
    """Build the model a config describes (dispatch on ``config.arch``).

    Raises:
        ValueError: unknown architecture; the message lists the known ones.
    """
    try:
        builder = BUILDERS[config.arch]
    except KeyError:
        raise ValueError(f"unknown arch {config.arch!r}; known: {', '.join(sorted(BUILDERS))}") from None
    return builder(config)


__all__ = ["BUILDERS", "build_classifier", "build_model", "build_segmenter"]
