"""Stage 1 commands: train-seg, evaluate-seg, segment, models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import app, expand, library_errors, refuse_existing, refuse_out_inside_inputs, report_rows
from .options import Common, Device, Force, InferenceBatch, Inputs, SegRecipe, TrainData, Training, fail, opt

SegModel = Annotated[
    Optional[str],
    opt(
        "A built-in model's name (see `lungcls models`), a train-seg run folder or a "
        "bundle (default: the built-in model).",
        "NAME|DIR",
    ),
]


@app.command("train-seg")
def train_seg(
    data: TrainData,
    out: Annotated[Path, opt("Run folder to write.", "DIR")],
    recipe: Annotated[
        SegRecipe,
        opt(
            "Starting recipe (auto: default on a GPU, cpu without one); the options below change single settings.",
            "[auto|default|cpu|builtin|infection|infection-gpu|demo]",
        ),
    ] = SegRecipe.auto,
    target: Annotated[
        Optional[str],
        opt(
            "What to segment: lungs, or infection (the data's infection masks; default: the recipe's).",
            "lungs|infection",
        ),
    ] = None,
    encoder: Annotated[Optional[str], opt("smp encoder name (resnet34, resnet18, mobilenet_v2 ...).", "NAME")] = None,
    encoder_weights: Annotated[
        Optional[str], opt("Start the encoder from 'imagenet' (smp's local cache) or a weights file.", "imagenet|FILE")
    ] = None,
    encoder_depth: Annotated[Optional[int], opt("Encoder stages, 3 to 5.", "N")] = None,
    decoder_channels: Annotated[
        Optional[str], opt("Decoder widths, one per encoder stage, e.g. 64,32,16,8.", "LIST")
    ] = None,
    image_size: Annotated[Optional[int], opt("The U-Net's input size in pixels.", "PX")] = None,
    training: Training = None,
    common: Common = None,
) -> None:
    """Train the lung U-Net (stage 1) on the images that have lung masks, or with --target infection an infection
    U-Net on the infection masks (empty masks count: they are images without infection); evaluates Val and Test."""
    from ..recipes import segmenter_recipe
    from ..seg.train import train_segmenter

    refuse_out_inside_inputs(out, data, force=False)
    channels = [int(c) for c in decoder_channels.split(",")] if decoder_channels else None
    with library_errors(resumable=True):
        model, train = segmenter_recipe(
            recipe.value,
            target=target,
            encoder_name=encoder,
            encoder_depth=encoder_depth,
            decoder_channels=channels,
            image_size=image_size,
            **training.recipe_overrides(common),
        )
        run = train_segmenter(data, out, model, train, encoder_weights=encoder_weights, **training.run_options(common))
    typer.echo(f"best val Dice {run.fit.best_metric:.4f} at epoch {run.fit.best_epoch}; run written to {out}")
    for name, report in run.reports.items():
        typer.echo(f"\n{name}:\n{report.markdown()}")


@app.command("evaluate-seg")
def evaluate_seg(
    data: TrainData,
    model: SegModel = None,
    split: Annotated[Optional[str], opt("Only this split (default: every image with a mask).", "NAME")] = None,
    out: Annotated[Optional[Path], opt("Write eval_seg_<split>.json/.md and outlines_<split>.png here.", "DIR")] = None,
    device: Device = None,
    force: Force = False,
    common: Common = None,
) -> None:
    """Dice, IoU (mean, median, 5th percentile), pixel accuracy and HD95, overall and per source set."""
    import tempfile

    from ..data.training_data import open_eval_data
    from ..defaults import WORKING_SIZE
    from ..model_card import announce, model_warnings
    from ..seg.evaluate import evaluate_segmenter, write_segmentation_report
    from ..seg.segmenter import Segmenter

    if out is not None:
        refuse_existing(out, force, folder=True)
    with library_errors(), tempfile.TemporaryDirectory() as tmp:
        segmenter = Segmenter.load(model, device=common.device(device))
        announce(model_warnings(segmenter))
        cache = open_eval_data(data, WORKING_SIZE, Path(tmp) / "cache", progress=common.progress)
        report = evaluate_segmenter(
            segmenter, cache, cache.indices(split, with_mask=True), (split or "all").lower(), progress=common.progress
        )
        if report.summary["dice"]["n"] == 0:
            raise fail("no image with a lung mask to evaluate on" + (f" in split {split!r}" if split else ""))
    typer.echo(report.markdown())
    if out is not None:
        written = write_segmentation_report(report, out)
        typer.echo("written: " + ", ".join(str(p) for p in written))


@app.command("segment")
def segment(
    inputs: Inputs,
    out: Annotated[Path, opt("Output folder (masks/, overlays/, crops/, segment.csv).", "DIR")],
    model: SegModel = None,
    batch_size: InferenceBatch = None,
    device: Device = None,
    force: Force = False,
    masks_only: Annotated[
        bool, opt("Write the masks and segment.csv only (no overlays, no crops).", "", "--masks-only")
    ] = False,
    infection: Annotated[
        bool,
        opt(
            "Also find the infection (built-in infection segmenter): infection/ masks, the infected share of each "
            "lung, a severity score and grade, COVID-19 from infection.",
            "",
            "--infection",
        ),
    ] = False,
    infection_model: Annotated[
        Optional[str],
        opt("The infection segmenter (a built-in name, run folder or bundle); implies --infection.", "MODEL"),
    ] = None,
    common: Common = None,
) -> None:
    """Segment the lungs: a mask, an outline overlay and a lung crop per image, and a CSV; with --infection, the
    infection in each lung too.

    Without --model the built-in lung segmenter is used: nothing to train, nothing downloaded.
    """
    from ..outputs import segment_files
    from ..seg.segmenter import Segmenter

    refuse_existing(out, force, folder=True)
    found = expand(inputs, out, force)
    with library_errors():
        segmenter = Segmenter.load(model, device=common.device(device), batch_size=batch_size, target="lungs")
        if model is None:
            typer.echo(f"segmenter: built-in model {segmenter.info['source']['name']!r}", err=True)
        finder = None
        if infection or infection_model:
            finder = Segmenter.load(infection_model, common.device(device), target="infection", batch_size=batch_size)
            typer.echo(f"infection: {finder.info['source']['name']!r}", err=True)
        rows = segment_files(found.paths, segmenter, out, progress=common.progress, masks_only=masks_only, force=force,
                             infection=finder)  # fmt: skip
    report_rows(rows, found, out / "segment.csv", "segmented")


@app.command("models")
def models(
    card: Annotated[Optional[str], opt("Print this built-in model's whole model card.", "NAME")] = None,
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
        keys = ("architecture", "trained_on", "mask_convention", "dice", "covid_detection", "size_mb", "trained_where")
        for key in keys:
            if s.get(key) is not None:
                typer.echo(f"  {key.replace('_', ' ')}: {s[key]}")
    typer.echo("\nWhole model card: lungcls models --card NAME")
