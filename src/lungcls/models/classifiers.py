"""Stage 2 models: the classifier registry and its builder (torchvision ResNets with a 1-channel stem).

Each entry of :data:`CLASSIFIERS` holds everything lungcls needs to know about one architecture: the
torchvision builder, its ImageNet weights (read from torchvision's local cache, never downloaded) and the
layer whose activations the class-activation maps read. Adding or changing an architecture touches this
file only; ``lungcls train-cls --arch`` and the recipes take any registered name. Importing this module
imports neither torch nor torchvision (the command line lists the names without them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    import torch

    from ..config import ClassifierConfig


@dataclass(frozen=True)
class ClassifierArch:
    """One registered classifier architecture.

    Attributes:
        builder: the ``torchvision.models`` function that builds it (called with ``weights=None``).
        weights: its ImageNet weights, as ``torchvision.models`` names them.
        cam_layer: path of the sub-module whose activations class-activation maps use (its last block).
        stem, head: names of the first convolution (made 1-channel) and of the last linear layer (replaced).
    """

    builder: str
    weights: str
    cam_layer: str
    stem: str = "conv1"
    head: str = "fc"


CLASSIFIERS: dict[str, ClassifierArch] = {
    "resnet50": ClassifierArch("resnet50", "ResNet50_Weights.IMAGENET1K_V2", cam_layer="layer4.2"),
    "resnet18": ClassifierArch("resnet18", "ResNet18_Weights.IMAGENET1K_V1", cam_layer="layer4.1"),
}


def classifier_arch(name: str) -> ClassifierArch:
    """The registry entry of ``name``.

    Raises:
        ConfigError: not a registered architecture; lists the registered ones.
    """
    if name not in CLASSIFIERS:
        raise ConfigError("arch", f"{name!r} is not a classifier; choose one of {', '.join(CLASSIFIERS)}")
    return CLASSIFIERS[name]


def build_classifier(cfg: ClassifierConfig, weights: str | Path | None = None) -> torch.nn.Module:
    """The architecture ``cfg.arch``: input float (N, 1, S, S) normalised, output logits (N, num_classes).

    The architecture comes from ``cfg`` alone. ``weights`` are read only when training starts, never when a
    trained model is loaded:

    - ``"imagenet"`` (torchvision's local cache) or a torchvision weights file: loaded first, then the stem is
      made 1-channel by summing its RGB filters and the head is replaced;
    - the ``model.safetensors`` of a lung U-Net with the same encoder (in-domain pretraining on lung masks, no
      download): its ``encoder.*`` weights, 1-channel stem included, go into the classifier's body; the
      head starts fresh.
    """
    import torch
    import torchvision.models

    arch = classifier_arch(cfg.arch)
    model = getattr(torchvision.models, arch.builder)(weights=None)
    state = imagenet_state_dict(cfg.arch, None if weights == "imagenet" else weights) if weights is not None else {}
    encoder = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    if state and not encoder:
        _load(model, state, cfg.arch, strict=True)
    setattr(model, arch.stem, gray_stem(getattr(model, arch.stem)))
    setattr(model, arch.head, torch.nn.Linear(getattr(model, arch.head).in_features, cfg.num_classes))
    if encoder:
        _load(model, encoder, cfg.arch, strict=False)
    return model


def _load(model: torch.nn.Module, state: dict[str, torch.Tensor], arch: str, strict: bool) -> None:
    """Load ``state``; not ``strict`` (a U-Net's encoder): every tensor of the body must be there, the head may not."""
    try:
        result = model.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise CheckpointError(f"weights do not fit torchvision's {arch} ({str(e).splitlines()[0]})") from None
    head = classifier_arch(arch).head + "."
    missing = [k for k in result.missing_keys if not k.startswith(head)]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"the encoder weights do not fit torchvision's {arch}: missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]} (a U-Net with a {arch} encoder of depth 5 fits)"
        )


def cam_layer(model: torch.nn.Module, arch: str) -> torch.nn.Module:
    """The layer class-activation maps read in a model of architecture ``arch``."""
    return model.get_submodule(classifier_arch(arch).cam_layer)


def gray_stem(conv: torch.nn.Conv2d) -> torch.nn.Conv2d:
    """A 1-channel copy of an RGB first convolution: its three filters summed.

    On a gray image (the same values in R, G and B) the result equals the RGB convolution's,
    so ImageNet weights work on 1-channel CXRs without tripling the data.
    """
    import torch

    one = torch.nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None)
    with torch.no_grad():
        one.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            one.bias.copy_(conv.bias)
    return one


def imagenet_state_dict(arch: str = "resnet50", weights_file: str | Path | None = None) -> dict[str, torch.Tensor]:
    """ImageNet weights of ``arch`` from ``weights_file`` or torchvision's local cache; never downloads.

    Raises:
        CheckpointError: the file is missing, or the weights are not in torchvision's cache.
    """
    import torch
    import torchvision.models

    from ..store import read_weights_file

    if weights_file is None:
        enum_name, member = classifier_arch(arch).weights.split(".")
        url = getattr(getattr(torchvision.models, enum_name), member).url
        weights_file = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        if not weights_file.is_file():
            raise CheckpointError(
                f"ImageNet {arch} weights are not in torchvision's cache ({weights_file}); lungcls never downloads "
                f"them. Fetch them once where there is network (torchvision.models.{arch}(weights='DEFAULT')) "
                "or pass --weights FILE"
            )
    return read_weights_file(weights_file)


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
