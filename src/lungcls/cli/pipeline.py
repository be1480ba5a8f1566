"""Whole-pipeline commands: predict, train, bundle, export, demo, report, plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import (
    BatchSize,
    Cpu,
    Device,
    Epochs,
    Force,
    InferenceBatch,
    Inputs,
    Mode,
    Overwrite,
    Quiet,
    Recipe,
    Seed,
    Strict,
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
from .cls import ClsModel, SegOverride
from .seg import _inputs, report_rows


@app.command("predict")
def predict(
    inputs: Inputs,
    model: ClsModel,
    out: Annotated[Path, _opt("Output folder (predictions.csv, explain/).", "DIR")],
    explain: Annotated[bool, _opt("Class-activation pictures at each image's own size, and the in-lung share of the "
                                  "saliency.", "", "--explain")] = False,  # fmt: skip
    cam_method: Annotated[str, _opt("gradcam, gradcam++, hirescam, xgradcam, layercam, eigencam, eigengradcam, "
                                    "gradcam-elementwise, scorecam, ablationcam.", "NAME")] = "gradcam",  # fmt: skip
    cam_target: Annotated[Optional[str], _opt("Explain this class instead of the predicted one.", "CLASS")] = None,
    seg_model: SegOverride = None,
    batch_size: InferenceBatch = None,
    device: Device = None,
    cpu: Cpu = False,
    force: Force = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Segment and classify with a whole pipeline; optionally explain each prediction."""
    from ..explain import CAM_METHODS
    from ..outputs import predict_files, prediction_fields, write_csv
    from ..pipeline import Pipeline

    command_output(verbose, quiet)
    if cam_method not in CAM_METHODS:
        raise fail(f"unknown --cam-method {cam_method!r}; choose one of {', '.join(CAM_METHODS)}")
    found = _inputs(inputs, out, force)
    if (out / "predictions.csv").exists() and not force:
        raise fail(f"{out / 'predictions.csv'} exists; pass --force to replace it, or choose another --out")
    with library_errors():
        pipe = Pipeline.load(model, device_of(device, cpu), batch_size, segmenter=seg_model)
        rows = predict_files(found.paths, pipe, explain_dir=out / "explain" if explain else None, progress=not quiet,
                             cam_method=cam_method, cam_target=cam_target)  # fmt: skip
    write_csv(out / "predictions.csv", rows, prediction_fields(pipe.class_names, explain))
    report_rows(rows, found, out / "predictions.csv", "classified", pipe.class_names)


@app.command("train")
def train(
    data: TrainData,
    out: Annotated[Path, _opt("Folder for the cache, both runs and the bundle.", "DIR")],
    mode: Annotated[Mode, _opt("Classifier input.", "[raw|masked|cropped|masked-cropped]")] = Mode.masked,
    recipe: Annotated[Recipe, _opt("Recipe of both stages: default (GPU), cpu (minutes on a laptop) or demo.",
                                   "[default|cpu|demo]")] = Recipe.default,  # fmt: skip
    arch: Annotated[Optional[str], _opt("Classifier: resnet50 or resnet18.", "NAME")] = None,
    image_size: Annotated[Optional[int], _opt("Classifier input size in pixels.", "PX")] = None,
    seg_image_size: Annotated[Optional[int], _opt("U-Net input size in pixels.", "PX")] = None,
    epochs: Epochs = None,
    seg_epochs: Annotated[Optional[int], _opt("U-Net epochs (default: the recipe's).", "N")] = None,
    batch_size: BatchSize = None,
    seed: Seed = None,
    device: Device = None,
    cpu: Cpu = False,
    overwrite: Overwrite = False,
    strict: Strict = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Train both stages on one split (stage 2 on stage 1's predicted masks) and save a bundle in OUT/bundle."""
    from ..pipeline import Pipeline
    from ..recipes import classifier_recipe, segmenter_recipe

    command_output(verbose, quiet)
    refuse_out_inside_inputs(out, data, force=False)
    dev = device_of(device, cpu)
    with library_errors(f"Stage runs that finished are in {out}; rerun the stages with train-seg / train-cls --resume."):
        seg, seg_train = segmenter_recipe(recipe.value, image_size=seg_image_size, epochs=seg_epochs, seed=seed, device=dev)
        clf, cls_train = classifier_recipe(recipe.value, mode=mode.value, arch=arch, image_size=image_size, epochs=epochs,
                                           batch_size=batch_size, seed=seed, device=dev)  # fmt: skip
        typer.secho(f"== stage 1: lung U-Net ({seg.encoder_name}, {seg.image_size} px, {seg_train.epochs} epochs)", bold=True)
        typer.secho(f"== then stage 2: {clf.arch} on {mode.value} inputs ({clf.image_size} px, {cls_train.epochs} epochs)",
                    bold=True)  # fmt: skip
        pipe = Pipeline.train(data, out, mode.value, seg, seg_train, clf, cls_train, progress=not quiet,
                              overwrite=overwrite, strict=strict)  # fmt: skip
    for name, report in pipe.reports.items():
        typer.secho(f"\n== {name.replace('_', ' ')}", bold=True)
        typer.echo(report.markdown())
    typer.echo(f"bundle written to {out / 'bundle'} ({pipe.mode} classifier); model card: {out / 'bundle' / 'MODEL_CARD.md'}")


@app.command("bundle")
def bundle(
    model: Annotated[Path, typer.Argument(help="A train-cls run folder (or a bundle, to re-bundle).", metavar="RUN")],
    out: Annotated[Path, _opt("Bundle folder to write.", "DIR")],
    seg_model: SegOverride = None,
    force: Force = False,
) -> None:
    """Put a classifier and its segmenter together in one movable folder (with a model card)."""
    from ..pipeline import Pipeline

    if out.exists() and any(out.iterdir()) and not force:
        raise fail(f"{out} is not empty; pass --force to write into it")
    with library_errors():
        Pipeline.load(model, "cpu", segmenter=seg_model).save(out)
    typer.echo(f"bundle written to {out}")


@app.command("export")
def export(
    model: Annotated[Path, typer.Argument(help="A bundle or a train-cls run folder.", metavar="BUNDLE")],
    out: Annotated[Path, _opt("Folder for the exported models.", "DIR")],
    format: Annotated[str, _opt("Export format (onnx).", "onnx", "--format")] = "onnx",
) -> None:
    """Export the segmenter and the classifier (normalisation and calibration included, dynamic batch) as
    ONNX; needs the export extra: pip install 'lungcls[export]'."""
    from ..export import export_onnx
    from ..pipeline import Pipeline

    if format != "onnx":
        raise fail(f"unknown format {format!r}; supported: onnx")
    with library_errors():
        written = export_onnx(Pipeline.load(model, device="cpu"), out)
    typer.echo("written: " + ", ".join(str(p) for p in written) + f", {out / 'export.json'}")


@app.command("demo")
def demo(
    data: Annotated[Optional[list[Path]], _opt("Run on this dataset (repeatable) instead of synthetic phantoms.",
                                               "DATA", "--data")] = None,  # fmt: skip
    out: Annotated[Path, _opt("Folder for the models, figures and report.", "DIR")] = Path("lungcls-demo"),
    seed: Seed = None,
    device: Device = None,
    cpu: Cpu = False,
    overwrite: Overwrite = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Train small versions of both stages, compare raw vs masked, and write figures, report.md and report.html
    (minutes on a CPU). Without --data it uses SYNTHETIC chest-radiograph phantoms generated on the spot."""
    from ..demo import run_demo

    command_output(verbose, quiet)
    if data:
        refuse_out_inside_inputs(out, data, force=False)
    typer.echo("lungcls demo: " + ("SYNTHETIC phantoms (not patients)" if not data else ", ".join(map(str, data))))
    with library_errors("Start it again with --overwrite."):
        result = run_demo(data or None, out, device=device_of(device, cpu), seed=seed or 0, progress=not quiet,
                          overwrite=overwrite)  # fmt: skip
    if result.segmentation is not None:
        d = result.segmentation.summary["dice"]
        typer.echo(f"\nstage 1 Test Dice {d['mean']:.3f} (median {d['median']:.3f}, n={d['n']})")
    for mode, r in result.classification.items():
        if r is not None:
            typer.echo(f"stage 2 {mode:<6} Test accuracy {r.accuracy:.3f}, macro F1 {r.macro_avg['f1']:.3f}")
    typer.echo(f"\nLook at: {out}/report.html (everything on one page), {out}/report.md; saved pipeline: {out}/bundle")


@app.command("report")
def report(
    folder: Annotated[Path, typer.Argument(help="A run folder, a bundle, the demo's or the study's output folder.",
                                           metavar="FOLDER")],  # fmt: skip
    out: Annotated[Optional[Path], _opt("HTML file to write (default FOLDER/report.html).", "FILE")] = None,
    force: Force = False,
) -> None:
    """One self-contained HTML page (figures embedded, no network, no JavaScript) with curves, tables,
    confusion matrices, calibration, outlines and Grad-CAM grids."""
    from ..html_report import write_html_report

    target = out or folder / "report.html"
    if target.exists() and not force and out is not None:
        raise fail(f"{target} exists; pass --force to replace it")
    with library_errors():
        written = write_html_report(folder, target)
    typer.echo(f"report written to {written}")


@app.command("plot")
def plot(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (their history.json).", metavar="RUN...")],
    out: Annotated[Path, _opt("PNG file to write.", "FILE")] = Path("curves.png"),
    force: Force = False,
) -> None:
    """Learning curves of one or several runs in one PNG (for people without TensorBoard)."""
    import json

    from ..plots import curves_figure, save_figure

    if out.exists() and not force:
        raise fail(f"{out} exists; pass --force to replace it")
    histories = {}
    for run in runs:
        f = run / "history.json"
        if not f.is_file():
            raise fail(f"{run}: no history.json (expects a train-seg or train-cls run folder)")
        try:
            histories[run.name if run.name not in histories else str(run)] = json.loads(f.read_text())
        except ValueError as e:
            raise fail(f"{f}: not valid JSON ({e})") from None
    save_figure(curves_figure(histories), out)
    typer.echo(f"curves of {len(histories)} run(s) written to {out}")
