"""Stage 1 model: an smp U-Net (encoder + decoder + segmentation head), one lung class."""

from __future__ import annotations

import torch

from ..config import SegmenterConfig
from ..errors import ConfigError


def build_segmenter(cfg: SegmenterConfig) -> torch.nn.Module:
    """An ``smp.Unet`` for ``cfg``: input float (N, 1, H, W) normalised, output logits (N, 1, H, W).

    H and W must be multiples of 2**encoder_depth. Encoder weights are loaded only when
    ``cfg.encoder_weights`` is set (smp reads them from its local cache or downloads them).
    """
    import segmentation_models_pytorch as smp

    if len(cfg.decoder_channels) != cfg.encoder_depth:
        raise ConfigError(
            "decoder_channels", f"needs {cfg.encoder_depth} values (one per encoder stage), got {cfg.decoder_channels}"
        )
    if cfg.image_size % (2**cfg.encoder_depth):
        raise ConfigError(
            "image_size", f"{cfg.image_size} is not a multiple of {2**cfg.encoder_depth} (2 ** encoder_depth)"
        )
    try:
        return smp.Unet(
            encoder_name=cfg.encoder_name,
            encoder_weights=cfg.encoder_weights,
            encoder_depth=cfg.encoder_depth,
            decoder_channels=tuple(cfg.decoder_channels),
            in_channels=cfg.in_channels,
            classes=cfg.classes,
        )
    except KeyError as e:
        raise ConfigError("encoder_name", f"{cfg.encoder_name!r} is not an smp encoder ({e})") from None
