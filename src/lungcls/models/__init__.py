"""Model builders, one file per family: the stage-1 U-Net and the stage-2 ResNet."""

from .resnet import build_classifier
from .unet import build_segmenter

__all__ = ["build_classifier", "build_segmenter"]
