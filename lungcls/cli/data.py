"""Commands on datasets: data inspect, data split, prepare."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import LungclsError
from .app import EXIT_SOME_FAILED, Roots, Workers, _fail, _refuse_out_inside_inputs, app, data_app


@data_app.command("inspect")
def data_inspect(
    roots: Roots,
    part: Annotated[Optional[str], typer.Option(help="COVID-QU-Ex part when a root holds several.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the full report as JSON.")] = None,
    workers: Workers = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 when an image or patient is in two splits.")] = False,
) -> None:
    """Counts per split and class, unreadable files, mask problems, sizes, duplicates, patient overlap."""
    from ..atomic import write_json
    from ..data import open_dataset
    from ..data.inspect import format_report, inspect_dataset

    try:
        found = open_dataset(roots, part=part)
    except LungclsError as e:
        raise _fail(e) from None
    report, _ = inspect_dataset(found, workers=workers)
    typer.echo(format_report(report))
    if json_out is not None:
        write_json(json_out, report.to_dict())
        typer.echo(f"\nreport written to {json_out}")
    leaks = report.duplicates_across_splits or report.patients_across_splits
    if leaks:
        typer.secho(
            "\nWARNING: the same image or patient is in more than one split (data leak).", err=True, fg="yellow"
        )
    if not report.ok or (strict and leaks):
        raise typer.Exit(EXIT_SOME_FAILED)


@data_app.command("split")
def data_split(
    roots: Roots,
    out: Annotated[Path, typer.Option(help="Where to write the split manifest (CSV).")],
    val: Annotated[float, typer.Option(help="Fraction for validation.")] = 0.1,
    test: Annotated[float, typer.Option(help="Fraction for test.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 0,
    part: Annotated[Optional[str], typer.Option(help="COVID-QU-Ex part when a root holds several.")] = None,
    workers: Workers = None,
    force: Annotated[bool, typer.Option(help="Allow --out inside an input folder / overwrite.")] = False,
) -> None:
    """Seeded, class-stratified, patient-grouped Train/Val/Test split, written as a CSV manifest.

    Exact duplicate images (same pixels) are kept on one side, like images of one patient.
    """
    from ..data import make_split, open_dataset
    from ..data.inspect import inspect_dataset

    _refuse_out_inside_inputs(out, roots, force)
    if out.exists() and not force:
        raise _fail(LungclsError(f"{out} exists; pass --force to overwrite it"))
    try:
        found = open_dataset(roots, part=part)
    except LungclsError as e:
        raise _fail(e) from None
    _, duplicates = inspect_dataset(found, workers=workers)
    split = make_split(found.manifest, val=val, test=test, seed=seed, duplicates=duplicates)
    split.write_csv(out)
    for name, c in split.counts().items():
        typer.echo(f"{name:<6} " + "  ".join(f"{k} {v}" for k, v in c.items()) + f"  (total {sum(c.values())})")
    typer.echo(f"split manifest written to {out}")


@app.command("prepare")
def prepare(
    roots: Roots,
    out: Annotated[Path, typer.Option(help="Cache folder to write.")],
    size: Annotated[int, typer.Option(help="Working size in pixels (square).")] = 256,
    make_split: Annotated[
        bool, typer.Option("--make-split", help="Split Train/Val/Test by patient first (for data with no split).")
    ] = False,
    val: Annotated[float, typer.Option(help="With --make-split: fraction for validation.")] = 0.1,
    test: Annotated[float, typer.Option(help="With --make-split: fraction for test.")] = 0.2,
    seed: Annotated[int, typer.Option(help="With --make-split: seed of the split.")] = 0,
    part: Annotated[Optional[str], typer.Option(help="COVID-QU-Ex part when a root holds several.")] = None,
    workers: Workers = None,
    force: Annotated[bool, typer.Option(help="Allow --out inside an input folder.")] = False,
) -> None:
    """Decode every image and mask once into a packed uint8 cache (memory-mapped at training time)."""
    from ..data import make_split as split_fn
    from ..data import open_dataset, prepare_cache
    from ..data.cache import cached_duplicates

    _refuse_out_inside_inputs(out, roots, force)
    try:
        found = open_dataset(roots, part=part)
    except LungclsError as e:
        raise _fail(e) from None
    manifest = found.manifest
    if make_split:
        duplicates = cached_duplicates(manifest, out, workers=workers)
        manifest = split_fn(manifest, val=val, test=test, seed=seed, duplicates=duplicates)
    result = prepare_cache(manifest, out, size=(size, size), workers=workers)
    if result.up_to_date:
        typer.echo(f"{out}: up to date ({result.count} images), nothing to do")
    else:
        typer.echo(
            f"{out}: {result.count} images cached ({result.decoded} decoded, {result.reused} reused) in {result.seconds:.1f} s"
        )
    for f in result.failed:
        typer.secho(f"  skipped {f['path']}: {f['reason']}", err=True, fg="yellow")
    typer.echo(json.dumps(_counts(out)))
    if result.failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def _counts(out: Path) -> dict:
    from ..data import PackedCache

    return PackedCache.open(out).meta["counts"]
