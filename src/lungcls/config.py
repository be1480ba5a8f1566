"""Typed configuration: plain dataclasses whose fields are JSON primitives.

Every checkpoint saves its configs as JSON beside the weights; :func:`from_dict` checks the names and
types of what it reads back, and every config checks its values' ranges when it is made (in code, from
a recipe, or from a file), so a tampered or mistyped value is refused with the field named.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .defaults import CLASS_NAMES, CROP_MARGIN, WORKING_SIZE
from .errors import ConfigError

T = TypeVar("T")

#: the classifier's inputs (see :mod:`lungcls.masking`)
INPUT_MODES = ("raw", "masked", "cropped", "masked-cropped")
MASK_SOURCES = ("none", "gt", "predicted")


def limits(lo: float | None = None, hi: float | None = None, **more: Any) -> dict:
    """Field metadata: the range a number must lie in (inclusive), or ``choices`` for a string."""
    return {"lo": lo, "hi": hi, **more}


def check_values(config: Any) -> None:
    """Check every field of ``config`` against its :func:`limits`.

    Raises:
        ConfigError: a value out of its range or not one of its choices; names the field.
    """
    for f in dataclasses.fields(config):
        value, meta = getattr(config, f.name), f.metadata
        if value is None or not meta:
            continue
        if "choices" in meta and value not in meta["choices"]:
            raise ConfigError(f.name, f"{value!r} is not one of {', '.join(map(str, meta['choices']))}")
        numbers = value if isinstance(value, list) else [value]
        for v in numbers:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                too_low = meta.get("lo") is not None and not v >= meta["lo"]
                too_high = meta.get("hi") is not None and not v <= meta["hi"]
                if too_low or too_high or v != v:
                    raise ConfigError(f.name, f"{v!r} is outside [{meta.get('lo')}, {meta.get('hi')}]")


@dataclass
class SegmenterConfig:
    """Stage 1: an smp U-Net for one class of pixel: the lung fields, or (``target="infection"``) the infection.

    Attributes:
        target: what it segments: ``lungs`` (stage 1) or ``infection`` (COVID-QU-Ex's infection masks, empty on
            Non-COVID and Normal images, which are real negatives).
        encoder_name: any smp encoder (``resnet34``, ``resnet18``, ``mobilenet_v2``, ...).
        encoder_weights: the weights training started from (provenance only: loading a trained
            model never reads them): ``None`` (random), ``"imagenet"`` (smp's local cache) or a file.
        encoder_depth: encoder stages (3 to 5); fewer is faster and smaller.
        decoder_channels: decoder widths, one per encoder stage (default: smp's, cut to the depth).
        image_size: working size in pixels (square).
        mean, std: normalisation of [0, 1] pixel values, applied on the device.
    """

    arch: str = field(default="unet", metadata=limits(choices=("unet",)))
    target: str = field(default="lungs", metadata=limits(choices=("lungs", "infection")))
    encoder_name: str = "resnet34"
    encoder_weights: str | None = None
    encoder_depth: int = field(default=5, metadata=limits(3, 5))
    decoder_channels: list[int] | None = field(default=None, metadata=limits(1, 4096))
    in_channels: int = field(default=1, metadata=limits(1, 1))
    classes: int = field(default=1, metadata=limits(1, 1))
    image_size: int = field(default=WORKING_SIZE, metadata=limits(32, 2048))
    mean: float = field(default=0.5, metadata=limits(0.0, 1.0))
    std: float = field(default=0.25, metadata=limits(1e-3, 10.0))

    def __post_init__(self) -> None:
        if self.decoder_channels is None:  # smp's widths, one per encoder stage
            self.decoder_channels = (
                [256, 128, 64, 32, 16][5 - self.encoder_depth :] if 1 <= self.encoder_depth <= 5 else []
            )
        check_values(self)
        if len(self.decoder_channels) != self.encoder_depth:
            raise ConfigError(
                "decoder_channels",
                f"needs {self.encoder_depth} values (one per encoder stage), got {self.decoder_channels}",
            )
        if self.image_size % (2**self.encoder_depth):
            raise ConfigError(
                "image_size", f"{self.image_size} is not a multiple of {2**self.encoder_depth} (2 ** encoder_depth)"
            )


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
    num_classes: int = field(default=3, metadata=limits(2, 1000))
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    image_size: int = field(default=224, metadata=limits(16, 2048))
    mean: float = field(default=0.449, metadata=limits(0.0, 1.0))
    std: float = field(default=0.226, metadata=limits(1e-3, 10.0))
    mode: str = field(default="raw", metadata=limits(choices=INPUT_MODES))
    margin: float = field(default=CROP_MARGIN, metadata=limits(0.0, 1.0))
    mask_source: str = field(default="none", metadata=limits(choices=MASK_SOURCES))
    pretrained: bool = False
    init_weights: str | None = None
    working_size: int = field(default=WORKING_SIZE, metadata=limits(32, 4096))
    temperature: float = field(default=1.0, metadata=limits(0.01, 100.0))

    def __post_init__(self) -> None:
        check_values(self)  # the architecture is checked where it is built (lungcls.models.classifiers)
        if len(self.class_names) != self.num_classes or len(set(self.class_names)) != len(self.class_names):
            raise ConfigError(
                "class_names", f"needs {self.num_classes} different names (num_classes), got {self.class_names}"
            )


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
        min_region: drop the connected components smaller than this share of the image (0 keeps all; for
            infection maps, where specks are the usual false positives on images without infection).
        fill_holes: fill holes inside the lung fields.
        min_lung_fraction: below this share of the image: ``no-lung``.
        max_lung_fraction: above this share: ``implausible-lung-area`` (e.g. not a CXR).
        min_side_ratio: smaller side's lung area over the larger side's below this: ``one-lung-field``.
        max_midline_share: the emptiest central column holds more than this share of the fullest
            column's lung pixels (no mediastinum between two fields): ``lung-fields-joined``.
        max_centre_offset: the two sides' centres of mass further apart vertically than this share of
            the image height: ``lung-fields-misaligned``.
        flags: compute the lung-shape flags (off for infection masks, which have no such shape).
        max_uncertain_share, min_mean_confidence: the segmenter hesitates (pixels with a probability
            between 0.2 and 0.8 make up more than ``max_uncertain_share`` of the mask's area, or the mean
            probability inside the mask is under ``min_mean_confidence``): ``uncertain-lungs``. On 490
            real CXRs of four sets the built-in model stays under 0.28 and above 0.94; on photographs and
            noise it does not.
    """

    threshold: float = field(default=0.5, metadata=limits(0.0, 1.0))
    keep_largest: int = field(default=2, metadata=limits(0, 100))
    min_region: float = field(default=0.0, metadata=limits(0.0, 1.0))
    fill_holes: bool = True
    min_lung_fraction: float = field(default=0.02, metadata=limits(0.0, 1.0))
    max_lung_fraction: float = field(default=0.65, metadata=limits(0.0, 1.0))
    min_side_ratio: float = field(default=0.2, metadata=limits(0.0, 1.0))
    max_midline_share: float = field(default=0.5, metadata=limits(0.0, 1.0))
    max_centre_offset: float = field(default=0.3, metadata=limits(0.0, 1.0))
    max_uncertain_share: float = field(default=0.3, metadata=limits(0.0, 1.0))
    min_mean_confidence: float = field(default=0.935, metadata=limits(0.0, 1.0))
    flags: bool = True

    @classmethod
    def for_target(cls, target: str) -> PostprocessConfig:
        """The default post-processing of a segmenter of ``target``: for infection, the threshold alone (any
        number of regions, holes kept) and no lung-shape flags."""
        return cls() if target == "lungs" else cls(keep_largest=0, fill_holes=False, flags=False)

    def __post_init__(self) -> None:
        check_values(self)


@dataclass
class AugmentConfig:
    """Device augmentation (see :class:`lungcls.data.augment.DeviceAugment`).

    Attributes:
        rotation: maximum rotation in degrees; scale: (min, max) zoom; translate: maximum shift as a
        fraction of the size; brightness: maximum additive change (fraction of the range); contrast:
        maximum relative change around the image mean; hflip: probability of a horizontal flip (off:
        it moves the heart); p: probability that an image is augmented at all.
    """

    rotation: float = field(default=10.0, metadata=limits(0.0, 180.0))
    scale: list[float] = field(default_factory=lambda: [0.9, 1.1], metadata=limits(0.1, 10.0))
    translate: float = field(default=0.06, metadata=limits(0.0, 1.0))
    brightness: float = field(default=0.1, metadata=limits(0.0, 1.0))
    contrast: float = field(default=0.1, metadata=limits(0.0, 1.0))
    hflip: float = field(default=0.0, metadata=limits(0.0, 1.0))
    p: float = field(default=1.0, metadata=limits(0.0, 1.0))

    def __post_init__(self) -> None:
        check_values(self)
        if len(self.scale) != 2 or self.scale[0] > self.scale[1]:
            raise ConfigError("scale", f"needs two values (min, max) with min <= max, got {self.scale}")


@dataclass
class TrainConfig:
    """The shared training engine's settings.

    Attributes:
        epochs: passes over the training split (the most, under a ``time_budget``).
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
        optimizer: ``adamw``, or ``sgd`` (momentum 0.9, Nesterov); both follow the same schedule.
        mix: probability that a training batch is mixed (classification only): each image with another of
            the batch, by ``mix_mode``, the loss mixed in the same proportion (0 = off).
        mix_mode: ``mixup`` (pixel blend), ``cutmix`` (a pasted box) or ``both`` (either, evenly); the share
            of the other image is drawn uniformly (Beta(1, 1)) per batch.
        time_budget: seconds the whole run may take (data preparation, training, the final evaluation): it
            trains as many epochs as fit, at most ``epochs``, and always evaluates and saves (None = no budget;
            see :mod:`lungcls.engine.budget`).
    """

    epochs: int = field(default=40, metadata=limits(1, 100_000))
    batch_size: int = field(default=32, metadata=limits(1, 1_000_000))
    lr: float = field(default=1e-3, metadata=limits(1e-9, 10.0))
    weight_decay: float = field(default=1e-4, metadata=limits(0.0, 10.0))
    warmup_epochs: float = field(default=1.0, metadata=limits(0.0, 100_000))
    min_lr_ratio: float = field(default=0.01, metadata=limits(0.0, 1.0))
    grad_clip: float = field(default=1.0, metadata=limits(0.0, 1e6))
    patience: int = field(default=0, metadata=limits(0, 100_000))
    seed: int = field(default=0, metadata=limits(0, 2**63 - 1))
    amp: bool = True
    amp_cpu: bool = False
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False
    device: str = "auto"
    placement: str = field(default="auto", metadata=limits(choices=("auto", "device", "host")))
    label_smoothing: float = field(default=0.0, metadata=limits(0.0, 0.99))
    class_weighting: bool = False
    ema_epochs: float = field(default=0.0, metadata=limits(0.0, 100_000))
    optimizer: str = field(default="adamw", metadata=limits(choices=("adamw", "sgd")))
    mix: float = field(default=0.0, metadata=limits(0.0, 1.0))
    mix_mode: str = field(default="both", metadata=limits(choices=("mixup", "cutmix", "both")))
    time_budget: float | None = field(default=None, metadata=limits(1.0, 1e7))
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        check_values(self)


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
    try:
        return cls(**values)
    except ConfigError as e:
        raise ConfigError(f"{where}{e.field}", e.reason) from None


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
