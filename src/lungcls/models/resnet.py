"""Stage 2 model: torchvision ResNet-50 (or ResNet-18 for quick CPU runs) with a 1-channel stem and a 3-class head."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.models import ResNet18_Weights, ResNet50_Weights, resnet18, resnet50

from ..config import ClassifierConfig
from ..errors import CheckpointError, ConfigError

#: arch name -> (torchvision builder, ImageNet weights)
RESNETS = {
    "resnet50": (resnet50, ResNet50_Weights.IMAGENET1K_V2),
    "resnet18": (resnet18, ResNet18_Weights.IMAGENET1K_V1),
}


def gray_stem(conv: torch.nn.Conv2d) -> torch.nn.Conv2d:
    """A 1-channel copy of an RGB first convolution: its three filters summed.

    On a gray image (the same values in R, G and B) the result equals the RGB convolution's,
    so ImageNet weights work on 1-channel CXRs without tripling the data.
    """
    one = torch.nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None)
    with torch.no_grad():
        one.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            one.bias.copy_(conv.bias)
    return one


def imagenet_state_dict(arch: str = "resnet50", weights_file: str | Path | None = None) -> dict[str, torch.Tensor]:
    """ImageNet ResNet weights from ``weights_file`` or torchvision's local cache; never downloads.

    ``weights_file`` may be safetensors, or a torchvision ``.pth`` (read with ``weights_only=True``).

    Raises:
        CheckpointError: the file is missing, or the weights are not in torchvision's cache.
    """
    if weights_file is None:
        url = RESNETS[arch][1].url
        weights_file = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        if not weights_file.is_file():
            raise CheckpointError(
                f"ImageNet {arch} weights are not in torchvision's cache ({weights_file}); lungcls never downloads "
                f"them. Fetch them once where there is network (torchvision.models.{arch}(weights='DEFAULT')) "
                "or pass --weights FILE"
            )
    path = Path(weights_file)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from ..checkpoint import load_weights

        return load_weights(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an unsafe or corrupt pickle
        raise CheckpointError(
            f"{path}: not loadable as plain weights ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None


def build_classifier(cfg: ClassifierConfig, weights: str | Path | None = None) -> torch.nn.Module:
    """ResNet (``cfg.arch``): input float (N, 1, S, S) normalised, output logits (N, num_classes).

    The architecture comes from ``cfg`` alone. ``weights`` (``"imagenet"``: torchvision's local cache,
    or a weights file) are read only when training starts, never when a trained model is loaded: they
    are loaded first, then the stem is made 1-channel by summing its RGB filters and the head is replaced.
    """
    if cfg.arch not in RESNETS:
        raise ConfigError("arch", f"{cfg.arch!r} is not a classifier; choose one of {', '.join(RESNETS)}")
    model = RESNETS[cfg.arch][0](weights=None)
    if weights is not None:
        state = imagenet_state_dict(cfg.arch, None if weights == "imagenet" else weights)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"weights do not fit torchvision's {cfg.arch} ({str(e).splitlines()[0]})") from None
    model.conv1 = gray_stem(model.conv1)
    model.fc = torch.nn.Linear(model.fc.in_features, cfg.num_classes)
    return model


def describe_weights(weights: str | Path | None) -> str | None:
    """How a run records the weights it started from: ``"imagenet"``, or a file's name and SHA-256 (never its
    local path)."""
    if weights is None or weights == "imagenet":
        return weights
    import hashlib

    path = Path(weights)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    return f"{path.name} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
