"""Package a ``train-seg --target infection`` run as the built-in infection segmenter: half-precision weights, its
config with the COVID-19-from-infection threshold (chosen on Val), the content hashes of its images, and a model
card with Dice / IoU on COVID-19 images, false positives on the others, and the detector's figures.

    python -m lungcls.builtin.package_infection RUN --name NAME --cache CACHE --out src/lungcls/builtin/NAME

``scripts/builtin_infection.sh`` runs the whole recipe (split, cache, training, packaging). Not imported by lungcls
at run time.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from .. import builtin
from ..atomic import write_json, write_text
from ..config import PostprocessConfig, to_dict
from ..data.cache import PackedCache
from ..data.duplicates import duplicate_groups
from ..data.split import group_ids
from ..runs import images_record, split_rows
from ..seg.detector import choose_threshold, detection
from ..seg.evaluate import SegmentationReport, evaluate_segmenter
from ..seg.postprocess import postprocess
from ..seg.segmenter import Segmenter
from ..store import write_model
from .infection_card import infection_card


def package_infection(
    run: Path, name: str, cache: PackedCache, out: Path, where: str, results: Path | None = None
) -> dict:
    """Write the built-in infection segmenter ``name`` into ``out`` (and its figures into the markdown file
    ``results``, when given); returns its summary (also in its config)."""
    seg = Segmenter.load(run, device="cpu", target="infection")
    lungs = Segmenter.load(builtin.DEFAULT, device="cpu", target="lungs")
    rows = split_rows(cache, with_mask=True)
    grid = postprocess_grid(seg, lungs, cache, rows["Val"])
    best = max(grid, key=lambda g: g["dice_infected"] - g["fp_lung_share"])
    seg.post = dataclasses.replace(
        PostprocessConfig.for_target("infection"), threshold=best["threshold"], min_region=best["min_region"]
    )
    reports = {
        s.lower(): evaluate_segmenter(seg, cache, rows[s], s.lower(), progress=True, lungs=lungs) for s in ("Val", "Test")
    }
    detector = _detector(reports, cache)
    threshold = detector["threshold"]
    half = {k: v.half() if v.is_floating_point() else v for k, v in seg.model.state_dict().items()}
    params = sum(v.numel() for v in half.values() if v.is_floating_point())
    test, val = reports["test"], reports["val"]
    summary = {
        "description": "infection U-Net trained on COVID-QU-Ex infection masks (empty on Non-COVID and Normal images)",
        "architecture": f"U-Net, {seg.cfg.encoder_name} encoder (depth {seg.cfg.encoder_depth}), decoder "
        f"{seg.cfg.decoder_channels}, {seg.cfg.image_size} px input; {params / 1e6:.2f} M parameters",
        "trained_on": f"covidqu-infseg: {len(rows['Train'])} Train / {len(rows['Val'])} Val images (Test "
        f"{len(rows['Test'])} carved out of Train, never used for selection)",
        "mask_convention": "COVID-QU-Ex infection masks: the infected region inside the lungs, COVID-19 images only",
        "dice": f"{test.by_class['COVID-19']['dice']['mean']:.4f} on the COVID-19 images of its Test split (Val "
        f"{val.by_class['COVID-19']['dice']['mean']:.4f})",
        "covid_detection": f"sensitivity {detector['test']['sensitivity']['value']:.3f}, specificity "
        f"{detector['test']['specificity']['value']:.3f} on Test at infected share >= {threshold:.4f}",
        "trained_where": where,
    }
    info = seg.info
    config = {
        "kind": "segmenter",
        "model": to_dict(seg.cfg),
        "postprocess": to_dict(seg.post),
        "train": info.get("train"),
        "run": info.get("run"),
        "data": {k: v for k, v in info.get("data", {}).items() if k not in ("inputs", "cache")},
        "metrics": info.get("metrics"),
        "environment": {k: v for k, v in info.get("environment", {}).items() if k != "command"},
        "evaluation": {k: _summary(r) for k, r in reports.items()},
        "threshold_grid": {"chosen_on": "Val: highest mean Dice of the images with infection less the mean predicted "
                           "share of the lungs of the images without", "grid": grid},  # fmt: skip
        "detector": detector,
        "builtin": summary,
    }
    out.mkdir(parents=True, exist_ok=True)
    sha = write_model(out, config, half, images_record(cache, dict(rows)))
    summary["size_mb"] = round((out / "model.safetensors").stat().st_size / 2**20, 2)
    write_json(out / "config.json", {**config, "builtin": summary, "weights_sha256": sha})
    card = infection_card(name, summary, config, reports, rows, sha)
    write_text(out / "MODEL_CARD.md", card)
    if results is not None:
        _write_results(results, name, card)
    return summary


THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
#: smallest region kept, as a share of the image (0: all; 0.01 of a 256 px image: 655 pixels)
MIN_REGIONS = (0.0, 0.001, 0.0025, 0.005, 0.01, 0.02)


def postprocess_grid(seg: Segmenter, lungs: Segmenter, cache: PackedCache, rows: np.ndarray) -> list[dict]:
    """Per probability threshold of :data:`THRESHOLDS` and smallest region of :data:`MIN_REGIONS`, on ``rows`` (Val)
    at the cache's size, through the post-processing that inference runs: the mean Dice of the images with infection
    and the mean predicted share of the lungs of the images without."""
    points = [(t, r) for t in THRESHOLDS for r in MIN_REGIONS]
    dice: dict[tuple, list[float]] = {p: [] for p in points}
    fp: dict[tuple, list[float]] = {p: [] for p in points}
    base = PostprocessConfig.for_target("infection")
    for start in range(0, len(rows), 64):
        chunk = rows[start : start + 64]
        images = torch.from_numpy(np.asarray(cache.images[chunk]))[:, None]
        truth = torch.from_numpy(np.asarray(cache.masks[chunk])).flatten(1).bool()
        probs = seg.probabilities(images).cpu()
        lung = lungs.masks(images).masks.flatten(1).bool().cpu()
        for t, r in points:
            pred = postprocess(probs, dataclasses.replace(base, threshold=t, min_region=r))[0].flatten(1).bool()
            for p, y, m in zip(pred, truth, lung):
                if y.any():
                    dice[t, r].append(float(2 * (p & y).sum() / (p.sum() + y.sum())))
                else:
                    fp[t, r].append(float((p & m).sum() / max(int(m.sum()), 1)))
    mean = {p: (float(np.mean(dice[p])), float(np.mean(fp[p]))) for p in points}
    return [
        {"threshold": t, "min_region": r, "dice_infected": mean[t, r][0], "fp_lung_share": mean[t, r][1]}
        for t, r in points
    ]


def _detector(reports: dict[str, SegmentationReport], cache: PackedCache) -> dict:
    """COVID-19 from infection: the infected-share threshold chosen on Val, its figures on Test (cluster bootstrap)."""
    groups = group_ids(cache.manifest, duplicate_groups(cache.hashes, np.asarray(cache.thumbs)))
    clusters = dict(zip(cache.hashes, groups))
    threshold = choose_threshold(*_shares(reports["val"]))
    shares, covid = _shares(reports["test"])
    return {
        "rule": "COVID-19 when the infected share of the lungs (inside the built-in lung segmenter's lungs) is at "
        "or above the threshold",
        "threshold": threshold,
        "chosen_on": f"Val ({len(reports['val'].images)} images), highest sensitivity + specificity (Youden)",
        "test": detection(shares, covid, threshold, [clusters[cache.hashes[r["row"]]] for r in reports["test"].images]),
    }


def _write_results(path: Path, name: str, card: str) -> None:
    """The card's figures, with what made them, as a results file (``benchmarks/results/``)."""
    about = [line for line in card.splitlines() if line.startswith(("- Architecture", "- Trained:", "- Post"))]
    figures = card[card.index("## Figures") : card.index("## Intended use")].strip()
    write_text(path, f"# Built-in infection segmenter `{name}`: figures\n\nMade by `bash scripts/builtin_infection.sh` "
               f"(model card: `src/lungcls/builtin/{name}/MODEL_CARD.md`; every figure with its intervals in its "
               "`config.json`).\n\n" + "\n".join(about) + f"\n\n{figures}\n")  # fmt: skip


def _shares(report: SegmentationReport) -> tuple[np.ndarray, np.ndarray]:
    """(infected share of the lungs, is COVID-19) per image of an infection report."""
    return (
        np.array([r["infected_share"] for r in report.images]),
        np.array([r["label"] == "COVID-19" for r in report.images]),
    )


def _summary(r: SegmentationReport) -> dict:
    keep = ("dice", "iou", "fp_share", "fp_lung_share", "any_fp")
    return {**{m: r.summary[m] for m in keep}, "by_class": {c: {m: v[m] for m in keep} for c, v in r.by_class.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--cache", type=Path, required=True, help="the packed cache the run was trained on (its split)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--where", default=f"on the CPU ({torch.get_num_threads()} threads)")
    ap.add_argument("--results", type=Path, help="also write the figures into this markdown file")
    args = ap.parse_args()
    s = package_infection(args.run, args.name, PackedCache.open(args.cache), args.out, args.where, args.results)
    for k, v in s.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
