"""Commands on datasets: data inspect, data split, prepare."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..defaults import WORKING_SIZE
from .app import app, data_app, echo_table, library_errors, refuse_existing, refuse_out_inside_inputs
from .options import EXIT_SOME_FAILED, Common, Force, Roots, Workers, opt

Part = Annotated[Optional[str], opt("COVID-QU-Ex part to use when a root holds several.", "NAME")]
Val = Annotated[float, opt("Share of the images without a split that go to Val.", "FRACTION")]
Test = Annotated[
    float, opt("Share that goes to Test (also carved out of Train where the data has only Train and Val).", "FRACTION")
]
SplitSeed = Annotated[int, opt("Seed of the split.", "N")]
Masks = Annotated[
    str, opt("The masks to read: lungs, or infection (COVID-QU-Ex's infection masks).", "lungs|infection")
]


def _open(roots: list[Path], part: str | None, say: bool = True, masks: str = "lungs"):
    from ..data import open_dataset

    with library_errors():
        found = open_dataset(roots, part=part, masks=masks)
    for note in found.notes if say else []:
        typer.secho(f"note: {note}", err=True, fg="yellow")
    return found


def echo_counts(counts: dict[str, dict[str, int]]) -> None:
    """Images per split and class as a table (``prepare`` and ``data split`` print this)."""
    names = list(dict.fromkeys(n for c in counts.values() for n in c))
    rows = [{"split": s, **c, "total": sum(c.values())} for s, c in counts.items()]
    echo_table(rows, ["split", *names, "total"])


@data_app.command("inspect")
def data_inspect(
    roots: Roots,
    part: Part = None,
    json_out: Annotated[Optional[Path], opt("Also write the full report as JSON.", "FILE", "--json")] = None,
    workers: Workers = None,
    strict: Annotated[bool, opt("Exit 1 when an image or patient is in two splits.", "", "--strict")] = False,
    force: Force = False,
    common: Common = None,
) -> None:
    """Counts per split, class and source; the label mapping; unreadable files, mask problems, sizes,
    duplicates, patient overlap."""
    from ..atomic import write_json
    from ..data.inspect import format_report, inspect_dataset

    if json_out is not None:
        refuse_existing(json_out, force)
    found = _open(roots, part, say=False)  # the report says what was found
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
    out: Annotated[Path, opt("Where to write the split manifest (CSV).", "FILE")],
    val: Val = 0.1,
    test: Test = 0.2,
    seed: SplitSeed = 0,
    part: Part = None,
    resplit: Annotated[bool, opt("Ignore the splits the data already has.", "", "--resplit")] = False,
    masks: Masks = "lungs",
    workers: Workers = None,
    force: Force = False,
    common: Common = None,
) -> None:
    """Seeded, class-stratified, patient-grouped Train/Val/Test split, written as a CSV manifest.

    Images without a split are split; data with Train and Val but no Test keeps Val and has Test
    carved out of Train; existing splits are kept. Patients and duplicate pictures stay on one side.
    Pass the CSV to train-seg, train-cls and train so that both stages share one split.
    """
    from ..data.cache import cached_duplicates
    from ..data.split import complete_split

    refuse_out_inside_inputs(out, roots, force)
    refuse_existing(out, force)
    found = _open(roots, part, masks=masks)
    duplicates = cached_duplicates(found.manifest, workers=workers)
    with library_errors():
        split, what = complete_split(found.manifest, val, test, seed, duplicates, resplit=resplit)
    split.write_csv(out)
    typer.echo(what)
    echo_counts(split.counts())
    typer.echo(f"split manifest written to {out}")


@app.command("prepare")
def prepare(
    roots: Roots,
    out: Annotated[Path, opt("Cache folder to write.", "DIR")],
    size: Annotated[int, opt("Working size in pixels (square).", "PX")] = WORKING_SIZE,
    make_split: Annotated[bool, opt("Split Train/Val/Test first, as `data split` does.", "", "--make-split")] = False,
    val: Val = 0.1,
    test: Test = 0.2,
    seed: SplitSeed = 0,
    part: Part = None,
    masks: Masks = "lungs",
    workers: Workers = None,
    force: Force = False,
    common: Common = None,
) -> None:
    """Decode every image and mask once into a packed uint8 cache (memory-mapped at training time); a cache
    that is there already is brought up to date, any other non-empty folder is refused unless --force."""
    from ..data.cache import is_cache
    from ..data.training_data import split_and_cache

    refuse_out_inside_inputs(out, roots, force)
    if not is_cache(out):
        refuse_existing(out, force, folder=True)
    found = _open(roots, part, masks=masks)
    with library_errors():
        done = split_and_cache(
            found.manifest,
            out,
            size,
            split="complete" if make_split else "none",
            val=val,
            test=test,
            seed=seed,
            workers=workers,
            progress=common.progress,
        )
    result = done.prepared
    if done.split:
        typer.echo(done.split)
    if result.up_to_date:
        typer.echo(f"{out}: up to date ({result.count} images), nothing to do")
    else:
        typer.echo(
            f"{out}: {result.count} images cached ({result.decoded} decoded, {result.reused} reused) "
            f"in {result.seconds:.1f} s"
        )
    for f in result.failed:
        typer.secho(f"  skipped {f['path']}: {f['reason']}", err=True, fg="yellow")
    echo_counts(result.counts)
    if result.failed:
        raise typer.Exit(EXIT_SOME_FAILED)
