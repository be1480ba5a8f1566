"""What every run folder records about where it ran: versions, hardware, command line."""

from __future__ import annotations

import platform
import sys

import torch

from . import __version__


def environment() -> dict:
    """Library versions, Python, platform, and the GPU (if any)."""
    import segmentation_models_pytorch as smp
    import torchvision

    return {
        "lungcls": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "segmentation_models_pytorch": smp.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": __import__("os").cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "command": sys.argv,
    }
