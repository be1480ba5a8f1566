"""Package a ``train-seg`` run as a built-in model: half-precision weights of the stages it uses, its config,
the content hashes of its images, and a model card with Dice / IoU / HD95 per set.

    python -m lungcls.builtin.package RUN --name NAME --cache CACHE [--other DATA ...] --out src/lungcls/builtin/NAME

``scripts/builtin_segmenter.sh`` runs the whole recipe (split, cache, training, packaging) for the
model shipped with lungcls. Not imported by lungcls at run time.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from ..atomic import write_json, write_text
from ..config import PostprocessConfig, to_dict
from ..data.cache import PackedCache
from ..data.training_data import open_eval_data
from ..defaults import WORKING_SIZE
from ..runs import images_record, split_rows
from ..seg.evaluate import SegmentationReport, evaluate_segmenter
from ..seg.segmenter import Segmenter
from ..store import write_model

LICENCES = {
    "covidqu-infseg": "COVID-QU-Ex (Tahir et al. 2021), CC BY-SA 4.0 as quoted by its Kaggle users (not verified; "
    "the source repository has no licence file); it collects images of the COVID-19 Radiography Database, "
    "RSNA / NIH ChestX-ray14 and the ieee8023 collection, among others",
}


def package(run: Path, name: str, cache: PackedCache, out: Path, others: list[Path], where: str) -> dict:
    """Write the built-in model ``name`` into ``out``; returns its summary (also in its config)."""
    seg = Segmenter.load(run, device="cpu")
    seg.post = PostprocessConfig()  # the current flags and steps
    rows = split_rows(cache, with_mask=True)
    reports = {s.lower(): evaluate_segmenter(seg, cache, rows[s], s.lower(), progress=False) for s in ("Val", "Test")}
    other_reports = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, data in enumerate(others):
            other = open_eval_data([data], WORKING_SIZE, Path(tmp) / f"o{k}", progress=False)
            other_reports[data.name] = evaluate_segmenter(
                seg, other, other.indices(with_mask=True), data.name, progress=False
            )
    half = {k: v.half() if v.is_floating_point() else v for k, v in seg.model.state_dict().items()}
    params = sum(v.numel() for v in half.values() if v.is_floating_point())
    info = seg.info
    test = reports["test"].summary
    summary = {
        "description": "lung U-Net trained on COVID-QU-Ex lung masks (heart and the lung behind it excluded)",
        "architecture": f"U-Net, {seg.cfg.encoder_name} encoder (depth {seg.cfg.encoder_depth}), decoder "
        f"{seg.cfg.decoder_channels}, {seg.cfg.image_size} px input; {params / 1e6:.2f} M parameters",
        "trained_on": f"covidqu-infseg: {len(rows['Train'])} Train / {len(rows['Val'])} Val images (Test "
        f"{len(rows['Test'])} carved out of Train, never used for selection)",
        "mask_convention": "COVID-QU-Ex: left and right lung, stopping at the heart border",
        "dice": f"{test['dice']['mean']:.4f} on its Test split (Val {reports['val'].summary['dice']['mean']:.4f})",
        "trained_where": where,
    }
    config = {
        "kind": "segmenter",
        "model": to_dict(seg.cfg),
        "postprocess": to_dict(seg.post),
        "train": info.get("train"),
        "data": {k: v for k, v in info.get("data", {}).items() if k not in ("inputs", "cache")},
        "metrics": info.get("metrics"),
        "environment": {k: v for k, v in info.get("environment", {}).items() if k != "command"},
        "evaluation": {k: _summary(r) for k, r in reports.items()},
        "builtin": summary,
    }
    out.mkdir(parents=True, exist_ok=True)
    sha = write_model(out, config, half, images_record(cache, {s: r for s, r in rows.items()}))
    summary["size_mb"] = round((out / "model.safetensors").stat().st_size / 2**20, 2)
    config["builtin"] = summary
    write_json(out / "config.json", {**config, "weights_sha256": sha})
    write_text(out / "MODEL_CARD.md", card(name, summary, config, reports, other_reports, rows, sha))
    return summary


def _summary(r: SegmentationReport) -> dict:
    keep = ("dice", "iou", "hd95")
    return {
        **{m: r.summary[m] for m in keep},
        "by_source": {s: {m: v[m] for m in keep} for s, v in r.by_source.items()},
    }


def card(name: str, s: dict, config: dict, reports: dict, others: dict, rows: dict, sha: str) -> str:
    """The built-in model's card (also quoted in the README)."""
    t = config.get("train") or {}
    lines = [
        f"# Built-in lung segmenter `{name}`",
        "",
        "**Research use only. Not a diagnostic device**: not clinically validated; must not be used to diagnose, treat "
        "or triage patients.",
        "",
        f"- Architecture: {s['architecture']}; weights stored in float16 ({s['size_mb']} MB), loaded as float32; "
        f"sha256 `{sha[:16]}`.",
        f"- Trained: {s['trained_where']}; recipe `builtin` of `lungcls.recipes` ({t.get('epochs')} epochs, batch "
        f"{t.get('batch_size')}, AdamW lr {t.get('lr')}, EMA of the weights over {t.get('ema_epochs')} epoch, seed "
        f"{t.get('seed')}); reproduced by `bash scripts/builtin_segmenter.sh`.",
        f"- Mask convention: {s['mask_convention']}.",
        "- Post-processing: threshold 0.5, the two largest components, holes filled; flags `no-lung`, "
        "`implausible-lung-area`, `one-lung-field`, `lung-fields-joined`, `lung-fields-misaligned`, `uncertain-lungs`.",
        "",
        "## Training data",
        "",
        f"`covidqu-infseg`: the Train and Val splits of COVID-QU-Ex's Infection Segmentation part (4,384 images at "
        f"256 px, each with COVID-QU-Ex's own lung mask). Val kept as published ({len(rows['Val'])} images); Test "
        f"({len(rows['Test'])}) carved out of Train by `lungcls data split --test 0.15 --seed 0`, grouped by duplicate "
        f"picture, and used for nothing but the figures below; Train {len(rows['Train'])}.",
        f"Licence: {LICENCES['covidqu-infseg']}.",
        "",
        "The ieee8023 sets were left out: their masks follow other conventions (v7labs include the lung behind the "
        "heart: 37% of the image against COVID-QU-Ex's 24%; the radiologist masks join the two lungs), so adding "
        "them would teach a mixture of conventions, and many of their COVID-19 images are already in COVID-QU-Ex.",
        "",
        "`images.json` holds the content hash (SHA-1 of the decoded pixels) of every Train, Val and Test image: "
        "`train-cls` and `evaluate-cls` warn when a user's Val or Test images are among the Train or Val ones.",
        "",
        "## Figures (post-processed masks, 256 px)",
        "",
        "| split / set | images | Dice mean | Dice p5 | IoU mean | HD95 mean (px) |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in [
        *(("covidqu-infseg " + k, v) for k, v in reports.items()),
        *((f"{k} (other convention)", v) for k, v in others.items()),
    ]:
        m = r.summary
        lines.append(
            f"| {label} | {m['dice']['n']} | {m['dice']['mean']:.4f} | {m['dice']['p5']:.4f} | "
            f"{m['iou']['mean']:.4f} | {m['hd95']['mean']:.2f} |"
        )
    return "\n".join(lines + USE_AND_LIMITS) + "\n"


USE_AND_LIMITS = [
    "",
    "## Intended use",
    "",
    "Lung fields on frontal (PA/AP) adult chest X-rays, for research: the masks and crops that feed lungcls's "
    "classifier, lung-area statistics, quality control of CXR data sets.",
    "",
    "## Known failure modes",
    "",
    "- Images that are not chest X-rays: a picture of blurred noise, a blank and a white image were flagged in "
    "our checks (tests/test_builtin.py); lateral views were not tested (the shared data holds none): expect a "
    "wrong mask, and check the flags.",
    "- Children (other proportions than the adult training images), heavy devices and lines (pacemakers, tubes), "
    "and lungs hidden by heavy consolidation or effusion: the mask can miss the opaque part of the lung.",
    "- Masks follow COVID-QU-Ex's convention: against masks that include the retrocardiac lung, Dice is lower by "
    "construction (see the other-convention rows).",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--cache", type=Path, required=True, help="the packed cache the run was trained on (its split)")
    ap.add_argument(
        "--other", nargs="*", type=Path, default=[], help="sets with masks of other conventions, for information"
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--where", default=f"on the CPU ({torch.get_num_threads()} threads)")
    args = ap.parse_args()
    s = package(args.run, args.name, PackedCache.open(args.cache), args.out, args.other, args.where)
    for k, v in s.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
