"""Stage 2 commands: train-cls, evaluate-cls, classify."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import (
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
    Mode,
    Out,
    Overwrite,
    Patience,
    PlacementOpt,
    Quiet,
    Recipe,
    Resume,
    Seed,
    Strict,
    TensorBoard,
    TrainData,
    Verbose,
    _opt,
    app,
    command_output,
    device_of,
    library_errors,
    refuse_existing_file,
)
from .seg import _inputs, report_rows

ClsModel = Annotated[Path, _opt("A train-cls run folder or a bundle.", "DIR")]
SegOverride = Annotated[Optional[str], _opt("Stage-1 model for the masks: a built-in name, a train-seg run or a bundle "
                                            "(default: the bundle's, or the one the classifier was trained with).",
                                            "NAME|DIR")]  # fmt: skip


@app.command("train-cls")
def train_cls(
    data: TrainData,
    out: Out,
    recipe: Annotated[Recipe, _opt("Starting recipe; the options below change single settings.", "[default|cpu|demo]")] = Recipe.default,
    mode: Annotated[Mode, _opt("Classifier input.", "[raw|masked|cropped|masked-cropped]")] = Mode.raw,
    seg_model: Annotated[Optional[str], _opt("Stage-1 model whose masks feed the masked/cropped modes: a built-in name, "
                                             "a train-seg run or a bundle (default: the built-in model).", "NAME|DIR")] = None,  # fmt: skip
    gt_masks: Annotated[bool, _opt("Mask with the dataset's own lung masks instead (only images that have one).", "",
                                   "--gt-masks")] = False,  # fmt: skip
    classes: Annotated[Optional[str], _opt("The class set in output order, comma-separated (default: the classes "
                                           "in the data).", "A,B,...")] = None,  # fmt: skip
    hold_out: Annotated[Optional[str], _opt("Hold out this source set as Test (external validation): train and "
                                            "validate on the others.", "SOURCE")] = None,  # fmt: skip
    margin: Annotated[Optional[float], _opt("Crop margin, a fraction of the lung box on each side.", "FRACTION")] = None,
    arch: Annotated[Optional[str], _opt("resnet50, or resnet18 for quick CPU runs.", "NAME")] = None,
    image_size: Annotated[Optional[int], _opt("Classifier input size in pixels.", "PX")] = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    label_smoothing: Annotated[Optional[float], _opt("Cross-entropy label smoothing.", "EPS")] = None,
    class_weighting: Annotated[Optional[bool], _opt("Inverse-frequency class weights in the loss.", "",
                                                    "--class-weighting/--no-class-weighting")] = None,  # fmt: skip
    pretrained: Annotated[bool, _opt("Start from ImageNet weights in torchvision's local cache (never downloaded).",
                                     "", "--pretrained")] = False,  # fmt: skip
    weights: Annotated[Optional[Path], _opt("Start from this ImageNet ResNet weights file.", "FILE")] = None,
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
    """Train the ResNet classifier (stage 2) on raw or lung-masked/cropped CXRs; calibrates it on Val and
    evaluates Val and Test at the end."""
    from ..cls.train import train_classifier
    from ..recipes import classifier_recipe
    from .app import fail, refuse_out_inside_inputs

    command_output(verbose, quiet)
    refuse_out_inside_inputs(out, data, force=False)
    if gt_masks and seg_model is not None:
        raise fail("give either --seg-model or --gt-masks, not both")
    if pretrained and weights is not None:
        raise fail("give either --pretrained or --weights, not both")
    with library_errors(f"Continue it with the same command and --resume (run folder {out})."):
        model, train = classifier_recipe(
            recipe.value, mode=mode.value, mask_source="gt" if gt_masks else None, margin=margin, arch=arch,
            image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr, label_smoothing=label_smoothing,
            class_weighting=class_weighting, patience=patience, seed=seed, ema_epochs=ema_epochs,
            device=device_of(device, cpu), compile=compile or None, deterministic=deterministic or None,
            placement=placement.value if placement else None,
        )  # fmt: skip
        run = train_classifier(
            data, out, model, train, segmenter=seg_model, weights="imagenet" if pretrained else weights,
            classes=[c.strip() for c in classes.split(",")] if classes else None, hold_out=hold_out, cache_dir=cache,
            resume=resume, overwrite=overwrite, strict=strict, progress=not quiet, tensorboard=tensorboard,
        )  # fmt: skip
    typer.echo(f"best val macro F1 {run.fit.best_metric:.4f} at epoch {run.fit.best_epoch}; run written to {out}")
    final = run.reports.get("test") or run.reports.get("val")
    if final is not None:
        typer.echo("\n" + final.markdown())


@app.command("evaluate-cls")
def evaluate_cls(
    data: TrainData,
    model: ClsModel,
    split: Annotated[Optional[str], _opt("Only this split (default: every image).", "NAME")] = None,
    seg_model: SegOverride = None,
    out: Annotated[Optional[Path], _opt("Write eval_<split>.json/.md and the figures here (default: nothing "
                                        "written).", "DIR")] = None,  # fmt: skip
    device: Device = None,
    cpu: Cpu = False,
    strict: Strict = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Accuracy, per-class precision/recall/F1/specificity/AUROC, confusion matrix, bootstrap CIs, calibration,
    per-source accuracy; warns when a model saw any of the evaluated images."""
    import tempfile

    from ..cls.classifier import Classifier
    from ..cls.report import write_classification_report
    from ..cls.train import evaluate_classifier
    from ..data.training_data import open_eval_data

    command_output(verbose, quiet)
    with library_errors(), tempfile.TemporaryDirectory() as tmp:
        clf = Classifier.load(model, device=device_of(device, cpu))
        cache = open_eval_data(data, clf.cfg.working_size, Path(tmp) / "cache", progress=not quiet)
        report = evaluate_classifier(clf, cache, split, seg_model, strict=strict, progress=not quiet)
    typer.echo(report.markdown())
    if out is not None:
        written = write_classification_report(report, out)
        typer.echo("written: " + ", ".join(str(p) for p in written))


@app.command("classify")
def classify(
    inputs: Inputs,
    model: ClsModel,
    out: Annotated[Path, _opt("CSV file to write.", "FILE")] = Path("classify.csv"),
    seg_model: SegOverride = None,
    batch_size: InferenceBatch = None,
    device: Device = None,
    cpu: Cpu = False,
    force: Force = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Classify CXRs; writes a CSV with the predicted class, the calibrated probabilities, the lung fraction,
    the lung box and the flags per image."""
    from ..outputs import predict_files, prediction_fields, write_csv
    from ..pipeline import Pipeline

    command_output(verbose, quiet)
    refuse_existing_file(out, force)
    found = _inputs(inputs, out, force)
    with library_errors():
        pipe = Pipeline.load(model, device_of(device, cpu), batch_size, segmenter=seg_model)
        rows = predict_files(found.paths, pipe, progress=not quiet)
    write_csv(out, rows, prediction_fields(pipe.class_names))
    report_rows(rows, found, out, "classified", pipe.class_names)
