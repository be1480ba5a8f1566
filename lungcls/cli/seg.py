"""Stage 1 commands: train-seg, evaluate-seg, segment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import LungclsError
from .app import (
    EXIT_SOME_FAILED,
    CacheDir,
    Compile,
    Deterministic,
    Device,
    EmaEpochs,
    InferenceBatch,
    Lr,
    Patience,
    Placement,
    Resume,
    Seed,
    Strict,
    _fail,
    _refuse_out_inside_inputs,
    app,
)


@app.command("train-seg")
def train_seg(
    data: Annotated[list[Path], typer.Argument(help="Dataset roots, CSV manifests, or one packed cache.")],
    out: Annotated[Path, typer.Option(help="Run folder to write (config, weights, history).")],
    encoder: Annotated[str, typer.Option(help="smp encoder name.")] = "resnet34",
    encoder_weights: Annotated[
        Optional[str], typer.Option(help="'imagenet' to start from cached ImageNet weights.")
    ] = None,
    encoder_depth: Annotated[int, typer.Option(help="Encoder stages, 3 to 5.")] = 5,
    image_size: Annotated[int, typer.Option(help="Working size in pixels.")] = 256,
    epochs: Annotated[int, typer.Option()] = 40,
    batch_size: Annotated[int, typer.Option()] = 32,
    lr: Lr = 1e-3,
    patience: Patience = 0,
    seed: Seed = 0,
    device: Device = "auto",
    compile: Compile = False,
    ema_epochs: EmaEpochs = 0.0,
    deterministic: Deterministic = False,
    placement: Placement = "auto",
    cache: CacheDir = None,
    resume: Resume = False,
    strict: Strict = False,
) -> None:
    """Train the lung U-Net (stage 1) on the images that have lung masks."""
    from ..config import SegmenterConfig, TrainConfig
    from ..seg.train import train_segmenter

    channels = [256, 128, 64, 32, 16][5 - encoder_depth :]
    model = SegmenterConfig(
        encoder_name=encoder,
        encoder_weights=encoder_weights,
        encoder_depth=encoder_depth,
        decoder_channels=channels,
        image_size=image_size,
    )
    train = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        seed=seed,
        device=device,
        compile=compile,
        deterministic=deterministic,
        placement=placement,
        ema_epochs=ema_epochs,
    )
    _refuse_out_inside_inputs(out, data, force=False)
    try:
        result = train_segmenter(data, out, model, train, cache_dir=cache, resume=resume, strict=strict)
    except (LungclsError, ValueError) as e:
        raise _fail(e) from None
    typer.echo(f"best val Dice {result.best_metric:.4f} at epoch {result.best_epoch}; run written to {out}")


@app.command("evaluate-seg")
def evaluate_seg(
    data: Annotated[list[Path], typer.Argument(help="Dataset roots, CSV manifests, or a packed cache.")],
    model: Annotated[Path, typer.Option(help="A train-seg run folder.")],
    split: Annotated[Optional[str], typer.Option(help="Only this split (default: all images with masks).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write eval JSON and Markdown here.")] = None,
    device: Annotated[str, typer.Option()] = "auto",
) -> None:
    """Dice, IoU (mean, median, 5th percentile), pixel accuracy and HD95, overall and per source set."""
    import tempfile

    from ..atomic import write_json, write_text
    from ..data.training_data import open_eval_data
    from ..seg.evaluate import evaluate_segmenter, format_table
    from ..seg.segmenter import Segmenter

    try:
        segmenter = Segmenter.load(model, device=device)
        with tempfile.TemporaryDirectory() as tmp:
            cache = open_eval_data(data, segmenter.cfg.image_size, Path(tmp) / "cache")
            result = evaluate_segmenter(segmenter, cache, cache.indices(split, with_mask=True))
    except (LungclsError, ValueError) as e:
        raise _fail(e) from None
    table = format_table(result)
    typer.echo(table)
    if out is not None:
        write_json(out / "eval_seg.json", result)
        write_text(out / "eval_seg.md", table)
        typer.echo(f"written to {out}/eval_seg.json and eval_seg.md")


@app.command("segment")
def segment(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or globs.")],
    model: Annotated[Path, typer.Option(help="A train-seg run folder.")],
    out: Annotated[Path, typer.Option(help="Output folder (masks/, overlays/, crops/, segment.csv).")],
    batch_size: InferenceBatch = None,
    device: Annotated[str, typer.Option()] = "auto",
    force: Annotated[bool, typer.Option(help="Allow --out inside an input folder.")] = False,
) -> None:
    """Segment the lungs: a mask, an outline overlay and a lung crop per image, and a CSV."""
    from ..inputs import expand_inputs
    from ..seg.outputs import segment_files
    from ..seg.segmenter import Segmenter

    paths, problems = expand_inputs(inputs)
    _refuse_out_inside_inputs(out, [Path(i) for i in inputs if Path(i).exists()], force)
    try:
        segmenter = Segmenter.load(model, device=device, batch_size=batch_size)
    except (LungclsError, ValueError) as e:
        raise _fail(e) from None
    rows = segment_files(paths, segmenter, out)
    failed = [r for r in rows if r["error"]] + problems
    flagged = [r for r in rows if r.get("flags")]
    done = sum(1 for r in rows if not r["error"])
    typer.echo(f"{done} images segmented, {len(flagged)} flagged, {len(failed)} failed; results in {out} (segment.csv)")
    for r in flagged:
        typer.secho(f"  flagged {r['path']}: {r['flags']}", fg="yellow")
    for r in failed:
        typer.secho(f"  failed {r['path']}: {r.get('error') or r.get('reason')}", err=True, fg="red")
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)
    if not rows:
        raise _fail(LungclsError("no images to segment"))
