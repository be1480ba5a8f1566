"""Whole-pipeline commands: predict, train, export, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import LungclsError
from .app import InferenceBatch, _fail, _refuse_out_inside_inputs, app
from .cls import _load_pipeline, _report_rows


@app.command("predict")
def predict(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or globs.")],
    model: Annotated[Path, typer.Option(help="A bundle or a train-cls run folder.")],
    out: Annotated[Path, typer.Option(help="Output folder (predictions.csv, explain/).")],
    explain: Annotated[
        bool, typer.Option("--explain", help="Grad-CAM overlays and the in-lung share of the saliency.")
    ] = False,
    seg_model: Annotated[Optional[Path], typer.Option(help="Stage-1 run (default: the bundle's).")] = None,
    batch_size: InferenceBatch = None,
    device: Annotated[str, typer.Option()] = "auto",
    force: Annotated[bool, typer.Option(help="Allow --out inside an input folder.")] = False,
) -> None:
    """Segment and classify with a whole pipeline; optionally explain each prediction with Grad-CAM."""
    from ..files import predict_files, write_rows_csv
    from ..inputs import expand_inputs

    paths, problems = expand_inputs(inputs)
    _refuse_out_inside_inputs(out, [Path(i) for i in inputs if Path(i).exists()], force)
    try:
        pipe = _load_pipeline(model, seg_model, device, batch_size)
        rows = predict_files(paths, pipe, explain_dir=out / "explain" if explain else None)
    except (LungclsError, ValueError) as e:
        raise _fail(e) from None
    write_rows_csv(out / "predictions.csv", rows, pipe.class_names)
    _report_rows(rows, problems, pipe.class_names, out / "predictions.csv")


@app.command("train")
def train(
    data: Annotated[list[Path], typer.Argument(help="Dataset roots or CSV manifests (lung masks needed for stage 1).")],
    out: Annotated[Path, typer.Option(help="Folder for the cache, both runs and the bundle.")],
    mode: Annotated[str, typer.Option(help="Classifier input: raw, masked, cropped or masked-cropped.")] = "masked",
    small: Annotated[
        bool, typer.Option("--small", help="CPU recipe: ResNet-18 encoders/classifier at 128 px.")
    ] = False,
    seg_epochs: Annotated[int, typer.Option()] = 40,
    cls_epochs: Annotated[int, typer.Option()] = 80,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option()] = "auto",
) -> None:
    """Train both stages in order (stage 2 on stage 1's predicted masks) and save a bundle in OUT/bundle."""
    from ..config import ClassifierConfig, SegmenterConfig, TrainConfig
    from ..masking import check_mode
    from ..pipeline import Pipeline

    _refuse_out_inside_inputs(out, data, force=False)
    seg = (
        SegmenterConfig(encoder_name="resnet18", encoder_depth=4, decoder_channels=[128, 64, 32, 16], image_size=128)
        if small
        else SegmenterConfig()
    )
    clf = ClassifierConfig(arch="resnet18", image_size=128) if small else ClassifierConfig()
    seg_train = TrainConfig(
        epochs=seg_epochs, batch_size=16 if small else 32, lr=2e-3 if small else 1e-3, seed=seed, device=device
    )
    cls_train = TrainConfig(epochs=cls_epochs, batch_size=32 if small else 64, seed=seed, device=device, label_smoothing=0.1,
                            class_weighting=True)  # fmt: skip
    try:
        check_mode(mode)
        pipe = Pipeline.train(data, out, mode, seg, seg_train, clf, cls_train)
    except (LungclsError, ValueError) as e:
        raise _fail(e) from None
    typer.echo(
        f"bundle written to {out / 'bundle'} ({pipe.mode} classifier); test results in {out / 'classifier' / 'eval_test.md'}"
    )


@app.command("export")
def export(
    bundle: Annotated[Path, typer.Argument(help="A bundle or a train-cls run folder.")],
    out: Annotated[Path, typer.Option(help="Folder for the exported models.")],
    format: Annotated[str, typer.Option("--format", help="onnx")] = "onnx",
) -> None:
    """Export the segmenter and the classifier (normalisation included, dynamic batch) for other runtimes."""
    from ..export import export_onnx
    from ..pipeline import Pipeline

    if format != "onnx":
        raise _fail(LungclsError(f"unknown format {format!r}; supported: onnx"))
    try:
        written = export_onnx(Pipeline.load(bundle, device="cpu"), out)
    except (LungclsError, ValueError) as e:
        raise _fail(e) from None
    typer.echo("written: " + ", ".join(str(p) for p in written) + f", {out / 'export.json'}")


@app.command("demo")
def demo(
    data: Annotated[
        Optional[list[Path]],
        typer.Option("--data", help="Run on this dataset (repeatable) instead of synthetic phantoms."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the models, figures and report.")] = Path("lungcls-demo"),
    device: Annotated[str, typer.Option()] = "auto",
) -> None:
    """Train small versions of both stages, compare raw vs masked, and write figures and a report (minutes on a CPU).

    Without --data it uses SYNTHETIC chest-radiograph phantoms generated on the spot.
    """
    from ..demo import DemoSettings, run_demo

    if data:
        _refuse_out_inside_inputs(out, data, force=False)
    typer.echo("lungcls demo: " + ("SYNTHETIC phantoms (not patients)" if not data else ", ".join(map(str, data))))
    try:
        results = run_demo(data or None, out, DemoSettings(device=device))
    except (LungclsError, ValueError) as e:
        raise _fail(e) from None
    d = results["segmentation_test_dice"]
    typer.echo(f"\nstage 1 Test Dice {d['mean']:.3f} (median {d['median']:.3f}, n={d['n']})")
    for mode in ("raw", "masked"):
        r = results[f"{mode}_test"]
        typer.echo(f"stage 2 {mode:<6} Test accuracy {r['accuracy']:.3f}, macro F1 {r['macro_avg']['f1']:.3f}")
    typer.echo(
        f"\nLook at: {out}/report.md, {out}/segmentation_test.png, {out}/curves.png, "
        f"{out}/confusion_raw.png, {out}/confusion_masked.png; saved pipeline: {out}/bundle"
    )
