"""The Typer app, the exit codes, the options several commands share, and the helpers every command uses.

Option defaults are ``None`` wherever a recipe (:mod:`lungcls.recipes`) or the library decides, so
the CLI and the Python API train and run the same thing. Metavars are set explicitly so the help
reads the same on every Typer/Click version the package allows.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import __version__
from ..errors import LungclsError

class Command(typer.core.TyperCommand):
    """A command whose help reads like any Click CLI on every Typer version the package allows: usage
    ``lungcls segment [OPTIONS] INPUT...``, arguments listed by name with their help, options with their
    metavar (recent Typer versions print ``{INPUT...}...`` and ``<list[str]>`` instead)."""

    def collect_usage_pieces(self, ctx):  # noqa: D102
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if getattr(p, "param_type_name", "") == "argument":
                name = p.metavar or p.name.upper()
                pieces.append(name if p.nargs == 1 or name.endswith("...") else f"{name}...")
        return pieces

    def format_options(self, ctx, formatter):  # noqa: D102
        args, opts = [], []
        for p in self.get_params(ctx):
            if getattr(p, "param_type_name", "") == "argument":
                help_text = getattr(p, "help", "") or ""
                args.append((p.metavar or p.name.upper(), help_text + ("  [required]" if p.required else "")))
            else:
                record = p.get_help_record(ctx)
                if record:
                    opts.append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        if opts:
            with formatter.section("Options"):
                formatter.write_dl(opts)


class _Typer(typer.Typer):
    """A Typer app whose commands are all :class:`Command` instances."""

    def command(self, *args, cls=None, **kwargs):  # noqa: D102
        return super().command(*args, cls=cls or Command, **kwargs)


app = _Typer(
    name="lungcls",
    help="Lung segmentation and COVID-19 / Non-COVID / Normal classification of chest X-rays. "
    "Research use only: not a diagnostic device.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain Click help: the same layout on every Typer version the package allows
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = _Typer(help="Look at and split datasets.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class Mode(str, Enum):
    """Classifier inputs (see :mod:`lungcls.masking`)."""

    raw = "raw"
    masked = "masked"
    cropped = "cropped"
    masked_cropped = "masked-cropped"


class Recipe(str, Enum):
    """Training recipes (see :mod:`lungcls.recipes`)."""

    default = "default"
    cpu = "cpu"
    demo = "demo"


class SegRecipe(str, Enum):
    """Stage-1 training recipes (see :mod:`lungcls.recipes`)."""

    default = "default"
    cpu = "cpu"
    builtin = "builtin"
    demo = "demo"


class Placement(str, Enum):
    """Where the training cache lives on CUDA."""

    auto = "auto"
    device = "device"
    host = "host"


def _opt(help: str, metavar: str | None = None, *names: str, **kw) -> typer.models.OptionInfo:
    return typer.Option(*names, help=help, metavar=metavar, **kw)


# -- options shared by several commands (names follow the config fields) --------------------------
Roots = Annotated[list[Path], typer.Argument(help="Dataset roots (COVID-QU-Ex at any level, folders of data sets, "
                                             "set folders) or CSV manifests.", metavar="DATA...")]  # fmt: skip
TrainData = Annotated[list[Path], typer.Argument(help="Dataset roots, CSV manifests (e.g. a split from `lungcls data "
                                                 "split`), or one packed cache.", metavar="DATA...")]  # fmt: skip
Inputs = Annotated[list[str], typer.Argument(help="Image files, folders (searched recursively) or globs.", metavar="INPUT...")]
Out = Annotated[Path, _opt("Run folder to write.", "DIR")]
Device = Annotated[Optional[str], _opt("Where to run: auto (CUDA if present), cpu, cuda or cuda:N.", "DEVICE")]
Cpu = Annotated[bool, _opt("Run on the CPU (same as --device cpu).", "", "--cpu")]
Epochs = Annotated[Optional[int], _opt("Passes over the training split (default: the recipe's).", "N")]
BatchSize = Annotated[Optional[int], _opt("Images per training step, over all processes (default: the recipe's).", "N")]
Lr = Annotated[Optional[float], _opt("Peak AdamW learning rate (default: the recipe's).", "LR")]
Patience = Annotated[Optional[int], _opt("Stop after this many epochs without a better validation metric (0 = never).", "N")]
Seed = Annotated[Optional[int], _opt("Seeds weights, split, shuffling and augmentation (default 0).", "N")]
Compile = Annotated[bool, _opt("torch.compile the model (faster on a GPU after a warm-up).", "", "--compile")]
EmaEpochs = Annotated[Optional[float], _opt("Validate and save a moving average of the weights, time constant in "
                                            "epochs (0 = off).", "EPOCHS")]  # fmt: skip
Deterministic = Annotated[bool, _opt("Deterministic kernels where torch has them (slower on CUDA; see the README).", "",
                                     "--deterministic")]  # fmt: skip
PlacementOpt = Annotated[Optional[Placement], _opt("On CUDA, keep the cache on the device, in pinned host memory, or "
                                                   "choose automatically.", "[auto|device|host]")]  # fmt: skip
CacheDir = Annotated[Optional[Path], _opt("Where to cache the data (default OUT/cache).", "DIR", "--cache")]
Resume = Annotated[bool, _opt("Continue the interrupted run in OUT with its saved settings.", "", "--resume")]
Overwrite = Annotated[bool, _opt("Replace the run in OUT (its files only; other files stay).", "", "--overwrite")]
Strict = Annotated[bool, _opt("Refuse data leaks (a patient or picture in two splits, test images a model saw) "
                              "instead of warning.", "", "--strict")]  # fmt: skip
TensorBoard = Annotated[bool, _opt("Also log to OUT/tensorboard (scalars per epoch, sample images with masks); "
                                   "needs: pip install 'lungcls[tensorboard]'.", "", "--tensorboard")]  # fmt: skip
Force = Annotated[bool, _opt("Allow --out inside an input folder, or replace an existing output file.", "", "--force")]
Workers = Annotated[Optional[int], _opt("Decoding processes (default: all CPU cores).", "N")]
InferenceBatch = Annotated[Optional[int], _opt("Images per forward pass (default: 64-256 on a GPU, 8 on CPU).", "N",
                                               "--batch-size")]  # fmt: skip
Quiet = Annotated[bool, _opt("No progress bars and no per-epoch lines; errors and the summary only.", "",
                             "--quiet", "-q", "--no-progress")]  # fmt: skip
Verbose = Annotated[bool, _opt("Log more (debug messages).", "", "--verbose", "-v")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lungcls {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, _opt("Show the version and exit.", "", "--version", callback=_version, is_eager=True)] = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    configure_output(verbose, quiet)


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


def command_output(verbose: bool, quiet: bool) -> None:
    """A command's own ``-v`` / ``-q`` (given after its name)."""
    if verbose or quiet:
        configure_output(verbose, quiet)


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


@contextlib.contextmanager
def library_errors(resume_hint: str | None = None) -> Iterator[None]:
    """Turn the library's errors into ``error: ...`` and exit 2; Ctrl-C into a short note and exit 130."""
    try:
        yield
    except (LungclsError, ValueError) as e:
        raise fail(e) from None
    except KeyboardInterrupt:
        typer.secho("\ninterrupted." + (f" {resume_hint}" if resume_hint else ""), err=True, fg="yellow")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def refuse_out_inside_inputs(out: Path, inputs: list[Path], force: bool) -> None:
    """Refuse an output inside an input folder, or equal to an input file, unless ``force``."""
    out_r = out.resolve()
    for r in inputs:
        if not r.exists():
            continue
        folder = r.resolve()
        inside = out_r == folder or (r.is_dir() and folder in out_r.parents)
        if inside and not force:
            raise fail(f"--out {out} is inside the input folder {r}; choose another place or pass --force")
        if r.is_file() and out_r == folder:
            raise fail(f"--out {out} is one of the inputs")


def refuse_existing_file(out: Path, force: bool) -> None:
    """Refuse to replace an existing output file unless ``force``."""
    if out.exists() and not force:
        raise fail(f"{out} exists; pass --force to replace it")


def echo_table(rows: list[dict], columns: list[str]) -> None:
    """A small aligned text table (every command prints its tables this way)."""
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    typer.echo("  ".join(f"{c:<{widths[c]}}" for c in columns))
    for r in rows:
        typer.echo("  ".join(f"{str(r.get(c, '')):<{widths[c]}}" for c in columns))
