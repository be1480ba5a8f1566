"""The one training engine shared by both stages: a Task per stage, one ``fit`` loop."""

from .device import autocast, resolve_device
from .trainer import FitResult, fit

__all__ = ["FitResult", "autocast", "fit", "resolve_device"]
