"""Whole-pipeline commands: predict, train, bundle, export, demo, report, plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import app, expand, library_errors, refuse_existing, refuse_out_inside_inputs, report_rows
from .cls import AbstainBelow, ClsModel, NoGate, OnDoubtful, RawModel, SegOverride, load_pipeline
from .options import Common, Device, Force, InferenceBatch, Inputs, Mode, Recipe, TrainData, Training, fail, opt


@app.command("predict")
def predict(
    inputs: Inputs,
    model: ClsModel,
    out: Annotated[Path, opt("Output folder (predictions.csv, explain/).", "DIR")],
    explain: Annotated[
        bool,
        opt(
            "Class-activation pictures at each image's own size, and the in-lung share of the saliency.",
            "",
            "--explain",
        ),
    ] = False,
    cam_method: Annotated[
        str,
        opt(
            "gradcam, gradcam++, hirescam, xgradcam, layercam, eigencam, eigengradcam, "
            "gradcam-elementwise, scorecam, ablationcam.",
            "NAME",
        ),
    ] = "gradcam",
    cam_target: Annotated[Optional[str], opt("Explain this class instead of the predicted one.", "CLASS")] = None,
    seg_model: SegOverride = None,
    on_doubtful: OnDoubtful = "flag",
    abstain_below: AbstainBelow = None,
    raw_model: RawModel = None,
    no_gate: NoGate = False,
    batch_size: InferenceBatch = None,
    shard_size: Annotated[
        int, opt("Under torchrun: files per part (a part is the unit each rank does, and redoes after a crash).", "N")
    ] = 256,
    device: Device = None,
    force: Force = False,
    common: Common = None,
) -> None:
    """Segment and classify with a whole pipeline (input gate first, then the decision policy); optionally explain
    each prediction. Under torchrun (`torchrun --nproc_per_node N -m lungcls predict ...`) the ranks share the
    inputs, and rank 0 writes the same outputs; the same command resumes after a crash."""
    from ..explain import CAM_METHODS
    from ..outputs import predict_to_folder
    from ..sharded import Ranks, predict_sharded

    if cam_method not in CAM_METHODS:
        raise fail(f"unknown --cam-method {cam_method!r}; choose one of {', '.join(CAM_METHODS)}")
    refuse_existing(out, force, folder=True)
    found = expand(inputs, out, force)
    ranks = Ranks.from_env()
    with library_errors():
        if ranks is not None:
            ranks.start()
        where = ranks.device(device) if ranks is not None else common.device(device)
        pipe = load_pipeline(model, where, batch_size, seg_model, on_doubtful, abstain_below, raw_model, no_gate)
        options = {"explain": explain, "cam_method": cam_method, "cam_target": cam_target, "progress": common.progress}
        if ranks is None:
            rows = predict_to_folder(found.paths, pipe, out, force=force, **options)
        else:
            rows = predict_sharded(found.paths, pipe, out, ranks, shard_size, force=force, **options)
    if rows is not None:  # one process, or rank 0 of several
        report_rows(rows, found, out / "predictions.csv", "classified", pipe.class_names)


BothRecipes = Annotated[
    Recipe,
    opt(
        "Recipe of both stages: auto (default on a GPU, cpu without one), default (GPU), cpu (minutes on a laptop) "
        "or demo.",
        "[auto|default|cpu|demo]",
    ),
]


@app.command("train")
def train(
    data: TrainData,
    out: Annotated[Path, opt("Folder for the cache, both runs and the bundle.", "DIR")],
    mode: Annotated[Mode, opt("Classifier input.", "[raw|masked|cropped|masked-cropped]")] = Mode.masked,
    recipe: BothRecipes = Recipe.auto,
    arch: Annotated[Optional[str], opt("Classifier: a registered architecture (resnet50, resnet18).", "NAME")] = None,
    image_size: Annotated[Optional[int], opt("Classifier input size in pixels.", "PX")] = None,
    seg_image_size: Annotated[Optional[int], opt("U-Net input size in pixels.", "PX")] = None,
    seg_epochs: Annotated[
        Optional[int], opt("U-Net epochs (default: the recipe's; --epochs is the classifier's).", "N")
    ] = None,
    training: Training = None,
    common: Common = None,
) -> None:
    """Train both stages on one split (stage 2 on stage 1's predicted masks) and save a bundle in OUT/bundle.
    The training options apply to both stages (--epochs to the classifier); --resume goes on after Ctrl-C."""
    from ..pipeline import Pipeline
    from ..recipes import classifier_recipe, resolve_recipe, segmenter_recipe

    refuse_out_inside_inputs(out, data, force=False)
    overrides = training.recipe_overrides(common)
    with library_errors(resumable=True):
        name = resolve_recipe(recipe.value, overrides["device"])
        seg, seg_train = segmenter_recipe(name, image_size=seg_image_size, **(overrides | {"epochs": seg_epochs}))
        clf, cls_train = classifier_recipe(name, mode=mode.value, arch=arch, image_size=image_size, **overrides)
        stage_1 = f"lung U-Net ({seg.encoder_name}, {seg.image_size} px, {seg_train.epochs} epochs)"
        stage_2 = f"{clf.arch} on {mode.value} inputs ({clf.image_size} px, {cls_train.epochs} epochs)"
        typer.secho(f"== stage 1: {stage_1}\n== then stage 2: {stage_2}", bold=True)
        pipe = Pipeline.train(data, out, mode.value, seg, seg_train, clf, cls_train, **training.run_options(common))
    for name, report in pipe.reports.items():
        typer.secho(f"\n== {name.replace('_', ' ')}", bold=True)
        typer.echo(report.markdown())
    typer.echo(
        f"bundle written to {out / 'bundle'} ({pipe.mode} classifier); model card: {out / 'bundle' / 'MODEL_CARD.md'}"
    )


@app.command("bundle")
def bundle(
    model: Annotated[Path, typer.Argument(help="A train-cls run folder (or a bundle, to re-bundle).", metavar="RUN")],
    out: Annotated[Path, opt("Bundle folder to write.", "DIR")],
    seg_model: SegOverride = None,
    raw_model: RawModel = None,
    force: Force = False,
    common: Common = None,
) -> None:
    """Put a classifier and its segmenter (and a raw classifier to fall back to for doubtful lungs, --raw-model)
    together in one movable folder (with a model card)."""
    from ..pipeline import Pipeline

    refuse_existing(out, force, folder=True)
    with library_errors():
        Pipeline.load(model, "cpu", segmenter=seg_model, raw=raw_model, gate=None).save(out, force=force)
    typer.echo(f"bundle written to {out}")


@app.command("export")
def export(
    model: Annotated[Path, typer.Argument(help="A bundle or a train-cls run folder.", metavar="BUNDLE")],
    out: Annotated[Path, opt("Folder for the exported models.", "DIR")],
    format: Annotated[str, opt("Export format (onnx).", "onnx", "--format")] = "onnx",
    force: Force = False,
    common: Common = None,
) -> None:
    """Export the segmenter and the classifier (normalisation and calibration included, dynamic batch) as
    ONNX, on the CPU; needs the export extra: pip install 'lungcls[export]'."""
    from ..export import export_onnx
    from ..pipeline import Pipeline

    if format != "onnx":
        raise fail(f"unknown format {format!r}; supported: onnx")
    refuse_existing(out, force, folder=True)
    with library_errors():
        written = export_onnx(Pipeline.load(model, device="cpu"), out, force=force)
    typer.echo("written: " + ", ".join(str(p) for p in written) + f", {out / 'export.json'}")


@app.command("demo")
def demo(
    data: Annotated[
        Optional[list[Path]], opt("Run on this dataset (repeatable) instead of synthetic phantoms.", "DATA", "--data")
    ] = None,
    out: Annotated[Path, opt("Folder for the models, figures and report.", "DIR")] = Path("lungcls-demo"),
    seed: Annotated[Optional[int], opt("Seeds the phantoms, the split and the training (default 0).", "N")] = None,
    device: Device = None,
    overwrite: Annotated[bool, opt("Replace an earlier demo in OUT.", "", "--overwrite")] = False,
    common: Common = None,
) -> None:
    """Train small versions of both stages, compare raw vs masked, and write figures, report.md and report.html
    (minutes on a CPU). Without --data it uses SYNTHETIC chest-radiograph phantoms generated on the spot."""
    from ..demo import run_demo

    if data:
        refuse_out_inside_inputs(out, data, force=False)
    typer.echo("lungcls demo: " + ("SYNTHETIC phantoms (not patients)" if not data else ", ".join(map(str, data))))
    with library_errors():
        result = run_demo(
            data or None,
            out,
            device=common.device(device),
            seed=seed or 0,
            progress=common.progress,
            overwrite=overwrite,
        )
    if result.segmentation is not None:
        d = result.segmentation.summary["dice"]
        typer.echo(f"\nstage 1 Test Dice {d['mean']:.3f} (median {d['median']:.3f}, n={d['n']})")
    for mode, r in result.classification.items():
        if r is not None:
            typer.echo(f"stage 2 {mode:<6} Test accuracy {r.accuracy:.3f}, macro F1 {r.macro_avg['f1']:.3f}")
    typer.echo(f"\nLook at: {out}/report.html (everything on one page), {out}/report.md; saved pipeline: {out}/bundle")


@app.command("report")
def report(
    folder: Annotated[
        Path, typer.Argument(help="A run folder, a bundle, the demo's or the study's output folder.", metavar="FOLDER")
    ],
    out: Annotated[Optional[Path], opt("HTML file to write (default FOLDER/report.html).", "FILE")] = None,
    force: Force = False,
    common: Common = None,
) -> None:
    """One self-contained HTML page (figures embedded, no network, no JavaScript) with curves, tables,
    confusion matrices, calibration, outlines and Grad-CAM grids."""
    from ..html_report import write_html_report

    refuse_existing(out or folder / "report.html", force)
    with library_errors():
        written = write_html_report(folder, out, force=force)
    typer.echo(f"report written to {written}")


@app.command("plot")
def plot(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (their history.json).", metavar="RUN...")],
    out: Annotated[Path, opt("PNG file to write.", "FILE")] = Path("curves.png"),
    force: Force = False,
    common: Common = None,
) -> None:
    """Learning curves of one or several runs in one PNG (for people without TensorBoard)."""
    import json

    from ..plots import curves_figure, save_figure

    refuse_existing(out, force)
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
