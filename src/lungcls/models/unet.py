"""Stage 1 model: an smp U-Net (encoder + decoder + segmentation head), one lung class."""

from __future__ import annotations

import torch

from ..config import SegmenterConfig
from ..errors import ConfigError
from ..store import read_weights_file


def build_segmenter(cfg: SegmenterConfig, encoder_weights: str | None = None) -> torch.nn.Module:
    """An ``smp.Unet`` for ``cfg``: input float (N, 1, H, W) normalised, output logits (N, 1, H, W).

    H and W must be multiples of 2**encoder_depth (the config checks its own size). The architecture comes from
    ``cfg`` alone;
    ``encoder_weights`` (``"imagenet"``: smp's local cache, or a safetensors/torchvision file of the
    encoder) is read only when training starts, never when a trained model is loaded.

    Encoder stages a shallower U-Net never runs (e.g. ResNet's ``layer4`` at depth 4) are removed,
    so they are neither trained nor saved; :func:`own_state` drops their weights from older files.
    """
    import segmentation_models_pytorch as smp

    smp_weights = encoder_weights if encoder_weights == "imagenet" else None
    try:
        model = smp.Unet(
            encoder_name=cfg.encoder_name,
            encoder_weights=smp_weights,
            encoder_depth=cfg.encoder_depth,
            decoder_channels=tuple(cfg.decoder_channels or ()),
            in_channels=cfg.in_channels,
            classes=cfg.classes,
        )
    except KeyError as e:
        raise ConfigError("encoder_name", f"{cfg.encoder_name!r} is not an smp encoder ({e})") from None
    except (OSError, RuntimeError, ValueError) as e:  # smp could not find or fetch its weights
        raise ConfigError(
            "encoder_weights",
            f"{cfg.encoder_name} ImageNet weights are not available offline ({e}); pass a local weights file instead",
        ) from None
    if encoder_weights not in (None, "imagenet"):
        _load_weights_file(model, encoder_weights)
    _strip_unused_stages(model, cfg)
    return model


STRIPPED = "lungcls_stripped"  # attribute: prefixes of the state-dict keys removed from the module


def _strip_unused_stages(model: torch.nn.Module, cfg: SegmenterConfig) -> None:
    """Replace the encoder's top-level children that its forward never calls with empty modules."""
    called: set[str] = set()
    hooks = [
        child.register_forward_hook(lambda m, i, o, name=name: called.add(name))
        for name, child in model.encoder.named_children()
    ]
    side = 2 ** (cfg.encoder_depth + 1)
    try:
        with torch.no_grad():
            model.encoder.eval()(torch.zeros(1, cfg.in_channels, side, side))
    finally:
        for h in hooks:
            h.remove()
    stripped = []
    for name, child in list(model.encoder.named_children()):
        if name not in called and any(True for _ in child.parameters()):
            setattr(model.encoder, name, torch.nn.Identity())
            stripped.append(f"encoder.{name}.")
    model.train()
    setattr(model, STRIPPED, stripped)


def own_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the weights of encoder stages ``model`` was built without (older versions saved them)."""
    stripped = tuple(getattr(model, STRIPPED, ()))
    return {k: v for k, v in state.items() if not k.startswith(stripped)} if stripped else state


def _load_weights_file(model: torch.nn.Module, path: str) -> None:
    """A U-Net's starting weights from ``path``: an encoder's (safetensors or torchvision ``.pth``), or a trained
    U-Net's ``model.safetensors`` (a lungcls segmenter: every tensor whose name and shape fit, decoder included,
    e.g. an infection segmenter started from the lung segmenter)."""
    state = read_weights_file(path)
    if any(k.startswith("encoder.") for k in state):
        _load_encoder_state(model.encoder, {k[8:]: v for k, v in state.items() if k.startswith("encoder.")}, path)
        own = model.state_dict()
        rest = {k: v for k, v in state.items() if not k.startswith("encoder.") and k in own and own[k].shape == v.shape}
        torch.nn.Module.load_state_dict(model, rest, strict=False)
    else:
        _load_encoder_state(model.encoder, state, path)


def _load_encoder_state(encoder: torch.nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if "conv1.weight" in state and state["conv1.weight"].shape[1] != encoder.conv1.weight.shape[1]:
        state["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)  # RGB filters -> one gray channel
    own = encoder.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fitting or len(fitting) < len([k for k in own if not k.endswith("num_batches_tracked")]) // 2:
        raise ConfigError(
            "encoder_weights",
            f"{path}: does not fit the {type(encoder).__name__} encoder ({len(fitting)} of {len(own)} tensors match)",
        )
    torch.nn.Module.load_state_dict(encoder, fitting, strict=False)


def smp_config(cfg: SegmenterConfig) -> dict:
    """The keys ``segmentation_models_pytorch.from_pretrained`` reads from ``config.json``: stage-1 runs and
    bundles carry them beside lungcls's own (which smp ignores), so smp can load them too. A U-Net with
    fewer than 5 encoder stages stores no weights for the stages it does not use: load it with
    ``strict=False`` (those stages keep smp's initial values and are never run)."""
    return {
        "_model_class": "Unet",
        "encoder_name": cfg.encoder_name,
        "encoder_depth": cfg.encoder_depth,
        "encoder_weights": None,
        "decoder_channels": list(cfg.decoder_channels or []),
        "in_channels": cfg.in_channels,
        "classes": cfg.classes,
    }
