"""Stage 1 commands: train-seg, evaluate-seg, segment, models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import (
    EXIT_SOME_FAILED,
    BatchSize,
    CacheDir,
    Compile,
    Cpu,
    Deterministic,
    Device,
    EmaEpochs,
    Epochs,
    Force,
    InferenceBatch,
    Inputs,
    Lr,
    Out,
    Overwrite,
    Patience,
    PlacementOpt,
    Quiet,
    Resume,
    Seed,
    SegRecipe,
    Strict,
    TensorBoard,
    TrainData,
    Verbose,
    _opt,
    app,
    command_output,
    device_of,
    fail,
    library_errors,
    refuse_out_inside_inputs,
)

SegModel = Annotated[Optional[str], _opt("A built-in model's name (see `lungcls models`), a train-seg run folder or a "
                                         "bundle (default: the built-in model).", "NAME|DIR")]  # fmt: skip


@app.command("train-seg")
def train_seg(
    data: TrainData,
    out: Out,
    recipe: Annotated[SegRecipe, _opt("Starting recipe; the options below change single settings.", "[default|cpu|builtin|demo]")] = SegRecipe.default,
    encoder: Annotated[Optional[str], _opt("smp encoder name (resnet34, resnet18, mobilenet_v2 ...).", "NAME")] = None,
    encoder_weights: Annotated[Optional[str], _opt("Start the encoder from 'imagenet' (smp's local cache) or a "
                                                   "weights file.", "imagenet|FILE")] = None,  # fmt: skip
    encoder_depth: Annotated[Optional[int], _opt("Encoder stages, 3 to 5.", "N")] = None,
    decoder_channels: Annotated[Optional[str], _opt("Decoder widths, one per encoder stage, e.g. 64,32,16,8.", "LIST")] = None,
    image_size: Annotated[Optional[int], _opt("The U-Net's input size in pixels.", "PX")] = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    patience: Patience = None,
    seed: Seed = None,
    ema_epochs: EmaEpochs = None,
    device: Device = None,
    cpu: Cpu = False,
    compile: Compile = False,
    deterministic: Deterministic = False,
    placement: PlacementOpt = None,
    cache: CacheDir = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    strict: Strict = False,
    tensorboard: TensorBoard = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Train the lung U-Net (stage 1) on the images that have lung masks; evaluates Val and Test at the end."""
    from ..recipes import segmenter_recipe
    from ..seg.train import train_segmenter

    command_output(verbose, quiet)
    refuse_out_inside_inputs(out, data, force=False)
    channels = [int(c) for c in decoder_channels.split(",")] if decoder_channels else None
    with library_errors(f"Continue it with the same command and --resume (run folder {out})."):
        model, train = segmenter_recipe(
            recipe.value, encoder_name=encoder, encoder_depth=encoder_depth, decoder_channels=channels,
            image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, seed=seed,
            ema_epochs=ema_epochs, device=device_of(device, cpu), compile=compile or None,
            deterministic=deterministic or None, placement=placement.value if placement else None,
        )  # fmt: skip
        run = train_segmenter(data, out, model, train, cache_dir=cache, encoder_weights=encoder_weights,
                              resume=resume, overwrite=overwrite, strict=strict, progress=not quiet, tensorboard=tensorboard)  # fmt: skip
    typer.echo(f"best val Dice {run.fit.best_metric:.4f} at epoch {run.fit.best_epoch}; run written to {out}")
    for name, report in run.reports.items():
        typer.echo(f"\n{name}:\n{report.markdown()}")


@app.command("evaluate-seg")
def evaluate_seg(
    data: TrainData,
    model: SegModel = None,
    split: Annotated[Optional[str], _opt("Only this split (default: every image with a mask).", "NAME")] = None,
    out: Annotated[Optional[Path], _opt("Write eval_seg_<split>.json/.md and outlines_<split>.png here.", "DIR")] = None,
    device: Device = None,
    cpu: Cpu = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Dice, IoU (mean, median, 5th percentile), pixel accuracy and HD95, overall and per source set."""
    import tempfile

    from ..data.training_data import open_eval_data
    from ..seg.evaluate import evaluate_segmenter, write_segmentation_report
    from ..seg.segmenter import Segmenter

    command_output(verbose, quiet)
    with library_errors(), tempfile.TemporaryDirectory() as tmp:
        segmenter = Segmenter.load(model or "", device=device_of(device, cpu))
        cache = open_eval_data(data, 256, Path(tmp) / "cache", progress=not quiet)
        report = evaluate_segmenter(segmenter, cache, cache.indices(split, with_mask=True), (split or "all").lower(),
                                    progress=not quiet)  # fmt: skip
        if report.summary["dice"]["n"] == 0:
            raise fail("no image with a lung mask to evaluate on" + (f" in split {split!r}" if split else ""))
    typer.echo(report.markdown())
    if out is not None:
        written = write_segmentation_report(report, out)
        typer.echo("written: " + ", ".join(str(p) for p in written))


@app.command("segment")
def segment(
    inputs: Inputs,
    out: Annotated[Path, _opt("Output folder (masks/, overlays/, crops/, segment.csv).", "DIR")],
    model: SegModel = None,
    batch_size: InferenceBatch = None,
    device: Device = None,
    cpu: Cpu = False,
    force: Force = False,
    masks_only: Annotated[bool, _opt("Write the masks and segment.csv only (no overlays, no crops).")] = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Segment the lungs: a mask, an outline overlay and a lung crop per image, and a CSV.

    Without --model the built-in lung segmenter is used: nothing to train, nothing downloaded.
    """
    from ..outputs import segment_files
    from ..seg.segmenter import Segmenter

    command_output(verbose, quiet)
    found = _inputs(inputs, out, force)
    with library_errors():
        segmenter = Segmenter.load(model or "", device=device_of(device, cpu), batch_size=batch_size)
    if model is None:
        typer.echo(f"segmenter: built-in model {segmenter.info['source']['name']!r}", err=True)
    rows = segment_files(found.paths, segmenter, out, progress=not quiet, masks_only=masks_only)
    report_rows(rows, found, out / "segment.csv", "segmented")


def _inputs(inputs: list[str], out: Path, force: bool):
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
    line = f"{len(done)} images {verb}"
    if class_names:
        counts = Counter(r["predicted"] for r in done)
        line += ": " + ", ".join(f"{n} {counts.get(n, 0)}" for n in class_names)
    typer.echo(f"{line}; {len(flagged)} flagged, {len(failed)} failed; results in {out}")
    if class_names:
        typer.echo("Research use only: not a diagnosis.")
    for r in flagged[:20]:
        typer.secho(f"  flagged {r['path']}: {r['flags']}", fg="yellow")
    if len(flagged) > 20:
        typer.secho(f"  ... and {len(flagged) - 20} more flagged (see the CSV)", fg="yellow")
    if found.skipped:
        typer.secho(f"  skipped {len(found.skipped)} files that are not images lungcls reads:", fg="yellow")
        for s in found.skipped[:10]:
            typer.secho(f"    {s['path']}: {s['reason']}", fg="yellow")
    for r in failed:
        typer.secho(f"  failed {r['path']}: {r.get('error') or r.get('reason')}", err=True, fg="red")
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)


@app.command("models")
def models(
    card: Annotated[Optional[str], _opt("Print this built-in model's whole model card.", "NAME")] = None,
) -> None:
    """List the built-in models shipped with lungcls, with their model card's summary."""
    from .. import builtin

    if card is not None:
        with library_errors():
            typer.echo(builtin.card(card))
        return
    names = builtin.names()
    if not names:
        typer.echo("no built-in models in this installation")
        return
    for name in names:
        s = builtin.summary(name)
        default = " (default)" if name == builtin.DEFAULT else ""
        typer.echo(f"{name}{default}: {s.get('description', '')}")
        for key in ("architecture", "trained_on", "mask_convention", "dice", "size_mb", "trained_where"):
            if s.get(key) is not None:
                typer.echo(f"  {key.replace('_', ' ')}: {s[key]}")
    typer.echo("\nWhole model card: lungcls models --card NAME")
