"""The ``lungcls`` command line: a thin layer over the Python API.

Exit codes: 0 all went well; 1 some inputs failed (they are listed, the rest was done);
2 usage error (bad arguments, nothing usable to work on).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .errors import LungclsError

app = typer.Typer(
    name="lungcls",
    help="Lung segmentation and COVID-19 / Non-COVID / Normal classification of chest X-rays. "
    "Research use only: not a diagnostic device.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Look at and split datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2

Roots = Annotated[list[Path], typer.Argument(help="COVID-QU-Ex root(s) at any level, set folders, or CSV manifests.")]
Workers = Annotated[Optional[int], typer.Option(help="Decoding processes (default: all CPU cores).")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lungcls {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def _fail(e: Exception, code: int = EXIT_USAGE) -> typer.Exit:
    typer.secho(f"error: {e}", err=True, fg="red")
    return typer.Exit(code)


def _refuse_out_inside_inputs(out: Path, roots: list[Path], force: bool) -> None:
    """Refuse an output inside an input folder (a CSV manifest's own folder may hold outputs)."""
    out_r = out.resolve()
    for r in roots:
        folder = r.resolve()
        if out_r == folder or (r.is_dir() and folder in out_r.parents):
            if not force:
                raise _fail(
                    LungclsError(f"--out {out} is inside the input folder {r}; choose another folder or pass --force")
                )


@data_app.command("inspect")
def data_inspect(
    roots: Roots,
    part: Annotated[Optional[str], typer.Option(help="COVID-QU-Ex part when a root holds several.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the full report as JSON.")] = None,
    workers: Workers = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 when an image or patient is in two splits.")] = False,
) -> None:
    """Counts per split and class, unreadable files, mask problems, sizes, duplicates, patient overlap."""
    from .atomic import write_json
    from .data import open_dataset
    from .data.inspect import format_report, inspect_dataset

    try:
        found = open_dataset(roots, part=part)
    except LungclsError as e:
        raise _fail(e) from None
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
    out: Annotated[Path, typer.Option(help="Where to write the split manifest (CSV).")],
    val: Annotated[float, typer.Option(help="Fraction for validation.")] = 0.1,
    test: Annotated[float, typer.Option(help="Fraction for test.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 0,
    part: Annotated[Optional[str], typer.Option(help="COVID-QU-Ex part when a root holds several.")] = None,
    workers: Workers = None,
    force: Annotated[bool, typer.Option(help="Allow --out inside an input folder / overwrite.")] = False,
) -> None:
    """Seeded, class-stratified, patient-grouped Train/Val/Test split, written as a CSV manifest.

    Exact duplicate images (same pixels) are kept on one side, like images of one patient.
    """
    from .data import make_split, open_dataset
    from .data.inspect import inspect_dataset

    _refuse_out_inside_inputs(out, roots, force)
    if out.exists() and not force:
        raise _fail(LungclsError(f"{out} exists; pass --force to overwrite it"))
    try:
        found = open_dataset(roots, part=part)
    except LungclsError as e:
        raise _fail(e) from None
    _, duplicates = inspect_dataset(found, workers=workers)
    split = make_split(found.manifest, val=val, test=test, seed=seed, duplicates=duplicates)
    split.write_csv(out)
    for name, c in split.counts().items():
        typer.echo(f"{name:<6} " + "  ".join(f"{k} {v}" for k, v in c.items()) + f"  (total {sum(c.values())})")
    typer.echo(f"split manifest written to {out}")


@app.command("prepare")
def prepare(
    roots: Roots,
    out: Annotated[Path, typer.Option(help="Cache folder to write.")],
    size: Annotated[int, typer.Option(help="Working size in pixels (square).")] = 256,
    make_split: Annotated[
        bool, typer.Option("--make-split", help="Split Train/Val/Test by patient first (for data with no split).")
    ] = False,
    val: Annotated[float, typer.Option(help="With --make-split: fraction for validation.")] = 0.1,
    test: Annotated[float, typer.Option(help="With --make-split: fraction for test.")] = 0.2,
    seed: Annotated[int, typer.Option(help="With --make-split: seed of the split.")] = 0,
    part: Annotated[Optional[str], typer.Option(help="COVID-QU-Ex part when a root holds several.")] = None,
    workers: Workers = None,
    force: Annotated[bool, typer.Option(help="Allow --out inside an input folder.")] = False,
) -> None:
    """Decode every image and mask once into a packed uint8 cache (memory-mapped at training time)."""
    from .data import make_split as split_fn
    from .data import open_dataset, prepare_cache
    from .data.cache import cached_duplicates

    _refuse_out_inside_inputs(out, roots, force)
    try:
        found = open_dataset(roots, part=part)
    except LungclsError as e:
        raise _fail(e) from None
    manifest = found.manifest
    if make_split:
        duplicates = cached_duplicates(manifest, out, workers=workers)
        manifest = split_fn(manifest, val=val, test=test, seed=seed, duplicates=duplicates)
    result = prepare_cache(manifest, out, size=(size, size), workers=workers)
    if result.up_to_date:
        typer.echo(f"{out}: up to date ({result.count} images), nothing to do")
    else:
        typer.echo(
            f"{out}: {result.count} images cached ({result.decoded} decoded, {result.reused} reused) in {result.seconds:.1f} s"
        )
    for f in result.failed:
        typer.secho(f"  skipped {f['path']}: {f['reason']}", err=True, fg="yellow")
    typer.echo(json.dumps(_counts(out)))
    if result.failed:
        raise typer.Exit(EXIT_SOME_FAILED)


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
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 1e-3,
    patience: Annotated[
        int, typer.Option(help="Early stopping after this many epochs without improvement (0 = off).")
    ] = 0,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="auto, cuda, cuda:N or cpu.")] = "auto",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    placement: Annotated[
        str, typer.Option(help="On CUDA, keep the cache on the 'device', in pinned 'host' memory, or 'auto'.")
    ] = "auto",
    cache: Annotated[Optional[Path], typer.Option(help="Where to cache the data (default OUT/cache).")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the interrupted run in OUT with its saved settings.")
    ] = False,
) -> None:
    """Train the lung U-Net (stage 1) on the images that have lung masks."""
    from .config import SegmenterConfig, TrainConfig
    from .seg.train import train_segmenter

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
        placement=placement,
    )
    _refuse_out_inside_inputs(out, data, force=False)
    try:
        result = train_segmenter(data, out, model, train, cache_dir=cache, resume=resume)
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

    from .atomic import write_json, write_text
    from .data.training_data import open_eval_data
    from .seg.evaluate import evaluate_segmenter, format_table
    from .seg.segmenter import Segmenter

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
    batch_size: Annotated[int, typer.Option()] = 32,
    device: Annotated[str, typer.Option()] = "auto",
    force: Annotated[bool, typer.Option(help="Allow --out inside an input folder.")] = False,
) -> None:
    """Segment the lungs: a mask, an outline overlay and a lung crop per image, and a CSV."""
    from .inputs import expand_inputs
    from .seg.outputs import segment_files
    from .seg.segmenter import Segmenter

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
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 1e-3,
    label_smoothing: Annotated[float, typer.Option()] = 0.1,
    class_weighting: Annotated[bool, typer.Option(help="Inverse-frequency class weights in the loss.")] = True,
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="Start from ImageNet weights in torchvision's cache.")
    ] = False,
    weights: Annotated[Optional[Path], typer.Option(help="Start from these ImageNet ResNet-50 weights.")] = None,
    patience: Annotated[int, typer.Option(help="Early stopping patience in epochs (0 = off).")] = 0,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="auto, cuda, cuda:N or cpu.")] = "auto",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    cache: Annotated[Optional[Path], typer.Option(help="Where to cache the data (default OUT/cache).")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the interrupted run in OUT with its saved settings.")
    ] = False,
) -> None:
    """Train the ResNet-50 classifier (stage 2) on raw or lung-masked/cropped CXRs; evaluates Val and Test at the end."""
    from .cls.train import train_classifier
    from .config import ClassifierConfig, TrainConfig

    if gt_masks and seg_model is not None:
        raise _fail(LungclsError("give either --seg-model or --gt-masks, not both"))
    source = "none" if mode == "raw" else ("gt" if gt_masks else "predicted")
    model = ClassifierConfig(
        arch=arch, mode=mode, margin=margin, image_size=image_size, mask_source=source, pretrained=pretrained
    )
    train = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, seed=seed, device=device, compile=compile,
                        label_smoothing=label_smoothing, class_weighting=class_weighting)  # fmt: skip
    _refuse_out_inside_inputs(out, data, force=False)
    try:
        result = train_classifier(
            data, out, model, train, seg_model=seg_model, weights_file=weights, cache_dir=cache, resume=resume
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

    from .cls.classifier import Classifier
    from .cls.train import evaluate_classifier
    from .data.training_data import open_eval_data

    try:
        clf = Classifier.load(model, device=device)
        with tempfile.TemporaryDirectory() as tmp:
            cache = open_eval_data(data, clf.cfg.working_size, Path(tmp) / "cache")
            name = (split or "all").lower()
            evaluate_classifier(clf, cache, split, out or model, seg_model)
    except (LungclsError, ValueError) as e:
        raise _fail(e) from None
    typer.echo((Path(out or model) / f"eval_{name}.md").read_text())


def _load_pipeline(model: Path, seg_model: Optional[Path], device: str, batch_size: int):
    from .cls.classifier import Classifier
    from .pipeline import Pipeline
    from .seg.segmenter import Segmenter

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
    batch_size: Annotated[int, typer.Option()] = 64,
    device: Annotated[str, typer.Option()] = "auto",
) -> None:
    """Classify CXRs as COVID-19 / Non-COVID / Normal; writes a CSV with the probabilities, lung fraction and flags."""
    from .files import predict_files, write_rows_csv
    from .inputs import expand_inputs

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


@app.command("predict")
def predict(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or globs.")],
    model: Annotated[Path, typer.Option(help="A bundle or a train-cls run folder.")],
    out: Annotated[Path, typer.Option(help="Output folder (predictions.csv, explain/).")],
    explain: Annotated[
        bool, typer.Option("--explain", help="Grad-CAM overlays and the in-lung share of the saliency.")
    ] = False,
    seg_model: Annotated[Optional[Path], typer.Option(help="Stage-1 run (default: the bundle's).")] = None,
    batch_size: Annotated[int, typer.Option()] = 32,
    device: Annotated[str, typer.Option()] = "auto",
    force: Annotated[bool, typer.Option(help="Allow --out inside an input folder.")] = False,
) -> None:
    """Segment and classify with a whole pipeline; optionally explain each prediction with Grad-CAM."""
    from .files import predict_files, write_rows_csv
    from .inputs import expand_inputs

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
    from .config import ClassifierConfig, SegmenterConfig, TrainConfig
    from .masking import check_mode
    from .pipeline import Pipeline

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
    from .export import export_onnx
    from .pipeline import Pipeline

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
    from .demo import DemoSettings, run_demo

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


def _counts(out: Path) -> dict:
    from .data import PackedCache

    return PackedCache.open(out).meta["counts"]


def main() -> None:
    """Console-script entry point."""
    app()
