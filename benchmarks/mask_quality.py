"""How well the per-image estimate of mask quality (``mask_dice_estimate``: the Dice a lung mask is expected to have,
from the segmenter's own probabilities) tracks the true Dice, on images with ground truth: covidqu-infseg's Val
(where a cut-off for "Dice < 0.9" is chosen) and Test (never seen by the built-in segmenter), and two sets drawn to
other conventions (their true Dice is low by convention, which no estimate from the image can know).

    python benchmarks/mask_quality.py ../shared/data --out benchmarks/results/mask_quality
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402

from lungcls.atomic import write_json, write_text  # noqa: E402
from lungcls.data.cache import PackedCache  # noqa: E402
from lungcls.data.training_data import open_eval_data, split_and_cache  # noqa: E402
from lungcls.data import open_dataset  # noqa: E402
from lungcls.plots import save_figure  # noqa: E402
from lungcls.seg.detector import auroc, choose_threshold  # noqa: E402
from lungcls.seg.evaluate import evaluate_segmenter  # noqa: E402
from lungcls.seg.segmenter import Segmenter  # noqa: E402

GOOD = 0.9  # a mask with a true Dice under this is "bad"


def scored(seg: Segmenter, cache: PackedCache, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true Dice, estimate) of each row (the estimate from the one inference path's MaskBatch)."""
    report = evaluate_segmenter(seg, cache, rows, progress=False)
    kept = np.array([r["row"] for r in report.images])
    estimates = []
    for start in range(0, len(kept), 64):
        estimates += seg.masks(np.asarray(cache.images[kept[start : start + 64]])[:, None]).dice_estimates
    return np.array([r["dice"] for r in report.images]), np.array(estimates)


def stats(true: np.ndarray, est: np.ndarray, cut: float) -> dict:
    from scipy.stats import pearsonr, spearmanr

    bad = true < GOOD
    flagged = est < cut
    return {
        "images": len(true), "bad": int(bad.sum()), "pearson": float(pearsonr(true, est)[0]),
        "spearman": float(spearmanr(true, est)[0]), "mean_abs_error": float(np.abs(true - est).mean()),
        "auroc_bad": auroc(-est, bad), "sensitivity": float(flagged[bad].mean()) if bad.any() else float("nan"),
        "specificity": float((~flagged[~bad]).mean()) if (~bad).any() else float("nan"),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.perf_counter()
    seg = Segmenter.load(device="cpu", target="lungs")
    sets = {}
    with tempfile.TemporaryDirectory() as tmp:
        covidqu = split_and_cache(open_dataset([args.data / "covidqu-infseg"]).manifest, Path(tmp) / "c", split="complete",
                                  test=0.15, seed=0, progress=False).cache  # fmt: skip
        for split in ("Val", "Test"):
            sets[f"covidqu-infseg {split}"] = scored(seg, covidqu, covidqu.indices(split, with_mask=True))
        for name in ("ieee8023-v7labs427", "ieee8023-radiologist100"):
            other = open_eval_data([args.data / name], 256, Path(tmp) / name, progress=False)
            sets[f"{name} (other convention)"] = scored(seg, other, other.indices(with_mask=True))
    true_val, est_val = sets["covidqu-infseg Val"]
    bad = true_val < GOOD
    cut = choose_threshold(-est_val, bad) if bad.any() and (~bad).any() else GOOD
    cut = -cut if bad.any() and (~bad).any() else cut
    result = {"cut": cut, "good": GOOD, "sets": {k: stats(t, e, cut) for k, (t, e) in sets.items()},
              "machine": machine(), "command": " ".join(sys.argv), "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", result)
    save_figure(scatter(sets, cut), args.out / "estimate_vs_true.png")
    lines = ["# Mask quality: the estimate against the true Dice", "",
             f"`mask_dice_estimate` against the Dice of the post-processed mask; a mask is bad when its Dice is under "
             f"{GOOD}. Cut-off for flagging chosen on covidqu-infseg Val (Youden): estimate < {cut:.4f}.", "",
             "| set | images | bad | Pearson r | Spearman rho | mean abs. error | AUROC for bad | flagged bad (sens.) | "
             "good kept (spec.) |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for k, s in result["sets"].items():
        lines.append(f"| {k} | {s['images']} | {s['bad']} | {s['pearson']:.3f} | {s['spearman']:.3f} | "
                     f"{s['mean_abs_error']:.4f} | {s['auroc_bad']:.3f} | {s['sensitivity']:.3f} | {s['specificity']:.3f} |")  # fmt: skip
    lines += ["", f"Command: `{result['command']}`; {result['seconds']} s on {result['machine']['cpu']}.", ""]
    write_text(args.out / "report.md", "\n".join(lines))
    print("\n".join(lines))


def scatter(sets: dict, cut: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    for name, (t, e) in sets.items():
        ax.scatter(e, t, s=5, label=name, alpha=0.6)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.axvline(cut, color="grey", lw=1)
    ax.axhline(GOOD, color="grey", lw=1, ls="--")
    ax.set_xlim(0.5, 1.0)
    ax.set_ylim(0.5, 1.0)
    ax.set_xlabel("mask_dice_estimate")
    ax.set_ylabel("true Dice")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
