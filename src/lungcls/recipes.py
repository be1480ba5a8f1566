"""Every training recipe lungcls has, in one place: the Python API, the CLI, the demo and the benchmarks
all start from these, so the same name always trains the same thing.

A recipe is a model config plus a training config. Options given by the caller override single
fields by name; ``None`` means "the recipe's value" (the CLI's option defaults are all ``None``); the
recipe ``auto`` (the default, and what the CLI's ``--recipe`` means when not given) is ``default`` on a
GPU and ``cpu`` on a CPU::

    model, train = classifier_recipe("cpu", mode="masked", epochs=4)

Recipes per stage:

========== =================================================================================================
auto       ``default`` where training runs on a GPU, else ``cpu`` (and says so): what no ``--recipe`` means
default    the GPU recipe: U-Net(resnet34) at 256 px, 40 epochs / ResNet-50 at 224 px, 80 epochs, label
           smoothing 0.1, class-weighted loss (bf16 + channels_last on CUDA)
cpu        minutes on a laptop CPU: U-Net(resnet18, 4 stages) at 128 px, 12 epochs / ResNet-18 at 128 px, 8 epochs
builtin    the built-in lung segmenter (``lungcls.builtin``): U-Net(resnet18, 4 stages, narrow decoder) at 160 px
infection  the built-in infection segmenter: the ``builtin`` U-Net with ``target="infection"`` at 128 px, 45 epochs
infection- the same U-Net at 256 px, 80 epochs (batch 32): the GPU plan's candidate for the built-in infection
gpu        segmenter (same size: it would ship within 10 MB), within the plan's time budget
demo       ``lungcls demo``: tiny models at 64 px, a few epochs (mechanics, not accuracy)
========== =================================================================================================
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from .config import AugmentConfig, ClassifierConfig, SegmenterConfig, TrainConfig
from .errors import ConfigError

log = logging.getLogger(__name__)

#: the built-in infection segmenter's U-Net (the built-in lung segmenter's, with target infection) at 128 px
_INFECTION = SegmenterConfig(
    target="infection", encoder_name="resnet18", encoder_depth=4, decoder_channels=[64, 32, 16, 8], image_size=128
)
SEGMENTER_RECIPES: dict[str, tuple[SegmenterConfig, TrainConfig]] = {
    "default": (SegmenterConfig(), TrainConfig(epochs=40, batch_size=32, lr=1e-3)),
    "cpu": (
        SegmenterConfig(encoder_name="resnet18", encoder_depth=4, image_size=128),
        TrainConfig(epochs=12, batch_size=16, lr=2e-3),
    ),
    "builtin": (
        SegmenterConfig(encoder_name="resnet18", encoder_depth=4, decoder_channels=[64, 32, 16, 8], image_size=160),
        TrainConfig(epochs=24, batch_size=16, lr=2e-3, ema_epochs=1.0),
    ),
    "infection": (_INFECTION, TrainConfig(epochs=45, batch_size=16, lr=2e-3, ema_epochs=1.0)),
    "infection-gpu": (
        dataclasses.replace(_INFECTION, image_size=256),
        TrainConfig(epochs=80, batch_size=32, lr=2e-3, ema_epochs=1.0),
    ),
    "demo": (
        SegmenterConfig(encoder_name="resnet18", encoder_depth=3, decoder_channels=[32, 16, 8], image_size=64),
        TrainConfig(epochs=6, batch_size=16, lr=3e-3, warmup_epochs=0.5),
    ),
}

_CLS_LOSS = {"label_smoothing": 0.1, "class_weighting": True}
CLASSIFIER_RECIPES: dict[str, tuple[ClassifierConfig, TrainConfig]] = {
    "default": (ClassifierConfig(), TrainConfig(epochs=80, batch_size=64, lr=1e-3, **_CLS_LOSS)),
    "cpu": (ClassifierConfig(arch="resnet18", image_size=128), TrainConfig(epochs=8, batch_size=32, **_CLS_LOSS)),
    "demo": (
        ClassifierConfig(arch="resnet18", image_size=64),
        TrainConfig(epochs=15, batch_size=16, lr=1e-3, warmup_epochs=1.0, **_CLS_LOSS),
    ),
}

RECIPES = {"segmenter": SEGMENTER_RECIPES, "classifier": CLASSIFIER_RECIPES}


def resolve_recipe(name: str | None, device: str | None = None) -> str:
    """The recipe ``auto`` (or None) means for a run on ``device``: ``default`` on a GPU, ``cpu`` on the CPU.

    A CPU run never starts the GPU recipe unasked: it takes the CPU recipe and says so (the GPU recipe, 40-80
    epochs of full-size models, takes many hours on a CPU).
    """
    if name not in (None, "auto"):
        return name
    import torch

    gpu = (device or "auto").startswith("cuda") or ((device or "auto") == "auto" and torch.cuda.is_available())
    if not gpu:
        log.warning(
            "no GPU: training with the 'cpu' recipe (small models, minutes to an hour); pass --recipe "
            "default for the GPU recipe, which takes many hours on a CPU"
        )
    return "default" if gpu else "cpu"


def segmenter_recipe(name: str = "auto", **overrides: Any) -> tuple[SegmenterConfig, TrainConfig]:
    """Stage-1 recipe ``name`` with ``overrides`` (fields of :class:`SegmenterConfig` or :class:`TrainConfig`).

    Raises:
        ConfigError: unknown recipe or field.
    """
    return _recipe("segmenter", name, overrides)  # type: ignore[return-value]


def classifier_recipe(name: str = "auto", **overrides: Any) -> tuple[ClassifierConfig, TrainConfig]:
    """Stage-2 recipe ``name`` with ``overrides`` (fields of :class:`ClassifierConfig` or :class:`TrainConfig`).

    Raises:
        ConfigError: unknown recipe or field.
    """
    return _recipe("classifier", name, overrides)  # type: ignore[return-value]


def _recipe(stage: str, name: str, overrides: dict[str, Any]) -> tuple[Any, TrainConfig]:
    recipes = RECIPES[stage]
    name = resolve_recipe(name, overrides.get("device"))
    if name not in recipes:
        raise ConfigError("recipe", f"unknown {stage} recipe {name!r}; choose auto or one of {', '.join(recipes)}")
    model, train = recipes[name]
    # fresh copies: a recipe is never changed by its users
    model, train = dataclasses.replace(model), dataclasses.replace(train, augment=dataclasses.replace(train.augment))
    model_fields = {f.name for f in dataclasses.fields(model)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} | {
        f.name for f in dataclasses.fields(AugmentConfig)
    }
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - model_fields - train_fields)
    if unknown:
        raise ConfigError(unknown[0], f"not a {stage} or training setting")
    if "encoder_depth" in given and "decoder_channels" not in given:
        given["decoder_channels"] = None  # re-derived for the new depth
    model = dataclasses.replace(model, **{k: v for k, v in given.items() if k in model_fields})
    augment = dataclasses.replace(
        train.augment, **{k: v for k, v in given.items() if k in _augment_fields() and k not in model_fields}
    )
    train = dataclasses.replace(
        train, augment=augment, **{k: v for k, v in given.items() if k in _train_fields() and k not in model_fields}
    )
    return model, train


def _train_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)} - {"augment"}


def _augment_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(AugmentConfig)}
