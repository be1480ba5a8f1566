"""The study lungcls exists for: does masking the CXR to its lungs change what the classifier learns?

For each classifier input -- ``raw``, ``masked-gt`` (masked with the dataset's lung masks),
``masked`` (masked with stage-1 predicted masks), ``masked-cropped`` (predicted masks) -- train
the same classifier with the same budget and seeds, evaluate on the Test split, and report the
reference table (mean +- std over seeds), seed-averaged 95% bootstrap CIs, each mode's paired
difference to ``raw`` (bootstrap CI, McNemar per seed), the share of Grad-CAM saliency inside the
lungs, and figures. Everything goes to ``results/<name>/`` (report.md, PNGs, results.json).

    python benchmarks/masked_vs_raw.py ../shared/data/ieee8023-radiologist100 ../shared/data/ieee8023-v7labs427 \\
        ../shared/data/nih-cxr8 ../shared/data/covid19-radiography --quick
    python benchmarks/masked_vs_raw.py "COVID-QU-Ex Dataset" --seeds 3 --epochs 80 --device cuda

Images without a dataset mask fall back to raw in ``masked-gt`` (counted in the report).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine  # noqa: E402

from lungcls.atomic import write_json, write_text  # noqa: E402
from lungcls.checkpoint import read_json  # noqa: E402
from lungcls.cls.classifier import Classifier  # noqa: E402
from lungcls.cls.compare import mcnemar, paired_bootstrap  # noqa: E402
from lungcls.cls.train import train_classifier  # noqa: E402
from lungcls.config import ClassifierConfig, SegmenterConfig, TrainConfig, to_dict  # noqa: E402
from lungcls.data.training_data import open_training_data  # noqa: E402
from lungcls.pipeline import Pipeline  # noqa: E402
from lungcls.plots import outline_grid, plot_curves  # noqa: E402
from lungcls.seg.evaluate import evaluate_segmenter  # noqa: E402
from lungcls.seg.metrics import mask_scores  # noqa: E402
from lungcls.seg.segmenter import Segmenter  # noqa: E402
from lungcls.seg.train import train_segmenter  # noqa: E402

MODES = {  # study mode -> (classifier input mode, mask source)
    "raw": ("raw", "none"),
    "masked-gt": ("masked", "gt"),
    "masked": ("masked", "predicted"),
    "masked-cropped": ("masked-cropped", "predicted"),
}
METRIC_ROWS = ("precision", "recall", "f1")


def settings(args) -> dict:
    """Model and training settings of the study (full or --quick)."""
    if args.quick:
        seg = SegmenterConfig(encoder_name="resnet18", encoder_depth=3, decoder_channels=[32, 16, 8], image_size=64)
        clf = dict(arch="resnet18", image_size=64)
        seg_train = TrainConfig(
            epochs=args.seg_epochs or 4, batch_size=16, lr=3e-3, warmup_epochs=0.5, device=args.device
        )
        epochs, batch, size = args.epochs or 4, 32, 128
    else:
        seg, clf = SegmenterConfig(), dict(arch="resnet50", image_size=224)
        seg_train = TrainConfig(epochs=args.seg_epochs or 40, batch_size=32, device=args.device)
        epochs, batch, size = args.epochs or 80, 64, 256
    cls_train = dict(
        epochs=epochs, batch_size=batch, lr=1e-3, label_smoothing=0.1, class_weighting=True, device=args.device
    )
    return {"seg": seg, "seg_train": seg_train, "clf": clf, "cls_train": cls_train, "working_size": size}


def aggregate(reports: list[dict]) -> dict:
    """Mean and std over seeds of every entry of the reference table."""

    def stat(values: list[float]) -> dict:
        return {"mean": float(np.mean(values)), "std": float(np.std(values))}

    names = reports[0]["class_names"]
    out = {"per_class": {}, "accuracy": stat([r["accuracy"] for r in reports])}
    for n in names:
        out["per_class"][n] = {
            m: stat([r["per_class"][n][m] for r in reports]) for m in (*METRIC_ROWS, "auroc", "specificity")
        }
        out["per_class"][n]["support"] = reports[0]["per_class"][n]["support"]
    for avg in ("macro_avg", "weighted_avg"):
        out[avg] = {m: stat([r[avg][m] for r in reports]) for m in METRIC_ROWS}
    out["by_source"] = {
        s: stat([r["by_source"][s]["accuracy"] for r in reports]) for s in reports[0].get("by_source", {})
    }
    return out


def saliency_share(segmenter: Segmenter, run: Path, images: np.ndarray, device: str) -> dict:
    """Mean and median share of Grad-CAM inside the (predicted) lungs over the test images."""
    pipe = Pipeline(segmenter, Classifier.load(run, device=device))
    shares = []
    for k in range(0, len(images), 32):
        shares += [e["in_lung_share"] for e in pipe.explain(images[k : k + 32])]
    v = np.array(shares, dtype=float)
    v = v[~np.isnan(v)]
    return {
        "mean": float(v.mean()) if v.size else float("nan"),
        "median": float(np.median(v)) if v.size else float("nan"),
        "n": int(v.size),
    }


def table(name: str, agg: dict, ci: dict) -> str:
    def ms(s: dict) -> str:
        return f"{s['mean']:.3f} ± {s['std']:.3f}"

    lines = [f"### {name}", "", "| | precision | recall | f1-score | support |", "|---|---|---|---|---|"]
    n = sum(v["support"] for v in agg["per_class"].values())
    for cls, v in agg["per_class"].items():
        lines.append(f"| {cls} | {ms(v['precision'])} | {ms(v['recall'])} | {ms(v['f1'])} | {v['support']} |")
    lines.append(f"| accuracy | | | {ms(agg['accuracy'])} | {n} |")
    for avg, label in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        a = agg[avg]
        lines.append(f"| {label} | {ms(a['precision'])} | {ms(a['recall'])} | {ms(a['f1'])} | {n} |")
    lines += ["", f"95% bootstrap CI of the seed mean: accuracy [{ci['accuracy'][0]:.3f}, {ci['accuracy'][1]:.3f}], "
                  f"macro F1 [{ci['macro_f1'][0]:.3f}, {ci['macro_f1'][1]:.3f}]", ""]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="+", type=Path, help="dataset roots, manifests or a packed cache")
    p.add_argument("--name", default=None, help="results/<name>/ (default masked_vs_raw, or masked_vs_raw_quick)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default REPO/results/<name>)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="classifier epochs (default 80, --quick 4)")
    p.add_argument("--seg-epochs", type=int, default=None, help="U-Net epochs (default 40, --quick 4)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--seg-model", type=Path, default=None, help="use this stage-1 run instead of training one")
    p.add_argument("--quick", action="store_true", help="ResNet-18 at 64 px, few epochs, 1 seed: minutes on a CPU")
    p.add_argument("--n-boot", type=int, default=None)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    if args.quick and args.seeds == 3:
        args.seeds = 1
    name = args.name or ("masked_vs_raw_quick" if args.quick else "masked_vs_raw")
    out = args.out or REPO / "results" / name
    out.mkdir(parents=True, exist_ok=True)
    s = settings(args)
    n_boot = args.n_boot or (200 if args.quick else 1000)
    t0 = time.perf_counter()

    cache = open_training_data(args.data, out / "cache", size=s["working_size"])
    seg_run = args.seg_model
    if seg_run is None:
        seg_run = out / "runs" / "segmenter"
        train_segmenter([cache.path], seg_run, s["seg"], s["seg_train"])
    segmenter = Segmenter.load(seg_run, device=args.device)
    seg_eval = evaluate_segmenter(segmenter, cache, cache.indices("Test", with_mask=True))
    test_rows = cache.indices("Test")
    images = np.array(cache.images[test_rows])
    grid_rows = cache.indices("Test", with_mask=True)[:12]
    seg_results = segmenter.segment(torch.from_numpy(np.array(cache.images[grid_rows]))[:, None])
    dices = [mask_scores(torch.from_numpy(r.mask)[None, None], torch.from_numpy(np.array(cache.masks[k]))[None, None])["dice"].item()
             for r, k in zip(seg_results, grid_rows)]  # fmt: skip
    outline_grid(np.array(cache.images[grid_rows]), [r.mask for r in seg_results], [np.array(cache.masks[k]) for k in grid_rows],
                 [f"Dice {d:.3f}" for d in dices], out / "stage1_outlines.png")  # fmt: skip

    reports: dict[str, list[dict]] = {}
    for mode in args.modes:
        input_mode, source = MODES[mode]
        for seed in range(args.seeds):
            run = out / "runs" / f"{mode}-seed{seed}"
            cfg = ClassifierConfig(mode=input_mode, mask_source=source, **s["clf"])
            train = TrainConfig(seed=seed, **s["cls_train"])
            train_classifier([cache.path], run, cfg, train, seg_model=seg_run if source == "predicted" else None)
            reports.setdefault(mode, []).append(read_json(run / "eval_test.json"))
    labels = np.array([im["label"] for im in sorted(reports[args.modes[0]][0]["images"], key=lambda r: r["row"])])
    preds = {
        m: np.array([[im["pred"] for im in sorted(r["images"], key=lambda r: r["row"])] for r in rs])
        for m, rs in reports.items()
    }
    k = len(reports[args.modes[0]][0]["class_names"])
    boot = paired_bootstrap(preds, labels, k, reference="raw", n_boot=n_boot)
    mc = {
        m: [mcnemar(preds[m][i] == labels, preds["raw"][i] == labels) for i in range(args.seeds)]
        for m in preds
        if m != "raw" and "raw" in preds
    }
    agg = {m: aggregate(rs) for m, rs in reports.items()}
    shares = {m: saliency_share(segmenter, out / "runs" / f"{m}-seed0", images, args.device) for m in args.modes}

    # figures: curves (seed 0), confusion matrices (seed 0), test grids titled True [OK] / True [NO -> Predicted]
    histories = {m: json.loads((out / "runs" / f"{m}-seed0" / "history.json").read_text()) for m in args.modes}
    plot_curves(histories, out / "curves.png", "training and validation, seed 0")
    names = reports[args.modes[0]][0]["class_names"]
    pick = np.linspace(0, len(test_rows) - 1, min(12, len(test_rows))).astype(int)
    for m in args.modes:
        shutil.copyfile(out / "runs" / f"{m}-seed0" / "confusion_test.png", out / f"confusion_{m}.png")
        by_row = {im["row"]: im for im in reports[m][0]["images"]}
        titles = []
        for i in pick:
            im = by_row[int(test_rows[i])]
            t, pr = names[im["label"]], names[im["pred"]]
            titles.append(f"{t} [OK]" if t == pr else f"{t} [NO -> {pr}]")
        outline_grid(
            images[pick],
            [None] * len(pick),
            [None] * len(pick),
            titles,
            out / f"test_grid_{m}.png",
            title=f"{m}: test images",
        )

    results = {
        "study": "masked_vs_raw", "data": [str(d) for d in args.data], "manifest_digest": cache.digest(),
        "split_counts": cache.manifest.counts(), "modes": args.modes, "seeds": args.seeds, "quick": args.quick,
        "settings": {"segmenter": to_dict(s["seg"]), "seg_train": to_dict(s["seg_train"]), "classifier": s["clf"],
                     "cls_train": s["cls_train"], "working_size": s["working_size"], "n_boot": n_boot},
        "stage1_test": {"summary": seg_eval["summary"], "by_source": seg_eval["by_source"]},
        "per_mode": agg, "bootstrap": boot, "mcnemar_vs_raw": mc, "gradcam_in_lung_share": shares,
        "empty_masks": {m: [r["empty_masks"] for r in rs] for m, rs in reports.items()},
        "per_seed": {m: [{"accuracy": r["accuracy"], "macro_f1": r["macro_avg"]["f1"]} for r in rs] for m, rs in reports.items()},
        "machine": machine(), "command": " ".join(sys.argv), "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    write_json(out / "results.json", results)
    write_text(out / "report.md", report(results, agg, boot, mc, shares))
    print((out / "report.md").read_text())


def report(results: dict, agg: dict, boot: dict, mc: dict, shares: dict) -> str:
    d = results["stage1_test"]["summary"]["dice"]
    lines = [
        "# Masked vs raw", "",
        f"Data: {', '.join(results['data'])} (manifest {results['manifest_digest'][:12]}); Test split "
        f"{sum(results['split_counts'].get('Test', {}).values())} images; {results['seeds']} seed(s) per mode"
        f"{'; QUICK smoke settings (small models, few epochs): not the full recipe' if results['quick'] else ''}.",
        "Research use only. On data where class and source are confounded, accuracy can come from shortcuts: see the",
        "per-source accuracy and the Grad-CAM share below.", "",
        f"Stage 1 on Test: Dice mean {d['mean']:.4f} (median {d['median']:.4f}, 5th percentile {d['p5']:.4f}, n={d['n']}); "
        "outlines: `stage1_outlines.png`.", "",
        "## Difference to raw (paired bootstrap over test images; McNemar per seed)", "",
        "| mode | accuracy | Δ accuracy [95% CI] | macro F1 | Δ macro F1 [95% CI] | McNemar p (per seed) | Grad-CAM share in lungs (mean) |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for m in agg:
        acc, f1 = agg[m]["accuracy"]["mean"], agg[m]["macro_avg"]["f1"]["mean"]
        dv = boot.get("vs_raw", {}).get(m)
        dacc = (
            f"{dv['accuracy_diff']:+.3f} [{dv['accuracy_diff_ci'][0]:+.3f}, {dv['accuracy_diff_ci'][1]:+.3f}]"
            if dv
            else "—"
        )
        df1 = (
            f"{dv['macro_f1_diff']:+.3f} [{dv['macro_f1_diff_ci'][0]:+.3f}, {dv['macro_f1_diff_ci'][1]:+.3f}]"
            if dv
            else "—"
        )
        pv = ", ".join(f"{x['p_value']:.3g}" for x in mc.get(m, [])) or "—"
        lines.append(f"| {m} | {acc:.3f} | {dacc} | {f1:.3f} | {df1} | {pv} | {shares[m]['mean']:.3f} |")
    lines += ["", "## Accuracy per source set (mean over seeds)", "", "| mode | " + " | ".join(agg[next(iter(agg))]["by_source"]) + " |",
              "|---" * (1 + len(agg[next(iter(agg))]["by_source"])) + "|"]  # fmt: skip
    for m in agg:
        lines.append(f"| {m} | " + " | ".join(f"{v['mean']:.3f}" for v in agg[m]["by_source"].values()) + " |")
    lines += ["", "## Reference tables (mean ± std over seeds)", ""]
    lines += [table(m, agg[m], boot["modes"][m]) for m in agg]
    lines += ["Figures: `curves.png`, `confusion_<mode>.png`, `test_grid_<mode>.png`, `stage1_outlines.png`.",
              f"Machine: {results['machine']['cpu']}, GPU {results['machine']['gpu'] or 'none'}; {results['seconds']:.0f} s.", ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
