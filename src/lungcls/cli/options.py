"""The options several commands share, declared once each, and how they reach a command.

A group is a dataclass of options (the fields) with the Typer declaration of each. :func:`with_options`
adds a group's options to a command's signature (Typer reads them from there) and hands the command one
object: ``--epochs ... --tensorboard`` arrive as ``training: Training``. Every command gets the
:class:`Common` group (``--cpu``, ``-q``, ``-v``) this way, merged with the same flags given before the
command's name.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class Mode(str, Enum):
    """Classifier inputs (see :mod:`lungcls.masking`)."""

    raw = "raw"
    masked = "masked"
    cropped = "cropped"
    masked_cropped = "masked-cropped"


class Recipe(str, Enum):
    """Training recipes of both stages (see :mod:`lungcls.recipes`); ``auto``: ``default`` on a GPU, else ``cpu``."""

    auto = "auto"
    default = "default"
    cpu = "cpu"
    demo = "demo"


class SegRecipe(str, Enum):
    """Stage-1 training recipes (see :mod:`lungcls.recipes`)."""

    auto = "auto"
    default = "default"
    cpu = "cpu"
    builtin = "builtin"
    infection = "infection"
    infection_gpu = "infection-gpu"
    demo = "demo"


class Placement(str, Enum):
    """Where the training cache lives on CUDA."""

    auto = "auto"
    device = "device"
    host = "host"


def opt(help: str, metavar: str | None = None, *names: str, **kw) -> typer.models.OptionInfo:
    return typer.Option(*names, help=help, metavar=metavar, **kw)


# -- arguments and options several commands share (names follow the config fields) -------------------------------
Roots = Annotated[
    list[Path],
    typer.Argument(
        help="Dataset roots (COVID-QU-Ex at any level, folders of data sets, set folders) or CSV manifests.",
        metavar="DATA...",
    ),
]
TrainData = Annotated[
    list[Path],
    typer.Argument(
        help="Dataset roots, CSV manifests (e.g. a split from `lungcls data split`), or one packed cache.",
        metavar="DATA...",
    ),
]
Inputs = Annotated[
    list[str],
    typer.Argument(
        help="Image files, folders (searched recursively; the mask folders of known layouts are skipped) or globs.",
        metavar="INPUT...",
    ),
]
RunFolder = Annotated[Path, opt("Run folder to write.", "DIR")]
Device = Annotated[Optional[str], opt("Where to run: auto (CUDA if present), cpu, cuda or cuda:N.", "DEVICE")]
Force = Annotated[
    bool, opt("Replace existing outputs (atomically), or allow --out inside an input folder.", "", "--force")
]
Workers = Annotated[Optional[int], opt("Decoding processes (default: all CPU cores).", "N")]
InferenceBatch = Annotated[
    Optional[int], opt("Images per forward pass (default: 64-256 on a GPU, 8 on CPU).", "N", "--batch-size")
]
Cpu = Annotated[
    bool, opt("Run on the CPU (same as --device cpu; commands that use no model run there anyway).", "", "--cpu")
]
Quiet = Annotated[
    bool,
    opt("No progress bars and no per-epoch lines; errors and the summary only.", "", "--quiet", "-q", "--no-progress"),
]
Verbose = Annotated[bool, opt("Log more (debug messages).", "", "--verbose", "-v")]


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (a test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        import sys

        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # a closed stream must not stop the work
            self.handleError(record)


def configure_output(verbose: bool = False, quiet: bool = False) -> None:
    """Logging for the command line: lungcls's INFO lines (epochs, what was chosen) by default, DEBUG with
    ``-v``, warnings only with ``-q`` (which also turns the progress bars off). The root callback sets it
    for every command; a command's own ``-v``/``-q`` set it again, so the flags work after its name too."""
    from ..progress import set_enabled

    logger = logging.getLogger("lungcls")
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.propagate = False
    set_enabled(not quiet)


def fail(e: Exception | str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print ``error: ...`` on stderr and return the Exit to raise."""
    typer.secho(f"error: {e}", err=True, fg="red")
    return typer.Exit(code)


def device_of(device: str | None, cpu: bool) -> str:
    """The device string from ``--device`` and ``--cpu``, checked now (exit 2 on an unknown form)."""
    from ..engine.device import resolve_device

    if cpu and device not in (None, "cpu"):
        raise fail(f"--cpu and --device {device} disagree")
    spec = "cpu" if cpu else device or "auto"
    try:
        resolve_device(spec)
    except ValueError as e:
        raise fail(e) from None
    return spec


@dataclass
class Common:
    """``--cpu``, ``-q``, ``-v``: every command takes them, before or after its name."""

    cpu: Cpu = False
    quiet: Quiet = False
    verbose: Verbose = False

    def device(self, device: str | None) -> str:
        """The device string from ``--device`` and ``--cpu``, checked now (exit 2 on an unknown form)."""
        return device_of(device, self.cpu)

    @property
    def progress(self) -> bool:
        """Progress bars on (not ``-q``)."""
        return not self.quiet


@dataclass
class Training:
    """The training options of ``train-seg``, ``train-cls`` and ``train`` (fields of :class:`lungcls.config.TrainConfig`
    and of the run folder); ``None`` falls through to the recipe."""

    epochs: Annotated[Optional[int], opt("Passes over the training split (default: the recipe's).", "N")] = None
    batch_size: Annotated[
        Optional[int], opt("Images per training step, over all processes (default: the recipe's).", "N")
    ] = None
    lr: Annotated[Optional[float], opt("Peak AdamW learning rate (default: the recipe's).", "LR")] = None
    patience: Annotated[
        Optional[int], opt("Stop after this many epochs without a better validation metric (0 = never).", "N")
    ] = None
    seed: Annotated[Optional[int], opt("Seeds weights, split, shuffling and augmentation (default 0).", "N")] = None
    ema_epochs: Annotated[
        Optional[float],
        opt("Validate and save a moving average of the weights, time constant in epochs (0 = off).", "EPOCHS"),
    ] = None
    time_budget: Annotated[
        Optional[float],
        opt(
            "Seconds the whole run may take: it measures its first epochs, trains as many as fit (at most --epochs) "
            "and always evaluates and saves.",
            "SECONDS",
        ),
    ] = None
    device: Annotated[Optional[str], opt("Where to run: auto (CUDA if present), cpu, cuda or cuda:N.", "DEVICE")] = None
    compile: Annotated[bool, opt("torch.compile the model (faster on a GPU after a warm-up).", "", "--compile")] = False
    deterministic: Annotated[
        bool, opt("Deterministic kernels where torch has them (slower on CUDA; see the README).", "", "--deterministic")
    ] = False
    placement: Annotated[
        Optional[Placement],
        opt(
            "On CUDA, keep the cache on the device, in pinned host memory, or choose automatically.",
            "[auto|device|host]",
        ),
    ] = None
    cache: Annotated[Optional[Path], opt("Where to cache the data (default OUT/cache).", "DIR", "--cache")] = None
    resume: Annotated[
        bool,
        opt(
            "Continue the interrupted run in OUT with its saved settings (also after Ctrl-C in the first epoch).",
            "",
            "--resume",
        ),
    ] = False
    overwrite: Annotated[bool, opt("Replace the run in OUT (its files only; other files stay).", "", "--overwrite")] = (
        False
    )
    strict: Annotated[
        bool,
        opt(
            "Refuse data leaks (a patient or picture in two splits, test images a model saw) instead of warning.",
            "",
            "--strict",
        ),
    ] = False
    tensorboard: Annotated[
        bool,
        opt(
            "Also log to OUT/tensorboard (scalars per epoch, sample images with masks); "
            "needs: pip install 'lungcls[tensorboard]'.",
            "",
            "--tensorboard",
        ),
    ] = False

    def recipe_overrides(self, common: Common) -> dict[str, Any]:
        """The :class:`~lungcls.config.TrainConfig` fields given (None: the recipe's)."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "patience": self.patience,
            "seed": self.seed,
            "ema_epochs": self.ema_epochs,
            "time_budget": self.time_budget,
            "device": common.device(self.device),
            "compile": self.compile or None,
            "deterministic": self.deterministic or None,
            "placement": self.placement.value if self.placement else None,
        }

    def run_options(self, common: Common) -> dict[str, Any]:
        """The run-folder arguments of :func:`lungcls.stage.run_stage`."""
        return {
            "cache_dir": self.cache,
            "resume": self.resume,
            "overwrite": self.overwrite,
            "strict": self.strict,
            "tensorboard": self.tensorboard,
            "progress": common.progress,
        }


@dataclass
class ClassifierOptions:
    """What ``train-cls`` may change about the classifier itself (fields of :class:`lungcls.config.ClassifierConfig`
    and its initial weights); ``None`` falls through to the recipe."""

    arch: Annotated[
        Optional[str],
        opt("A registered classifier (lungcls.models.CLASSIFIERS): resnet50, or resnet18 for quick runs.", "NAME"),
    ] = None
    image_size: Annotated[Optional[int], opt("Classifier input size in pixels.", "PX")] = None
    margin: Annotated[Optional[float], opt("Crop margin, a fraction of the lung box on each side.", "FRACTION")] = None
    label_smoothing: Annotated[Optional[float], opt("Cross-entropy label smoothing.", "EPS")] = None
    class_weighting: Annotated[
        Optional[bool],
        opt("Inverse-frequency class weights in the loss.", "", "--class-weighting/--no-class-weighting"),
    ] = None
    pretrained: Annotated[
        bool, opt("Start from ImageNet weights in torchvision's local cache (never downloaded).", "", "--pretrained")
    ] = False
    weights: Annotated[
        Optional[Path],
        opt(
            "Start from this weights file: ImageNet weights, or the model.safetensors of a lung U-Net with the same "
            "encoder (in-domain pretraining, e.g. train-seg --encoder resnet50).",
            "FILE",
        ),
    ] = None

    def recipe_overrides(self) -> dict[str, Any]:
        """The recipe fields given (None: the recipe's)."""
        return {
            "arch": self.arch,
            "image_size": self.image_size,
            "margin": self.margin,
            "label_smoothing": self.label_smoothing,
            "class_weighting": self.class_weighting,
        }

    def initial_weights(self) -> str | Path | None:
        """``"imagenet"``, a file or None.

        Raises:
            typer.Exit: both ``--pretrained`` and ``--weights``.
        """
        if self.pretrained and self.weights is not None:
            raise fail("give either --pretrained or --weights, not both")
        return "imagenet" if self.pretrained else self.weights


def with_options(fn: Callable) -> Callable:
    """Add the options of every group ``fn`` takes (a parameter annotated with a group of :data:`GROUPS`;
    :class:`Common` is added to every command, even one that does not take it) to its signature, and build the
    group objects from them when it is called. ``-q`` and ``-v`` take effect before ``fn`` runs."""
    signature = inspect.signature(fn, eval_str=True)
    groups = {name: p.annotation for name, p in signature.parameters.items() if p.annotation in GROUPS}
    wants_common = "common" in groups
    groups.setdefault("common", Common)
    own = [p for name, p in signature.parameters.items() if name not in groups]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for cls in groups.values()
        for name, default, annotation in _options(cls)
    ]

    @functools.wraps(fn)
    def command(**kwargs: Any) -> Any:
        built = {
            group: cls(**{name: kwargs.pop(name) for name, _, _ in _options(cls)}) for group, cls in groups.items()
        }
        common = _merged(built["common"])
        configure_output(common.verbose, common.quiet)
        if wants_common:
            built["common"] = common
        else:
            built.pop("common")
        return fn(**kwargs, **built)

    command.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
    command.__annotations__ = {}
    return command


GROUPS = (Common, Training, ClassifierOptions)


def _options(cls: type) -> list[tuple[str, Any, Any]]:
    """(name, default, Typer annotation) of each option of a group."""
    hints = inspect.get_annotations(cls, eval_str=True)
    return [(f.name, f.default, hints[f.name]) for f in fields(cls)]


def _merged(own: Common) -> Common:
    """A command's ``--cpu -q -v`` together with the same flags given before its name (``lungcls --cpu segment``)."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root().obj if ctx is not None else None
    if not isinstance(root, Common):
        return own
    return Common(own.cpu or root.cpu, own.quiet or root.quiet, own.verbose or root.verbose)
