"""Stage 2 commands: train-cls, evaluate-cls, classify."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import app, expand, library_errors, refuse_existing, refuse_out_inside_inputs, report_rows
from .options import (
    ClassifierOptions,
    Common,
    Device,
    Force,
    InferenceBatch,
    Inputs,
    Mode,
    Recipe,
    RunFolder,
    TrainData,
    Training,
    fail,
    opt,
)

ClsModel = Annotated[Path, opt("A train-cls run folder or a bundle.", "DIR")]
SegOverride = Annotated[
    Optional[str],
    opt(
        "Stage-1 model for the masks: a built-in name, a train-seg run or a bundle "
        "(default: the bundle's, or the one the classifier was trained with).",
        "NAME|DIR",
    ),
]

OnDoubtful = Annotated[
    str,
    opt("Masked modes, lungs flagged or with a low estimated Dice: flag (answer and say so), abstain (no class), "
        "raw (answer with the raw classifier, --raw-model or the bundle's).", "flag|abstain|raw"),
]
AbstainBelow = Annotated[
    Optional[float],
    opt("Give no class when the top calibrated probability is under P (the coverage it implies on Val is said).", "P"),
]
RawModel = Annotated[
    Optional[Path], opt("A raw-mode classifier run or bundle to fall back to (--on-doubtful raw).", "DIR")
]
NoGate = Annotated[bool, opt("Do not run the input gate (frontal CXR or not) before the models.", "", "--no-gate")]


def load_pipeline(model: Path, device: str, batch_size, seg_model, on_doubtful: str, abstain_below, raw_model,
                  no_gate: bool):  # fmt: skip
    """The pipeline of ``classify`` and ``predict`` with the user's decision policy; says what --abstain-below
    means on Val."""
    from ..decisions import DecisionPolicy, implied_coverage
    from ..pipeline import Pipeline

    policy = DecisionPolicy(on_doubtful, abstain_below, gate=not no_gate)
    pipe = Pipeline.load(model, device, batch_size, segmenter=seg_model, raw=raw_model, policy=policy,
                         gate=None if no_gate else "auto")  # fmt: skip
    if abstain_below is not None:
        curve = ((pipe.classifier.info.get("evaluation") or {}).get("val") or {}).get("coverage")
        typer.echo(implied_coverage(curve, abstain_below), err=True)
    if pipe.gate is None and not no_gate:
        typer.echo("note: no input gate (this lung segmenter carries no calibrated gate)", err=True)
    return pipe


ClsRecipe = Annotated[
    Recipe,
    opt(
        "Starting recipe (auto: default on a GPU, cpu without one); the options below change single settings.",
        "[auto|default|cpu|demo]",
    ),
]
InputMode = Annotated[Mode, opt("Classifier input.", "[raw|masked|cropped|masked-cropped]")]
SegForMasks = Annotated[
    Optional[str],
    opt(
        "Stage-1 model whose masks feed the masked/cropped modes: a built-in name, a train-seg run or a bundle "
        "(default: the built-in model).",
        "NAME|DIR",
    ),
]
GtMasks = Annotated[
    bool, opt("Mask with the dataset's own lung masks instead (only images that have one).", "", "--gt-masks")
]
Classes = Annotated[
    Optional[str], opt("The class set in output order, comma-separated (default: the classes in the data).", "A,B,...")
]
HoldOut = Annotated[
    Optional[str],
    opt("Hold out this source set as Test (external validation): train and validate on the others.", "SOURCE"),
]


@app.command("train-cls")
def train_cls(
    data: TrainData,
    out: RunFolder,
    recipe: ClsRecipe = Recipe.auto,
    mode: InputMode = Mode.raw,
    seg_model: SegForMasks = None,
    gt_masks: GtMasks = False,
    classes: Classes = None,
    hold_out: HoldOut = None,
    classifier: ClassifierOptions = None,
    training: Training = None,
    common: Common = None,
) -> None:
    """Train the classifier (stage 2) on raw or lung-masked/cropped CXRs; calibrates it on Val and evaluates Val
    and Test at the end."""
    from ..cls.train import train_classifier
    from ..recipes import classifier_recipe

    refuse_out_inside_inputs(out, data, force=False)
    if gt_masks and seg_model is not None:
        raise fail("give either --seg-model or --gt-masks, not both")
    weights, class_set = classifier.initial_weights(), [c.strip() for c in classes.split(",")] if classes else None
    overrides = {"mode": mode.value, "mask_source": "gt" if gt_masks else None, **classifier.recipe_overrides()}
    with library_errors(resumable=True):
        model, train = classifier_recipe(recipe.value, **overrides, **training.recipe_overrides(common))
        run = train_classifier(
            data,
            out,
            model,
            train,
            segmenter=seg_model,
            weights=weights,
            classes=class_set,
            hold_out=hold_out,
            **training.run_options(common),
        )
    typer.echo(f"best val macro F1 {run.fit.best_metric:.4f} at epoch {run.fit.best_epoch}; run written to {out}")
    final = run.reports.get("test") or run.reports.get("val")
    if final is not None:
        typer.echo("\n" + final.markdown())


@app.command("evaluate-cls")
def evaluate_cls(
    data: TrainData,
    model: ClsModel,
    split: Annotated[Optional[str], opt("Only this split (default: every image).", "NAME")] = None,
    seg_model: SegOverride = None,
    out: Annotated[
        Optional[Path], opt("Write eval_<split>.json/.md and the figures here (default: nothing written).", "DIR")
    ] = None,
    device: Device = None,
    strict: Annotated[bool, opt("Refuse to score images a model saw, instead of warning.", "", "--strict")] = False,
    force: Force = False,
    common: Common = None,
) -> None:
    """Accuracy, per-class precision/recall/F1/specificity/AUROC, confusion matrix, bootstrap CIs, calibration,
    per-source accuracy; warns when a model saw any of the evaluated images."""
    import tempfile

    from ..cls.classifier import Classifier
    from ..cls.evaluate import evaluate_classifier
    from ..cls.report import write_classification_report
    from ..data.training_data import open_eval_data

    if out is not None:
        refuse_existing(out, force, folder=True)
    with library_errors(), tempfile.TemporaryDirectory() as tmp:
        classifier = Classifier.load(model, device=common.device(device))
        cache = open_eval_data(data, classifier.cfg.working_size, Path(tmp) / "cache", progress=common.progress)
        report = evaluate_classifier(classifier, cache, split, seg_model, strict=strict, progress=common.progress)
    typer.echo(report.markdown())
    if out is not None:
        written = write_classification_report(report, out)
        typer.echo("written: " + ", ".join(str(p) for p in written))


@app.command("classify")
def classify(
    inputs: Inputs,
    model: ClsModel,
    out: Annotated[Path, opt("CSV file to write.", "FILE")] = Path("classify.csv"),
    seg_model: SegOverride = None,
    on_doubtful: OnDoubtful = "flag",
    abstain_below: AbstainBelow = None,
    raw_model: RawModel = None,
    no_gate: NoGate = False,
    batch_size: InferenceBatch = None,
    device: Device = None,
    force: Force = False,
    common: Common = None,
) -> None:
    """Classify CXRs; writes a CSV with the predicted class, the decision (answered, flagged, raw-fallback,
    abstained, refused by the input gate) and why, the calibrated probabilities, the lung fraction, the lung box,
    the flags and the estimated Dice of the lung mask per image."""
    from ..outputs import classify_to_csv

    refuse_existing(out, force)
    found = expand(inputs, out, force)
    with library_errors():
        pipe = load_pipeline(model, common.device(device), batch_size, seg_model, on_doubtful, abstain_below,
                             raw_model, no_gate)  # fmt: skip
        rows = classify_to_csv(found.paths, pipe, out, force=force, progress=common.progress)
    report_rows(rows, found, out, "classified", pipe.class_names)
