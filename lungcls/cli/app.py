"""The Typer app, the exit codes and the helpers every command shares."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import __version__
from ..errors import LungclsError

app = typer.Typer(
    name="lungcls",
    help="Lung segmentation and COVID-19 / Non-COVID / Normal classification of chest X-rays. "
    "Research use only: not a diagnostic device.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Look at and split datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2

Roots = Annotated[list[Path], typer.Argument(help="COVID-QU-Ex root(s) at any level, set folders, or CSV manifests.")]
# training options shared by train-seg and train-cls (names follow TrainConfig's fields)
Lr = Annotated[float, typer.Option(help="Peak AdamW learning rate.")]
Patience = Annotated[int, typer.Option(help="Early stopping after this many epochs without improvement (0 = off).")]
Seed = Annotated[int, typer.Option(help="Seeds weights, split, shuffling and augmentation.")]
Device = Annotated[str, typer.Option(help="auto, cuda, cuda:N or cpu.")]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the model.")]
EmaEpochs = Annotated[
    float, typer.Option(help="Validate and save a moving average of the weights, time constant in epochs (0 = off).")
]
Deterministic = Annotated[bool, typer.Option("--deterministic", help="Deterministic kernels only (slower on CUDA).")]
Placement = Annotated[
    str, typer.Option(help="On CUDA, keep the cache on the 'device', in pinned 'host' memory, or 'auto'.")
]
CacheDir = Annotated[Optional[Path], typer.Option("--cache", help="Where to cache the data (default OUT/cache).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in OUT with its saved settings.")]
Strict = Annotated[bool, typer.Option("--strict", help="Refuse data with a patient or picture in two splits.")]
Workers = Annotated[Optional[int], typer.Option(help="Decoding processes (default: all CPU cores).")]
InferenceBatch = Annotated[
    Optional[int], typer.Option("--batch-size", help="Images per forward pass (default: 64-256 on a GPU, 8 on CPU).")
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lungcls {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def _fail(e: Exception, code: int = EXIT_USAGE) -> typer.Exit:
    typer.secho(f"error: {e}", err=True, fg="red")
    return typer.Exit(code)


def _refuse_out_inside_inputs(out: Path, roots: list[Path], force: bool) -> None:
    """Refuse an output inside an input folder (a CSV manifest's own folder may hold outputs)."""
    out_r = out.resolve()
    for r in roots:
        folder = r.resolve()
        if out_r == folder or (r.is_dir() and folder in out_r.parents):
            if not force:
                raise _fail(
                    LungclsError(f"--out {out} is inside the input folder {r}; choose another folder or pass --force")
                )
