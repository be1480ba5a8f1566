"""Typed configuration: plain dataclasses whose fields are JSON primitives.

Every checkpoint saves its configs as JSON beside the weights; :func:`from_dict` validates what
it reads back and names the offending field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .data.manifest import CLASS_NAMES
from .errors import ConfigError

T = TypeVar("T")


@dataclass
class SegmenterConfig:
    """Stage 1: an smp U-Net for one lung class.

    Attributes:
        encoder_name: any smp encoder (``resnet34``, ``resnet18``, ``mobilenet_v2``, ...).
        encoder_weights: the weights training started from (provenance only: loading a trained
            model never reads them): ``None`` (random), ``"imagenet"`` (smp's local cache) or a file.
        encoder_depth: encoder stages (3 to 5); fewer is faster and smaller.
        decoder_channels: decoder widths, one per encoder stage (default: smp's, cut to the depth).
        image_size: working size in pixels (square).
        mean, std: normalisation of [0, 1] pixel values, applied on the device.
    """

    arch: str = "unet"
    encoder_name: str = "resnet34"
    encoder_weights: str | None = None
    encoder_depth: int = 5
    decoder_channels: list[int] | None = None
    in_channels: int = 1
    classes: int = 1
    image_size: int = 256
    mean: float = 0.5
    std: float = 0.25

    def __post_init__(self) -> None:
        if self.decoder_channels is None:  # smp's widths, one per encoder stage
            self.decoder_channels = [256, 128, 64, 32, 16][5 - self.encoder_depth :] if 1 <= self.encoder_depth <= 5 else []


@dataclass
class ClassifierConfig:
    """Stage 2: torchvision ResNet-50 (``arch``; ``resnet18`` for quick CPU runs), 1-channel stem, and
    how its input is made.

    Attributes:
        class_names: the classes, in the order of the outputs (default the three COVID-QU-Ex classes;
            training takes them from the data or from ``--classes``).
        image_size: classifier input side in pixels.
        mean, std: normalisation of [0, 1] pixels (one channel; the ImageNet means/stds averaged).
        mode: ``raw``, ``masked``, ``cropped`` or ``masked-cropped`` (see :mod:`lungcls.masking`).
        margin: crop margin, a fraction of the lung box on each side.
        mask_source: ``none`` (raw), ``gt`` (the dataset's masks) or ``predicted`` (a stage-1 model).
        pretrained: training started from ImageNet weights (provenance only: loading never reads them).
        init_weights: the weights file training started from, as ``name sha256:...`` (provenance only).
        working_size: size images are read at before crop-and-mask (the cache's size).
        temperature: divides the logits before the softmax (1 = uncalibrated); fitted on Val after training.
    """

    arch: str = "resnet50"
    num_classes: int = 3
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    image_size: int = 224
    mean: float = 0.449
    std: float = 0.226
    mode: str = "raw"
    margin: float = 0.1
    mask_source: str = "none"
    pretrained: bool = False
    init_weights: str | None = None
    working_size: int = 256
    temperature: float = 1.0


@dataclass
class PostprocessConfig:
    """Stage 1 post-processing, each step optional, and the mask-quality flags.

    The flag limits come from the ground-truth masks of the real sets at 256 px (4,384 COVID-QU-Ex,
    427 v7labs, 100 radiologist masks): lungs cover 4.5-61% of the image; the smaller side (image
    left or right half) holds at least 4% and typically 83% of the larger; the central band of
    columns (30-70% of the width) always has a column with at most 26% of the fullest column's lung
    pixels (the mediastinum); the two sides' centres of mass lie within 0.24 of the image height of
    each other in all COVID-QU-Ex masks (0.48 in one radiologist mask).

    Attributes:
        threshold: probability above which a pixel is lung.
        keep_largest: keep this many largest connected components (0 keeps all).
        fill_holes: fill holes inside the lung fields.
        min_lung_fraction: below this share of the image: ``no-lung``.
        max_lung_fraction: above this share: ``implausible-lung-area`` (e.g. not a CXR).
        min_side_ratio: smaller side's lung area over the larger side's below this: ``one-lung-field``.
        max_midline_share: the emptiest central column holds more than this share of the fullest
            column's lung pixels (no mediastinum between two fields): ``lung-fields-joined``.
        max_centre_offset: the two sides' centres of mass further apart vertically than this share of
            the image height: ``lung-fields-misaligned``.
        max_uncertain_share, min_mean_confidence: the segmenter hesitates (pixels with a probability
            between 0.2 and 0.8 make up more than ``max_uncertain_share`` of the mask's area, or the mean
            probability inside the mask is under ``min_mean_confidence``): ``uncertain-lungs``. On 490
            real CXRs of four sets the built-in model stays under 0.28 and above 0.94; on photographs and
            noise it does not.
    """

    threshold: float = 0.5
    keep_largest: int = 2
    fill_holes: bool = True
    min_lung_fraction: float = 0.02
    max_lung_fraction: float = 0.65
    min_side_ratio: float = 0.2
    max_midline_share: float = 0.5
    max_centre_offset: float = 0.3
    max_uncertain_share: float = 0.3
    min_mean_confidence: float = 0.935


@dataclass
class AugmentConfig:
    """Device augmentation (see :class:`lungcls.data.augment.DeviceAugment`).

    Attributes:
        rotation: maximum rotation in degrees; scale: (min, max) zoom; translate: maximum shift as a
        fraction of the size; brightness: maximum additive change (fraction of the range); contrast:
        maximum relative change around the image mean; hflip: probability of a horizontal flip (off:
        it moves the heart); p: probability that an image is augmented at all.
    """

    rotation: float = 10.0
    scale: list[float] = field(default_factory=lambda: [0.9, 1.1])
    translate: float = 0.06
    brightness: float = 0.1
    contrast: float = 0.1
    hflip: float = 0.0
    p: float = 1.0


@dataclass
class TrainConfig:
    """The shared training engine's settings.

    Attributes:
        epochs: passes over the training split.
        batch_size: images per step.
        lr: peak learning rate of AdamW, reached after ``warmup_epochs`` then cosine-decayed to
            ``lr * min_lr_ratio``.
        grad_clip: clip the gradient norm to this (0 = off).
        patience: stop after this many epochs without a better validation metric (0 = never).
        seed: seeds weights, shuffling and augmentation; resuming continues the same draws.
        amp: bf16 autocast on CUDA (CPU runs fp32 unless ``amp_cpu``).
        amp_cpu: bf16 autocast on the CPU too (slower on most CPUs; exercises the CUDA precision path).
        channels_last: channels_last memory format (CUDA and CPU).
        compile: ``torch.compile`` the model.
        deterministic: deterministic kernels where torch has them (``torch.use_deterministic_algorithms``
            in warn-only mode: an op without a deterministic kernel, such as CUDA's adaptive-average-pool
            backward in ResNet, warns and runs nondeterministically instead of stopping the run); cuDNN
            autotuning off; the flags are restored when training ends. CPU runs with the same seed are
            reproducible either way.
        device: ``auto`` (CUDA when available), ``cuda``, ``cuda:1``, ``cpu``.
        placement: where the cache lives on CUDA: ``auto``, ``device`` or ``host`` (pinned).
        label_smoothing: cross-entropy label smoothing (classification only).
        class_weighting: weight each Train image by the inverse frequency of its class (capped at 10; label
            smoothing spread evenly), classification only.
        ema_epochs: keep an exponential moving average of the weights with this time constant in
            epochs, validate and save the average (0 = off).
    """

    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    patience: int = 0
    seed: int = 0
    amp: bool = True
    amp_cpu: bool = False
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False
    device: str = "auto"
    placement: str = "auto"
    label_smoothing: float = 0.0
    class_weighting: bool = False
    ema_epochs: float = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def to_dict(config: Any) -> dict:
    """A config dataclass as a JSON-ready dict."""
    return dataclasses.asdict(config)


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build ``cls`` from ``data``, checking names and types.

    Raises:
        ConfigError: an unknown field, or a value of the wrong type; names the field.
    """
    if not isinstance(data, dict):
        raise ConfigError(where or cls.__name__, f"expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}{unknown[0]}", f"unknown field; valid fields: {', '.join(sorted(names))}")
    values = {}
    for name, value in data.items():
        values[name] = _check(hints[name], value, f"{where}{name}")
    return cls(**values)


def _check(hint: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where=f"{name}.")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(arg, value, name)
            except ConfigError:
                pass
        raise ConfigError(name, f"expected {hint}, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(name, f"expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_check(item, v, f"{name}[{k}]") for k, v in enumerate(value)]
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(name, f"expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"expected an integer, got {value!r}")
        return value
    if hint in (bool, str):
        if not isinstance(value, hint):
            raise ConfigError(name, f"expected {hint.__name__}, got {value!r}")
        return value
    return value
