"""The Typer app, the exit codes, the options several commands share, and the helpers every command uses.

Option defaults are ``None`` wherever a recipe (:mod:`lungcls.recipes`) or the library decides, so
the CLI and the Python API train and run the same thing. Metavars are set explicitly so the help
reads the same on every Typer/Click version the package allows. Every command gets ``--cpu``, ``-q`` and
``-v`` (:mod:`lungcls.cli.options`), before or after its name. Nothing here imports torch: ``lungcls
--help`` is quick, and each command imports what it uses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from ..errors import LungclsError
from ..version import __version__
from .options import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    Common,
    Cpu,
    Quiet,
    Verbose,
    configure_output,
    fail,
    opt,
    with_options,
)

__all__ = ["EXIT_INTERRUPTED", "EXIT_OK", "EXIT_SOME_FAILED", "EXIT_USAGE", "app", "data_app"]


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
    """A Typer app whose commands are all :class:`Command` instances and take the shared option groups
    (:func:`lungcls.cli.options.with_options`: ``--cpu``, ``-q``, ``-v`` on every command)."""

    def command(self, *args, cls=None, **kwargs):  # noqa: D102
        register = super().command(*args, cls=cls or Command, **kwargs)
        return lambda fn: register(with_options(fn))


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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lungcls {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool, opt("Show the version and exit.", "", "--version", callback=_version, is_eager=True)
    ] = False,
    cpu: Cpu = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    ctx.obj = Common(cpu, quiet, verbose)
    configure_output(verbose, quiet)


@contextlib.contextmanager
def library_errors(resumable: bool = False) -> Iterator[None]:
    """Turn the library's errors into ``error: ...`` and exit 2; Ctrl-C into a short note and exit 130 (for training,
    with the exact command that continues: this one, with ``--resume``)."""
    try:
        yield
    except (LungclsError, ValueError) as e:
        raise fail(e) from None
    except KeyboardInterrupt:
        hint = f" Where training stood is saved; continue it with:\n  {resume_command()}" if resumable else ""
        typer.secho("\ninterrupted." + hint, err=True, fg="yellow")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def resume_command(argv: list[str] | None = None) -> str:
    """The command that continues an interrupted run: this one, with ``--resume`` and without ``--overwrite``."""
    import shlex
    import sys

    args = [a for a in (sys.argv[1:] if argv is None else argv) if a not in ("--overwrite", "--resume")]
    return shlex.join(["lungcls", *args, "--resume"])


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


def refuse_existing(out: Path, force: bool, folder: bool = False) -> Path:
    """The output policy (:mod:`lungcls.output_policy`) checked before any work: exit 2, nothing touched."""
    from ..output_policy import check_file, check_folder

    try:
        return check_folder(out, force) if folder else check_file(out, force)
    except LungclsError as e:
        raise fail(e) from None


def expand(inputs: list[str], out: Path, force: bool):
    """Expand the inputs; exit 2 (and create nothing) when there is nothing usable to work on."""
    from ..input_paths import expand_inputs

    found = expand_inputs(inputs)
    refuse_out_inside_inputs(out, [Path(i) for i in inputs], force)
    if not found.paths:
        reasons = "; ".join(f"{p['path']}: {p['reason']}" for p in found.problems) or "no inputs given"
        raise fail(f"nothing usable to work on ({reasons})")
    return found


def report_rows(rows: list[dict], found, out: Path, verb: str, class_names: list[str] | None = None) -> None:
    """The summary every per-file command prints; exit 1 when an input failed."""
    from collections import Counter

    done = [r for r in rows if not r.get("error")]
    failed = [r for r in rows if r.get("error")] + found.problems
    flagged = [r for r in done if r.get("flags")]
    counts = Counter(r["predicted"] for r in done) if class_names else {}
    line = f"{len(done)} images {verb}" + (
        ": " + ", ".join(f"{n} {counts.get(n, 0)}" for n in class_names) if class_names else ""
    )
    typer.echo(f"{line}; {len(flagged)} flagged, {len(failed)} failed; results in {out}")
    decided = Counter(r["decision"] for r in done if r.get("decision"))
    if decided:
        typer.echo("decisions: " + ", ".join(f"{d} {n}" for d, n in decided.most_common()))
        for r in [r for r in done if r.get("decision") in ("refused", "abstained", "raw-fallback")][:10]:
            typer.secho(f"  {r['decision']} {r['path']}: {r['decision_reason']}", fg="yellow")
    if class_names:
        typer.echo("Research use only: not a diagnosis.")
    for r in flagged[:20]:
        typer.secho(f"  flagged {r['path']}: {r['flags']}", fg="yellow")
    if len(flagged) > 20:
        typer.secho(f"  ... and {len(flagged) - 20} more flagged (see the CSV)", fg="yellow")
    if found.skipped_folders:
        typer.secho(
            f"  skipped {len(found.skipped_folders)} mask folders of known layouts (e.g. "
            f"{found.skipped_folders[0]}); name them explicitly to read them",
            fg="yellow",
        )
    if found.skipped:
        typer.secho(f"  skipped {len(found.skipped)} files that are not images lungcls reads:", fg="yellow")
        for s in found.skipped[:10]:
            typer.secho(f"    {s['path']}: {s['reason']}", fg="yellow")
    for r in failed:
        typer.secho(f"  failed {r['path']}: {r.get('error') or r.get('reason')}", err=True, fg="red")
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def echo_table(rows: list[dict], columns: list[str]) -> None:
    """A small aligned text table (every command prints its tables this way)."""
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    typer.echo("  ".join(f"{c:<{widths[c]}}" for c in columns))
    for r in rows:
        typer.echo("  ".join(f"{str(r.get(c, '')):<{widths[c]}}" for c in columns))
