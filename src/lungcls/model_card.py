"""Model cards: what a model is, what it was trained on (names and counts, never a local path), its recipe,
its figures with their intervals, calibration, intended use, known limits, and a plain warning when its
numbers must not be used (a smoke or demo model, synthetic data, metrics near chance).

The figures come from the models' own configs (``config.json`` records each run's evaluation
summary), so a card can be written for any loaded or freshly trained pipeline.
"""

from __future__ import annotations

import logging
import math

from .defaults import TEMPERATURE_BOUNDS

log = logging.getLogger(__name__)

INTENDED_USE = [
    "**Research use only. Not a diagnostic device**: not clinically validated; must not be used to diagnose,",
    "treat or triage patients.",
]
LIMITS = [
    "- Frontal (PA/AP) adult chest X-rays only. Lateral views, children, images with heavy devices and lines,",
    "  and lungs hidden by heavy consolidation are known failure modes of lung segmentation; the mask-quality",
    "  flags (`no-lung`, `implausible-lung-area`, `one-lung-field`, `lung-fields-joined`,",
    "  `lung-fields-misaligned`, `uncertain-lungs`) mark many such images, not all.",
    "- Labels of public CXR sets are noisy and class is often confounded with the source hospital or scanner:",
    "  accuracy on such data can reflect shortcuts rather than disease. Check per-source results and external",
    "  (leave-one-source-out) validation before reading anything into the numbers.",
]


def warnings_for(info: dict, kind: str) -> list[str]:
    """Plain warnings for a stage's card: synthetic data, a small or short training, metrics near chance."""
    out = []
    data, train = info.get("data", {}), info.get("train", {})
    sources = data.get("sources", [])
    if any("SYNTHETIC" in s for s in sources):
        out.append(
            "trained on SYNTHETIC phantoms: it shows the mechanics only; its numbers say nothing about real CXRs"
        )
    if train.get("epochs", 100) < 10 or data.get("train_images", 10**6) < 300:
        out.append(
            f"a smoke/demo model ({train.get('epochs', '?')} epochs on {data.get('train_images', '?')} "
            "training images): do not use its numbers or its predictions"
        )
    test = (info.get("evaluation") or {}).get("test") or (info.get("evaluation") or {}).get("val") or {}
    if kind == "classifier" and test:
        k = len(test.get("per_class", {})) or 3
        if test.get("accuracy", 1) < 1 / k + 0.1 or test.get("macro_f1", 1) < 0.5:
            out.append(
                f"its evaluation is near chance (accuracy {test.get('accuracy', math.nan):.2f} with {k} "
                f"classes, macro F1 {test.get('macro_f1', math.nan):.2f})"
            )
    temperature = (test or {}).get("temperature") or 1.0
    if kind == "classifier" and temperature > 0.99 * TEMPERATURE_BOUNDS[1]:
        out.append(
            f"its calibration temperature reached its bound ({temperature:.1f}): on Val its outputs carried "
            "almost no information, so its probabilities are near uniform"
        )
    # lungs: published U-Nets reach 0.98 on COVID-QU-Ex; infection (Dice on the images with infection): 0.88
    low = 0.7 if (info.get("model") or {}).get("target") == "infection" else 0.85
    if kind == "segmenter" and test and test.get("dice", {}).get("mean", 1) < low:
        out.append(f"its Dice is low ({test['dice']['mean']:.2f}): check the outlines before using its masks")
    return out


def model_warnings(model) -> list[str]:
    """The warnings of a loaded model's card, each naming the model: what is printed whenever it is used and
    written into the CSVs and reports made with it."""
    name = model.info.get("source", {}).get("name") or "in memory"
    info = model.info
    if getattr(getattr(model, "cfg", None), "target", None):  # a segmenter: what it segments sets what Dice is low
        info = {**info, "model": {**(info.get("model") or {}), "target": model.cfg.target}}
    return [f"{model.kind} {name}: {w}" for w in warnings_for(info, model.kind)]


def announce(warnings: list[str]) -> list[str]:
    """Log each warning once (as lungcls warnings, which the command line prints); returns them."""
    for w in dict.fromkeys(warnings):
        log.warning("WARNING %s", w)
    return warnings


def pipeline_warnings(segmenter, classifier) -> list[str]:
    """Both stages' card warnings, and the out-of-scope uses of the pair: masks from another segmenter than the
    classifier was trained with, predicted masks for a classifier trained on the dataset's masks."""
    out = model_warnings(classifier) + (model_warnings(segmenter) if segmenter is not None else [])
    trained_with = (classifier.info.get("segmenter") or {}).get("sha256")
    seg_source = (segmenter.info.get("source", {}) if segmenter is not None else {}).get("sha256")
    if classifier.needs_masks and trained_with and seg_source and trained_with != seg_source:
        out.append(
            f"out of scope: the classifier was trained on masks of another segmenter (weights {trained_with[:12]}) "
            f"than the one it is used with ({seg_source[:12]}); its figures do not hold for these masks"
        )
    if classifier.cfg.mask_source == "gt" and segmenter is not None:
        out.append(
            "out of scope: the classifier was trained on the dataset's own lung masks and is used with predicted "
            "masks; its figures do not hold for them"
        )
    return out


def data_lines(info: dict) -> list[str]:
    """Training data: set names, counts per split and class, the split's content hash."""
    data = info.get("data", {})
    lines = [
        f"- Sets: {', '.join(data.get('sources', [])) or 'not recorded'}; split digest "
        f"`{str(data.get('split_digest', '?'))[:12]}` (content hashes of the images per split)."
    ]
    counts = data.get("counts", {})
    if counts:
        names = list(next(iter(counts.values())).keys())
        lines += ["", "| split | " + " | ".join(names) + " | total |", "|---" * (len(names) + 2) + "|"]
        for split, c in counts.items():
            lines.append(f"| {split} | " + " | ".join(str(c[n]) for n in names) + f" | {sum(c.values())} |")
    if info.get("hold_out"):
        lines.append(f"- External validation: the source `{info['hold_out']}` was held out as Test.")
    return lines


def recipe_line(info: dict, model: dict) -> str:
    """One line on the architecture and how it was trained."""
    t = info.get("train", {})
    arch = (
        model.get("arch")
        if model.get("arch") != "unet"
        else f"U-Net ({model.get('encoder_name')}, depth {model.get('encoder_depth')})"
    )
    extra = ", ".join(f"{k} {t[k]}" for k in ("label_smoothing", "ema_epochs") if t.get(k))
    return (
        f"- {arch} at {model.get('image_size')} px; {t.get('epochs', '?')} epochs, batch {t.get('batch_size', '?')}, "
        f"AdamW lr {t.get('lr', '?')}, seed {t.get('seed', '?')}"
        + (f", {extra}" if extra else "")
        + (
            ", started from " + str(model.get("init_weights") or "ImageNet")
            if model.get("pretrained") or model.get("init_weights")
            else ""
        )
        + "."
    )


def classifier_lines(info: dict) -> list[str]:
    """The reference table rows with CIs, calibration and per-source accuracy of the recorded evaluation."""
    lines = []
    for split, e in (info.get("evaluation") or {}).items():
        ci = e.get("ci95", {})
        lines += [
            "",
            f"**{split}** ({e.get('n')} images): accuracy {e['accuracy']:.3f} "
            f"[{ci.get('accuracy', [math.nan] * 2)[0]:.3f}, {ci.get('accuracy', [math.nan] * 2)[1]:.3f}], macro F1 "
            f"{e['macro_f1']:.3f} [{ci.get('macro_f1', [math.nan] * 2)[0]:.3f}, "
            f"{ci.get('macro_f1', [math.nan] * 2)[1]:.3f}] "
            f"(95% bootstrap over {ci.get('unit', 'image')}s)",
            "",
            "| class | precision | recall | F1 [95% CI] | support |",
            "|---|---|---|---|---|",
        ]
        cis = ci.get("per_class_f1") or [[math.nan, math.nan]] * len(e.get("per_class", {}))
        for (c, m), (lo, hi) in zip(e.get("per_class", {}).items(), cis):
            lines.append(
                f"| {c} | {m['precision']:.2f} | {m['recall']:.2f} | {m['f1']:.2f} [{lo:.2f}, {hi:.2f}] | "
                f"{m['support']} |"
            )
        if e.get("ece_before") is not None:
            lines += [
                "",
                f"Calibration: temperature {e.get('temperature', 1.0):.2f} fitted on Val; expected calibration "
                f"error {e['ece_before']:.3f} before, {e['ece_after']:.3f} after.",
            ]
        if e.get("by_source"):
            lines += [
                "",
                "Accuracy per source: "
                + ", ".join(f"{s} {v['accuracy']:.2f} (n={v['n']})" for s, v in e["by_source"].items()),
            ]
    return lines or ["", "No evaluation recorded."]


def segmenter_lines(info: dict) -> list[str]:
    """Dice / IoU / HD95 per set of the recorded evaluation."""
    lines = []
    for split, e in (info.get("evaluation") or {}).items():
        lines += [
            "",
            f"**{split}**",
            "",
            "| set | images | Dice mean | Dice p5 | IoU mean | HD95 mean (px) |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in {**e.get("by_source", {}), "all": e}.items():
            lines.append(
                f"| {name} | {s['dice']['n']} | {s['dice']['mean']:.4f} | {s['dice']['p5']:.4f} | "
                f"{s['iou']['mean']:.4f} | {s['hd95']['mean']:.2f} |"
            )
    return lines or ["", "No evaluation recorded."]


def pipeline_card(pipe, meta: dict) -> str:
    """A bundle's ``MODEL_CARD.md``."""
    seg, clf = pipe.segmenter, pipe.classifier
    warn = [f"> **WARNING (classifier): {w}.**" for w in warnings_for(clf.info, "classifier")]
    if seg is not None:
        warn += [f"> **WARNING (segmenter): {w}.**" for w in warnings_for(seg.info, "segmenter")]
    lines = ["# lungcls pipeline", "", *INTENDED_USE, ""] + (warn + [""] if warn else [])
    lines += [
        f"- Classes: {', '.join(meta['class_names'])}; classifier input `{meta['mode']}`; working size "
        f"{meta['working_size']} px; lungcls {meta['lungcls']}."
    ]
    if seg is not None:
        src = meta.get("segmenter") or {}
        named = f"built-in model `{src.get('name')}`" if src.get("origin") == "builtin" else "trained with lungcls"
        lines.append(f"- Stage 1: {named}, weights sha256 `{str(src.get('sha256'))[:16]}`.")
    lines += ["", "## Stage 2: classifier", "", recipe_line(clf.info, vars(clf.cfg)), "", "### Training data", ""]
    lines += data_lines(clf.info) + ["", "### Evaluation"] + classifier_lines(clf.info)
    if seg is not None:
        lines += [
            "",
            "## Stage 1: lung segmenter",
            "",
            recipe_line(seg.info, vars(seg.cfg)),
            "",
            "### Training data",
            "",
        ]
        lines += data_lines(seg.info) + ["", "### Evaluation"] + segmenter_lines(seg.info)
    lines += ["", "## Intended use and known limits", "", *LIMITS]
    return "\n".join(lines) + "\n"


def classifier_summary(report) -> dict:
    """What a classifier run's ``config.json`` records of an evaluation
    (:class:`~lungcls.cls.report.ClassificationReport`)."""
    c = report.calibration or {}
    return {
        "n": report.n,
        "accuracy": report.accuracy,
        "macro_f1": report.macro_avg["f1"],
        "ci95": report.ci95,
        "per_class": {
            k: {m: v[m] for m in ("precision", "recall", "f1", "support")} for k, v in report.per_class.items()
        },
        "by_source": report.by_source,
        "temperature": c.get("temperature"),
        "ece_before": c.get("ece_before"),
        "ece_after": c.get("ece_after"),
        "coverage": dense_coverage(report),
    }


def dense_coverage(report) -> list[dict]:
    """The coverage-accuracy curve of a classification report at every confidence 0.00, 0.01 ... 1.00 (from its
    per-image records): what ``--abstain-below`` reads to say the coverage a threshold implies on Val."""
    import torch

    from .cls.report import coverage_curve

    if not report.images:
        return report.coverage
    probs = torch.tensor([r["probs"] for r in report.images])
    labels = torch.tensor([r["label"] for r in report.images])
    return coverage_curve(probs, labels, [round(t / 100, 2) for t in range(101)])


def segmenter_summary(report) -> dict:
    """What a segmenter run's ``config.json`` records of an evaluation
    (:class:`~lungcls.seg.evaluate.SegmentationReport`)."""
    keep = (
        ("dice", "iou", "hd95", "pixel_accuracy")
        if report.target == "lungs"
        else ("dice", "iou", "fp_share", "fp_lung_share", "any_fp")
    )
    return {
        **{m: report.summary[m] for m in keep},
        "by_source": {s: {m: v[m] for m in keep} for s, v in report.by_source.items()},
    }
