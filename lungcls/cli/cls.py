"""Stage 2 commands: train-cls, evaluate-cls, classify."""

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
    Resume,
    Seed,
    Strict,
    _fail,
    _refuse_out_inside_inputs,
    app,
)


@app.command("train-cls")
def train_cls(
    data: Annotated[list[Path], typer.Argument(help="Dataset roots, CSV manifests, or one packed cache.")],
    out: Annotated[Path, typer.Option(help="Run folder to write (config, weights, history, evaluation).")],
    mode: Annotated[str, typer.Option(help="Classifier input: raw, masked, cropped or masked-cropped.")] = "raw",
    seg_model: Annotated[
        Optional[Path], typer.Option(help="Stage-1 run whose predicted masks feed the masked/cropped modes.")
    ] = None,
    gt_masks: Annotated[bool, typer.Option("--gt-masks", help="Use the dataset's own lung masks instead.")] = False,
    margin: Annotated[float, typer.Option(help="Crop margin, a fraction of the lung box on each side.")] = 0.1,
    arch: Annotated[str, typer.Option(help="resnet50, or resnet18 for quick CPU runs.")] = "resnet50",
    image_size: Annotated[int, typer.Option(help="Classifier input size in pixels.")] = 224,
    epochs: Annotated[int, typer.Option()] = 80,
    batch_size: Annotated[int, typer.Option()] = 64,
    lr: Lr = 1e-3,
    label_smoothing: Annotated[float, typer.Option()] = 0.1,
    class_weighting: Annotated[bool, typer.Option(help="Inverse-frequency class weights in the loss.")] = True,
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="Start from ImageNet weights in torchvision's cache.")
    ] = False,
    weights: Annotated[Optional[Path], typer.Option(help="Start from these ImageNet ResNet-50 weights.")] = None,
    patience: Patience = 0,
    seed: Seed = 0,
    device: Device = "auto",
    compile: Compile = False,
    ema_epochs: EmaEpochs = 0.0,
    deterministic: Deterministic = False,
    cache: CacheDir = None,
    resume: Resume = False,
    strict: Strict = False,
) -> None:
    """Train the ResNet-50 classifier (stage 2) on raw or lung-masked/cropped CXRs; evaluates Val and Test at the end."""
    from ..cls.train import train_classifier
    from ..config import ClassifierConfig, TrainConfig

    if gt_masks and seg_model is not None:
        raise _fail(LungclsError("give either --seg-model or --gt-masks, not both"))
    source = "none" if mode == "raw" else ("gt" if gt_masks else "predicted")
    model = ClassifierConfig(
        arch=arch, mode=mode, margin=margin, image_size=image_size, mask_source=source, pretrained=pretrained
    )
    train = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, seed=seed, device=device, compile=compile, deterministic=deterministic,
                        label_smoothing=label_smoothing, class_weighting=class_weighting, ema_epochs=ema_epochs)  # fmt: skip
    _refuse_out_inside_inputs(out, data, force=False)
    try:
        result = train_classifier(
            data,
            out,
            model,
            train,
            seg_model=seg_model,
            weights_file=weights,
            cache_dir=cache,
            resume=resume,
            strict=strict,
        )
    except (LungclsError, ValueError) as e:
        raise _fail(e) from None
    typer.echo(f"best val macro F1 {result.best_metric:.4f} at epoch {result.best_epoch}; run written to {out}")
    if (out / "eval_test.md").is_file():
        typer.echo((out / "eval_test.md").read_text())


@app.command("evaluate-cls")
def evaluate_cls(
    data: Annotated[list[Path], typer.Argument(help="Dataset roots, CSV manifests, or a packed cache.")],
    model: Annotated[Path, typer.Option(help="A train-cls run folder.")],
    split: Annotated[Optional[str], typer.Option(help="Only this split (default: every image).")] = None,
    seg_model: Annotated[
        Optional[Path], typer.Option(help="Stage-1 run for the masks (default: the one it was trained with).")
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option(help="Write eval JSON, Markdown and confusion PNG here (default: the run).")
    ] = None,
    device: Annotated[str, typer.Option()] = "auto",
) -> None:
    """Accuracy, per-class precision/recall/F1/specificity/AUROC, confusion matrix, bootstrap CIs, per-source accuracy."""
    import tempfile

    from ..cls.classifier import Classifier
    from ..cls.train import evaluate_classifier
    from ..data.training_data import open_eval_data

    try:
        clf = Classifier.load(model, device=device)
        with tempfile.TemporaryDirectory() as tmp:
            cache = open_eval_data(data, clf.cfg.working_size, Path(tmp) / "cache")
            name = (split or "all").lower()
            evaluate_classifier(clf, cache, split, out or model, seg_model)
    except (LungclsError, ValueError) as e:
        raise _fail(e) from None
    typer.echo((Path(out or model) / f"eval_{name}.md").read_text())


def _load_pipeline(model: Path, seg_model: Optional[Path], device: str, batch_size: int | None):
    from ..cls.classifier import Classifier
    from ..pipeline import Pipeline
    from ..seg.segmenter import Segmenter

    clf = Classifier.load(model, device=device, batch_size=batch_size)
    seg = seg_model or (
        (model / "segmenter")
        if (model / "pipeline.json").is_file() and (model / "segmenter").is_dir()
        else clf.seg_model
    )
    segmenter = Segmenter.load(seg, device=device, batch_size=batch_size) if seg else None
    return Pipeline(segmenter, clf)


def _report_rows(rows: list[dict], problems: list[dict], class_names: list[str], out: Path) -> None:
    from collections import Counter

    done = [r for r in rows if not r["error"]]
    failed = [r for r in rows if r["error"]] + problems
    counts = Counter(r["predicted"] for r in done)
    typer.echo(f"{len(done)} images classified: " + ", ".join(f"{n} {counts.get(n, 0)}" for n in class_names))
    typer.echo(f"results in {out}. Research use only: not a diagnosis.")
    for r in failed:
        typer.secho(f"  failed {r['path']}: {r.get('error') or r.get('reason')}", err=True, fg="red")
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)
    if not rows:
        raise _fail(LungclsError("no images given"))


@app.command("classify")
def classify(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or globs.")],
    model: Annotated[Path, typer.Option(help="A train-cls run folder or a bundle.")],
    seg_model: Annotated[
        Optional[Path],
        typer.Option(help="Stage-1 run (default: the bundle's, or the one the classifier was trained with)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="CSV file to write.")] = Path("classify.csv"),
    batch_size: InferenceBatch = None,
    device: Annotated[str, typer.Option()] = "auto",
) -> None:
    """Classify CXRs as COVID-19 / Non-COVID / Normal; writes a CSV with the probabilities, lung fraction and flags."""
    from ..files import predict_files, write_rows_csv
    from ..inputs import expand_inputs

    paths, problems = expand_inputs(inputs)
    if out.resolve() in {p.resolve() for p in paths}:
        raise _fail(LungclsError(f"--out {out} is one of the inputs"))
    try:
        pipe = _load_pipeline(model, seg_model, device, batch_size)
        rows = predict_files(paths, pipe)
    except (LungclsError, ValueError) as e:
        raise _fail(e) from None
    write_rows_csv(out, rows, pipe.class_names)
    _report_rows(rows, problems, pipe.class_names, out)
