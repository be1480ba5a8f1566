"""Model builders, one file per family: the stage-1 U-Net and the stage-2 classifiers (a registry)."""

from .classifiers import CLASSIFIERS, build_classifier
from .unet import build_segmenter

__all__ = ["CLASSIFIERS", "build_classifier", "build_segmenter"]
