"""The model card of the built-in infection segmenter (written by :mod:`lungcls.builtin.package_infection`)."""

from __future__ import annotations

import json

from .. import builtin
from ..seg.infection import MIN_SHARE
from .package import LICENCES


def _weights_sha(name: str) -> str:
    """The SHA-256 recorded for built-in model ``name``'s weights."""
    return json.loads(builtin.folder(name).joinpath("config.json").read_text(encoding="utf-8")).get("weights_sha256", "")


def infection_card(name: str, s: dict, config: dict, reports: dict, rows: dict, sha: str) -> str:
    """The card: what it is, how it was trained, on what, its figures, the detector's, intended use and limits."""
    t, run = config.get("train") or {}, (config.get("run") or {})
    d = config["detector"]
    covid_share = sum(1 for r in reports["test"].images if r["label"] == "COVID-19") / max(len(reports["test"].images), 1)

    budget = f"time budget {t['time_budget']:.0f} s: " if t.get("time_budget") else ""
    weights = str(config["model"].get("encoder_weights") or "")
    lung_sha = _weights_sha(builtin.DEFAULT)[:16]
    started = (
        f"started from the weights of the built-in lung segmenter `{builtin.DEFAULT}` (trained on the same split's "
        "Train and Val)" if lung_sha and lung_sha in weights else f"started from {weights or 'random weights'}"
    )

    lines = [
        f"# Built-in infection segmenter `{name}`",
        "",
        "**Research use only. Not a diagnostic device**: not clinically validated; must not be used to diagnose, "
        "treat, triage or grade patients.",
        "",
        f"- Architecture: {s['architecture']}; weights stored in float16 ({s['size_mb']} MB), loaded as float32; "
        f"sha256 `{sha[:16]}`.",
        f"- Trained: {s['trained_where']}; recipe `infection` of `lungcls.recipes` (batch {t.get('batch_size')}, "
        f"AdamW lr {t.get('lr')}, EMA of the weights over {t.get('ema_epochs')} epoch, seed {t.get('seed')}; "
        f"{budget}{run.get('epochs_trained', '?')} epochs trained of {run.get('epochs_planned', '?')} planned, "
        f"{run.get('seconds', 0) / 60:.0f} minutes), {started}; reproduced by `bash scripts/builtin_infection.sh`.",
        f"- Mask convention: {s['mask_convention']}.",
        "- Loss: binary cross-entropy over every pixel of every image (so the empty masks of Non-COVID and Normal "
        "images are learnt from as real negatives: every pixel predicted there costs) plus 1 - the mean soft Dice of "
        "the images with infection (each counts alike, a small infection as much as a large one; images without "
        f"infection never make it undefined). Sampling: COVID-19 images are {covid_share:.0%} of the data, so "
        f"batches of {t.get('batch_size')} hold about {covid_share * (t.get('batch_size') or 0):.0f} images with "
        "infection; no resampling was needed. The best epoch is chosen on Val by the mean Dice of the images with "
        "infection less the mean predicted share of the images without.",
        _postprocess_line(config),
        "",
        "## Training data",
        "",
        f"`covidqu-infseg`: the Train and Val splits of COVID-QU-Ex's Infection Segmentation part (4,384 images at "
        f"256 px, each with an infection mask: a drawn region on every COVID-19 image, an empty mask on every "
        f"Non-COVID and Normal image). The split is the built-in lung segmenter's: Val kept as published "
        f"({len(rows['Val'])} images); Test ({len(rows['Test'])}) carved out of Train by `lungcls data split "
        f"--test 0.15 --seed 0`, grouped by duplicate picture, used for nothing but the figures below; Train "
        f"{len(rows['Train'])}. Licence: {LICENCES['covidqu-infseg']}.",
        "",
        "`images.json` holds the content hash (SHA-1 of the decoded pixels) of every Train, Val and Test image.",
        "",
        "## Figures (256 px; Dice and IoU on the images with infection, false positives on the others)",
        "",
    ]
    for split in ("val", "test"):
        lines += [f"**{split.capitalize()}**", "", reports[split].infection_markdown().strip(), ""]
    return "\n".join(lines + _detector_lines(d) + USE_AND_LIMITS) + "\n"


def _postprocess_line(config: dict) -> str:
    """The card's post-processing item: the chosen threshold and smallest region, the best points of the Val grid."""
    post = config["postprocess"]
    small = post.get("min_region") or 0
    regions = f"regions under {small:.2%} of the image dropped" if small else "every region kept"
    ranked = sorted(config["threshold_grid"]["grid"], key=lambda g: g["fp_lung_share"] - g["dice_infected"])
    best = ", ".join(
        f"{g['threshold']} / {g.get('min_region', 0)}: {g['dice_infected']:.3f} / {g['fp_lung_share']:.4f}"
        for g in ranked[:5]
    )
    return (
        f"- Post-processing: the probability threshold {post['threshold']}, {regions}; both chosen on Val (highest "
        "mean Dice of the images with infection less the mean predicted share of the lungs of the images without, "
        "over probability thresholds x smallest regions as a share of the image; the best five, threshold / region: "
        f"Dice / false-positive share: {best}). In `lungcls segment --infection` and `Pipeline` the infection is kept "
        "inside the lungs of the lung segmenter, measured per lung (the patient's right and left), scored 0-4 per lung "
        f"by extent (Wong et al., Radiology 2020; under {MIN_SHARE:.0%} of a lung: 0) and graded none / mild / "
        "moderate / severe (see `lungcls.seg.infection`)."
    )


def _detector_lines(d: dict) -> list[str]:
    """The card's section on COVID-19 from infection."""
    test = d["test"]

    def fig(k: str) -> str:
        v = test[k]
        return f"{v['value']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]"

    return [
        "## COVID-19 from infection",
        "",
        f"Rule: {d['rule']}. Threshold {d['threshold']:.4f}, chosen on {d['chosen_on']}.",
        "",
        f"On Test ({test['n']} images, {test['positives']} COVID-19; 95% intervals over bootstrap resamples of "
        "duplicate-picture clusters): sensitivity " + fig("sensitivity") + ", specificity " + fig("specificity")
        + ", AUROC " + fig("auroc") + ".",
        "",
        "COVID-19 in this data is the only class with drawn infection: the detector says \"an opacity that looks "
        "like COVID-QU-Ex's COVID-19 infection masks\", not \"COVID-19\"; other pneumonias with similar opacities "
        "(Non-COVID) are where it errs.",
    ]


USE_AND_LIMITS = [
    "",
    "## Intended use",
    "",
    "The region and extent of COVID-19-like opacity on frontal (PA/AP) adult chest X-rays, for research: "
    "localisation maps, the infected share of each lung, severity scores for cohort studies, and a comparison of "
    "image-level detection with the classifier.",
    "",
    "## Known failure modes",
    "",
    "- Trained on one collection (COVID-QU-Ex): its masks' drawing style (an annotator's outline of the opacity) "
    "is what it learns; other annotators draw differently.",
    "- Non-COVID pneumonia, effusion, atelectasis, devices and overlying tissue can look like infection and be "
    "marked (they are the false positives in the tables above).",
    "- Infection outside the lungs that the lung segmenter finds (e.g. behind the heart, which COVID-QU-Ex's lung "
    "masks exclude) is not counted.",
    "- Lateral views, children and images that are not chest X-rays were not tested (the shared data holds none "
    "of the first two): check the lung flags (`lungs-doubtful`).",
]
