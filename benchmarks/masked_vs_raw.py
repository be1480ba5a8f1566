"""The study lungcls exists for: does masking the CXR to its lungs change what the classifier learns?

For each classifier input -- ``raw``, ``masked-gt`` (the dataset's lung masks, only images that have
one), ``masked`` and ``masked-cropped`` (stage-1 masks) -- the same classifier is trained with the same
budget and seeds on one split made once for both stages, selected on Val only, and tested on a held-out
Test split that nothing was tuned on. The report gives, per mode:

- the reference table (per-class precision/recall/F1, accuracy, macro and weighted averages), mean and
  standard deviation over seeds;
- three intervals of the seed-averaged accuracy: the test-set interval (patients resampled, models
  fixed), the between-seed t-interval (training variance), and a two-level bootstrap that holds both;
- the paired difference to ``raw`` on the same test images (paired bootstrap over patients) and exact
  McNemar tests per seed, Holm-corrected over every (mode, seed) test;
- expected calibration error before and after temperature scaling (fitted on Val), reliability diagrams;
- the share of Grad-CAM saliency inside the lungs, over every seed;
- external validation: each ``--hold-out`` source as Test, trained and validated on the other sources;
- a shortcut probe: the same classifier trained to tell the SOURCE SET (not the disease) from raw, masked
  and masked-cropped inputs, beside chance.

Presets (``--preset``): ``quick`` (minutes on a CPU: tiny models at 64 px, 2 seeds), ``covidqu-cpu`` (real
COVID-QU-Ex, about an hour on 2 CPU cores: ResNet-18 at 128 px, 2 seeds, the built-in segmenter, which was
trained on this split's Train/Val by the committed command), ``gpu`` (the default recipes, 3 seeds).

    python benchmarks/masked_vs_raw.py ../shared/data/{ieee8023-radiologist100,ieee8023-v7labs427,nih-cxr8,covid19-radiography} \\
        --preset quick --hold-out covid19-radiography
    python benchmarks/masked_vs_raw.py ../shared/data/covidqu-infseg --preset covidqu-cpu --out benchmarks/results/covidqu_cpu

Everything goes to ``--out`` (default ``results/<preset>/``, git-ignored): report.md, report.html,
results.json, figures and the run folders.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine  # noqa: E402

from lungcls.atomic import write_bytes, write_json, write_text  # noqa: E402
from lungcls.cls.train import train_classifier  # noqa: E402
from lungcls.config import ClassifierConfig, SegmenterConfig, TrainConfig, to_dict  # noqa: E402
from lungcls.data import PackedCache, open_dataset  # noqa: E402
from lungcls.data.manifest import Manifest  # noqa: E402
from lungcls.data.training_data import seen_by, split_and_cache  # noqa: E402
from lungcls.explain import explain  # noqa: E402
from lungcls.plots import confusion_figure, curves_figure, figure_png, reliability_figure  # noqa: E402
from lungcls.recipes import classifier_recipe, segmenter_recipe  # noqa: E402
from lungcls.seg.evaluate import evaluate_segmenter  # noqa: E402
from lungcls.seg.segmenter import Segmenter  # noqa: E402
from lungcls.seg.train import train_segmenter  # noqa: E402
from lungcls.stats import bootstrap_indices, holm, mcnemar, seed_spread, two_level_bootstrap  # noqa: E402

MODES = {"raw": ("raw", "none"), "masked-gt": ("masked", "gt"), "masked": ("masked", "predicted"),
         "masked-cropped": ("masked-cropped", "predicted")}  # fmt: skip
ROWS = ("precision", "recall", "f1")


@dataclasses.dataclass
class Preset:
    seg: tuple[SegmenterConfig, TrainConfig]
    cls: tuple[ClassifierConfig, TrainConfig]
    seeds: int
    working_size: int
    seg_model: str | None = None  # a stage-1 model to reuse instead of training one
    n_boot: int = 1000
    cam_images: int = 64
    test: float = 0.2  # the Test share of the split


def preset(name: str, device: str) -> Preset:
    """The study's settings; each is a recipe of :mod:`lungcls.recipes` with a few fields changed."""
    if name == "quick":
        return Preset(segmenter_recipe("demo", epochs=4, device=device), classifier_recipe("demo", epochs=4, batch_size=32, device=device),
                      seeds=2, working_size=128, n_boot=200, cam_images=32)  # fmt: skip
    if name == "covidqu-cpu":
        from lungcls import builtin

        # test=0.15: the split the built-in segmenter was trained with (scripts/builtin_segmenter.sh), so it never saw Test
        return Preset(segmenter_recipe("cpu", device=device), classifier_recipe("cpu", epochs=8, device=device), seeds=2,
                      working_size=256, seg_model=builtin.DEFAULT if builtin.DEFAULT in builtin.names() else None,
                      test=0.15)  # fmt: skip
    if name == "gpu":
        return Preset(segmenter_recipe("default", device=device), classifier_recipe("default", device=device), seeds=3,
                      working_size=256)  # fmt: skip
    raise SystemExit(f"unknown preset {name!r}; choose quick, covidqu-cpu or gpu")


def make_cache(data: list[Path], out: Path, size: int, test: float = 0.2, seed: int = 0) -> tuple[PackedCache, str]:
    """One split for everything (both stages, every mode and seed), made once: Train/Val/Test by patient and
    duplicate picture; data with Train and Val only has Test carved out of Train."""
    made = split_and_cache(
        open_dataset(data).manifest, out / "cache", size, split="complete", val=0.1, test=test, seed=seed
    )
    return made.cache, made.split


def train_modes(cache_or_data, out: Path, p: Preset, modes: list[str], seg: Segmenter | None, seeds: int,
                hold_out: str | None = None, cache_dir: Path | None = None, classes=None) -> dict[str, list]:  # fmt: skip
    """{mode: [TrainResult per seed]}: the same recipe, budget and seeds for every mode."""
    runs: dict[str, list] = defaultdict(list)
    base_model, base_train = p.cls
    for mode in modes:
        input_mode, source = MODES[mode]
        for seed in range(seeds):
            cfg = dataclasses.replace(base_model, mode=input_mode, mask_source="gt" if source == "gt" else "none")
            train = dataclasses.replace(base_train, seed=seed)
            runs[mode].append(train_classifier(
                cache_or_data, out / f"{mode}-seed{seed}", cfg, train, segmenter=seg if source == "predicted" else None,
                hold_out=hold_out, cache_dir=cache_dir, classes=classes, overwrite=True, progress=False))  # fmt: skip
            print(f"  {mode} seed {seed}: test accuracy {runs[mode][-1].reports['test'].accuracy:.3f}", flush=True)
    return runs


def per_image(report) -> dict[str, dict]:
    """Test images of a report by content hash (the same picture across modes and splits)."""
    return {im["hash"]: im for im in report.images}


def compare(runs: dict[str, list], n_boot: int, reference: str = "raw") -> dict:
    """Every statistic of the study over ``runs`` ({mode: [TrainResult per seed]}), on their Test reports."""
    out = {"modes": {}, "vs_" + reference: {}, "n_boot": n_boot}
    for mode, rs in runs.items():
        reports = [r.reports["test"] for r in rs]
        images = per_image(reports[0])
        keys = sorted(images)
        correct = np.array([[per_image(r)[k]["pred"] == per_image(r)[k]["label"] for k in keys] for r in reports])
        groups = [images[k]["patient"] for k in keys]
        draws, unit = bootstrap_indices(len(keys), n_boot, 0, groups)
        test_ci = (
            [float(np.percentile([correct[:, d].mean() for d in draws], q)) for q in (2.5, 97.5)]
            if draws
            else [math.nan] * 2
        )
        out["modes"][mode] = {
            "table": aggregate(reports), "n_test": len(keys), "seed_accuracies": correct.mean(axis=1).tolist(),
            "accuracy_test_ci": test_ci, "resampled": unit, "between_seeds": seed_spread(correct.mean(axis=1)),
            "accuracy_both_ci": two_level_bootstrap(correct, n_boot=n_boot, groups=groups),
            "ece_before": float(np.mean([r.calibration["ece_before"] for r in reports])),
            "ece_after": float(np.mean([r.calibration["ece_after"] for r in reports])),
            "temperature": [r.calibration["temperature"] for r in reports], "empty_masks": [r.empty_masks for r in reports],
        }  # fmt: skip
    if reference in runs:
        tests = []
        for mode in runs:
            if mode == reference:
                continue
            out["vs_" + reference][mode] = paired(runs[reference], runs[mode], n_boot)
            tests += [(mode, k, t["p_value"]) for k, t in enumerate(out["vs_" + reference][mode]["mcnemar"])]
        for (mode, k, _), adj in zip(tests, holm([t[2] for t in tests])):
            out["vs_" + reference][mode]["mcnemar"][k]["p_holm"] = adj
    return out


def paired(ref_runs: list, runs: list, n_boot: int) -> dict:
    """Paired difference of seed-averaged accuracy on the test images both saw (patients resampled), McNemar per seed."""
    ref = [per_image(r.reports["test"]) for r in ref_runs]
    mine = [per_image(r.reports["test"]) for r in runs]
    keys = sorted(set(ref[0]) & set(mine[0]))
    right = lambda ims: np.array([[im[k]["pred"] == im[k]["label"] for k in keys] for im in ims])  # noqa: E731
    a, b = right(ref), right(mine)
    draws, unit = bootstrap_indices(len(keys), n_boot, 1, [ref[0][k]["patient"] for k in keys])
    diffs = [b[:, d].mean() - a[:, d].mean() for d in draws]
    tests = [mcnemar(b[k], a[k]) for k in range(min(len(a), len(b)))]
    return {"n_images": len(keys), "accuracy_diff": float(b.mean() - a.mean()), "resampled": unit,
            "accuracy_diff_ci": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))] if diffs else [math.nan] * 2,
            "mcnemar": tests}  # fmt: skip


def aggregate(reports: list) -> dict:
    """Mean and std (ddof=1 where there are two or more seeds) of every entry of the reference table."""

    def stat(v: list[float]) -> dict:
        return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else math.nan}

    names = reports[0].class_names
    out = {"accuracy": stat([r.accuracy for r in reports]), "per_class": {}, "by_source": {}}
    for n in names:
        out["per_class"][n] = {m: stat([r.per_class[n][m] for r in reports]) for m in ROWS}
        out["per_class"][n]["support"] = reports[0].per_class[n]["support"]
    for avg in ("macro_avg", "weighted_avg"):
        out[avg] = {m: stat([getattr(r, avg)[m] for r in reports]) for m in ROWS}
    for s in reports[0].by_source:
        out["by_source"][s] = stat([r.by_source[s]["accuracy"] for r in reports])
    return out


def saliency(runs: dict[str, list], seg: Segmenter, cache: PackedCache, n: int) -> dict:
    """Share of Grad-CAM saliency inside the (stage-1) lungs on up to ``n`` test images, every seed of every mode."""
    rows = cache.indices("Test")[:n]
    images = torch.from_numpy(np.asarray(cache.images[rows]))[:, None]
    masks = seg.masks(images).masks
    out = {}
    for mode, rs in runs.items():
        shares = []
        for r in rs:
            clf = r.model
            shares += [e["in_lung_share"] for e in explain(clf, images, masks.to(clf.device))]
        v = np.array(shares, dtype=float)
        v = v[~np.isnan(v)]
        out[mode] = {"mean": float(v.mean()) if v.size else math.nan, "median": float(np.median(v)) if v.size else math.nan,
                     "n": int(v.size), "seeds": len(rs)}  # fmt: skip
    return out


def shortcut_probe(cache: PackedCache, out: Path, p: Preset, seg: Segmenter, seeds: int) -> dict | None:
    """The classifier trained to predict the SOURCE SET from raw / masked / masked-cropped inputs, on the
    study's split; its test accuracy beside chance (the majority source's share, and 1/K)."""
    sources = sorted({s.source for s in cache.samples})
    if len(sources) < 2:
        return None
    probe = Manifest([dataclasses.replace(s, label=s.source, original_label="") for s in cache.samples])
    probe.write_csv(out / "probe.csv")
    runs = train_modes([out / "probe.csv"], out, p, ["raw", "masked", "masked-cropped"], seg, seeds,
                       cache_dir=out / "cache", classes=sources)  # fmt: skip
    test = [s.source for s in cache.samples if s.split == "Test"]
    majority = max(test.count(s) for s in sources) / max(len(test), 1)
    res = {"sources": sources, "chance_majority": majority, "chance_uniform": 1 / len(sources), "modes": {}}
    for mode, rs in runs.items():
        acc = [r.reports["test"].accuracy for r in rs]
        bal = [r.reports["test"].macro_avg["recall"] for r in rs]
        res["modes"][mode] = {"accuracy": seed_spread(acc), "balanced_accuracy": seed_spread(bal)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="+", type=Path, help="dataset roots or manifests")
    ap.add_argument("--preset", default="quick", choices=["quick", "covidqu-cpu", "gpu"])
    ap.add_argument("--quick", action="store_const", const="quick", dest="preset", help="same as --preset quick")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default REPO/results/<preset>)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None, help="classifier epochs (default: the preset's)")
    ap.add_argument("--seg-epochs", type=int, default=None)
    ap.add_argument("--working-size", type=int, default=None, help="cache size in pixels (default: the preset's)")
    ap.add_argument("--image-size", type=int, default=None, help="classifier input size (default: the preset's)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--seg-model", default=None, help="reuse this stage-1 model ('none': train one here)")
    ap.add_argument("--hold-out", nargs="*", default=[], help="sources to hold out as Test, one at a time")
    ap.add_argument("--no-probe", action="store_true", help="skip the shortcut probe")
    ap.add_argument("--n-boot", type=int, default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    p = preset(args.preset, args.device)
    if args.epochs:
        p.cls = (p.cls[0], dataclasses.replace(p.cls[1], epochs=args.epochs))
    if args.seg_epochs:
        p.seg = (p.seg[0], dataclasses.replace(p.seg[1], epochs=args.seg_epochs))
    if args.image_size:
        p.cls = (dataclasses.replace(p.cls[0], image_size=args.image_size), p.cls[1])
    p.working_size = args.working_size or p.working_size
    seeds, n_boot = args.seeds or p.seeds, args.n_boot or p.n_boot
    seg_spec = None if args.seg_model == "none" else (args.seg_model or p.seg_model)
    out = args.out or REPO / "results" / args.preset
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cache, split_what = make_cache(args.data, out, p.working_size, p.test)
    print(f"split: {split_what}", flush=True)

    if seg_spec:
        seg = Segmenter.load(seg_spec, device=args.device)
    else:
        seg = train_segmenter([cache.path], out / "segmenter", *p.seg, overwrite=True, progress=False).model
    leaked = {s: len(seen_by(cache, cache.indices(s), seg.seen_images)) for s in ("Val", "Test")}
    stage1 = {s: evaluate_segmenter(seg, cache, cache.indices(s.capitalize(), with_mask=True), s, progress=False)
              for s in ("val", "test")}  # fmt: skip

    print("main comparison", flush=True)
    runs = train_modes([cache.path], out / "runs", p, args.modes, seg, seeds)
    main_stats = compare(runs, n_boot)
    main_stats["gradcam_in_lung_share"] = saliency(runs, seg, cache, p.cam_images)
    external = {}
    for src in args.hold_out:
        print(f"external validation: {src} held out", flush=True)
        loso = train_modes([cache.path], out / f"holdout-{src}", p, [m for m in ("raw", "masked", "masked-cropped") if m in args.modes],
                           seg, seeds, hold_out=src, cache_dir=out / f"holdout-{src}" / "cache")  # fmt: skip
        external[src] = compare(loso, n_boot)
    probe = None if args.no_probe else shortcut_probe(cache, out / "probe", p, seg, 1)

    figures(out, runs, stage1)
    results = {
        "study": "masked_vs_raw", "preset": args.preset, "data": [str(d) for d in args.data], "split": split_what,
        "split_counts": cache.manifest.counts(), "manifest_digest": cache.digest(), "seeds": seeds, "n_boot": n_boot,
        "settings": {"segmenter": seg.info.get("source"), "seg_recipe": [to_dict(c) for c in p.seg],
                     "cls_recipe": [to_dict(c) for c in p.cls], "working_size": p.working_size},
        "stage1_saw": leaked,
        "stage1": {k: {"summary": v.summary, "by_source": v.by_source} for k, v in stage1.items()},
        "main": main_stats, "external": external, "shortcut_probe": probe,
        "machine": machine(), "command": " ".join(sys.argv), "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    write_json(out / "results.json", results)
    write_text(out / "report.md", report(results))
    from lungcls.html_report import write_html_report

    write_html_report(out, out / "report.html", title=f"lungcls masked vs raw ({args.preset})")
    print((out / "report.md").read_text())


def figures(out: Path, runs: dict[str, list], stage1: dict) -> None:
    """Curves, confusion matrices and reliability diagrams of seed 0 per mode; stage-1 outlines on Test."""
    write_bytes(
        out / "curves.png", figure_png(curves_figure({m: rs[0].fit.history for m, rs in runs.items()}, "seed 0"))
    )
    for m, rs in runs.items():
        t = rs[0].reports["test"]
        write_bytes(
            out / f"confusion_{m}.png", figure_png(confusion_figure(t, f"{m}, seed 0: Test accuracy {t.accuracy:.3f}"))
        )
        if t.calibration:
            write_bytes(
                out / f"reliability_{m}.png", figure_png(reliability_figure(t.calibration, f"{m}, seed 0, Test"))
            )
    if stage1["test"].outlines_png:
        write_bytes(out / "outlines_test.png", stage1["test"].outlines_png)


def fmt_ci(ci: list[float], signed: bool = False) -> str:
    """An interval as text; accuracies cannot leave [0, 1], so an unsigned one is clipped to it."""
    f = "{:+.3f}" if signed else "{:.3f}"
    ci = ci if signed else [min(1.0, max(0.0, v)) if not math.isnan(v) else v for v in ci]
    return "[" + ", ".join(f.format(v) if not math.isnan(v) else "n/a" for v in ci) + "]"


def mode_table(stats: dict, title: str) -> list[str]:
    lines = [f"### {title}", "", "| mode | test images | accuracy (mean of seeds) | test-set 95% CI | between seeds: std, t-CI | both | "
             "Δ vs raw [95% CI] | McNemar p per seed (Holm) | ECE before → after |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for mode, s in stats["modes"].items():
        v = stats.get("vs_raw", {}).get(mode)
        delta = f"{v['accuracy_diff']:+.3f} {fmt_ci(v['accuracy_diff_ci'], True)} (n={v['n_images']})" if v else "—"
        tests = ", ".join(f"{t['p_value']:.3g} ({t['p_holm']:.3g})" for t in v["mcnemar"]) if v else "—"
        b = s["between_seeds"]
        lines.append(f"| {mode} | {s['n_test']} | {s['table']['accuracy']['mean']:.3f} | {fmt_ci(s['accuracy_test_ci'])} "
                     f"({s['resampled']}s) | {b['std']:.3f}, {fmt_ci(b['ci'])} | {fmt_ci(s['accuracy_both_ci'])} | {delta} | "
                     f"{tests} | {s['ece_before']:.3f} → {s['ece_after']:.3f} |")  # fmt: skip
    return lines + [""]


def reference_table(mode: str, t: dict) -> list[str]:
    ms = lambda s: f"{s['mean']:.2f} ± {s['std']:.2f}" if not math.isnan(s["std"]) else f"{s['mean']:.2f}"  # noqa: E731
    n = sum(v["support"] for v in t["per_class"].values())
    lines = [f"#### {mode}", "", "| | precision | recall | f1-score | support |", "|---|---|---|---|---|"]
    lines += [
        f"| {c} | {ms(v['precision'])} | {ms(v['recall'])} | {ms(v['f1'])} | {v['support']} |"
        for c, v in t["per_class"].items()
    ]
    lines.append(f"| accuracy | | | {ms(t['accuracy'])} | {n} |")
    for key, label in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        a = t[key]
        lines.append(f"| {label} | {ms(a['precision'])} | {ms(a['recall'])} | {ms(a['f1'])} | {n} |")
    if t["by_source"]:
        lines += ["", "Accuracy per source: " + ", ".join(f"{s or '?'} {ms(v)}" for s, v in t["by_source"].items())]
    return lines + [""]


def report(r: dict) -> str:
    lines = ["# Masked vs raw", "", f"Data: {', '.join(Path(d).name for d in r['data'])}; {r['split']}.",
             f"Preset `{r['preset']}`, {r['seeds']} seed(s) per mode, {r['n_boot']} bootstrap resamples; "
             f"{r['seconds'] / 60:.0f} min on {r['machine']['cpu']} (GPU: {r['machine']['gpu'] or 'none'}).", "",
             "Research use only. Read the last section before reading anything into these numbers.", ""]  # fmt: skip
    s1 = r["stage1"]
    src = r["settings"]["segmenter"] or {}
    named = f"built-in `{src.get('name')}`" if src.get("origin") == "builtin" else "trained in this study"
    lines += ["## Stage 1 (lung segmentation)", "",
              f"Segmenter: {named} (weights sha256 `{str(src.get('sha256'))[:16]}`). It was trained or validated on {r['stage1_saw']['Val']} of the "
              f"classifier's Val images and {r['stage1_saw']['Test']} of its Test images (Val images it saw make model "
              "selection slightly optimistic; Test images it saw would make Test scores optimistic).", "",
              "| split | set | images | Dice mean | Dice p5 | IoU mean | HD95 (px) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for split, v in s1.items():
        for name, s in {**v["by_source"], "all": v["summary"]}.items():
            if s["dice"]["n"]:
                lines.append(f"| {split} | {name} | {s['dice']['n']} | {s['dice']['mean']:.4f} | {s['dice']['p5']:.4f} | "
                             f"{s['iou']['mean']:.4f} | {s['hd95']['mean']:.2f} |")  # fmt: skip
    lines += ["", "## Masked vs raw on the held-out Test split", ""]
    lines += mode_table(r["main"], "All modes, paired against raw")
    g = r["main"]["gradcam_in_lung_share"]
    lines += ["Grad-CAM share inside the lungs (test images, every seed): " + ", ".join(
        f"{m} {v['mean']:.2f} (median {v['median']:.2f}, n={v['n']})" for m, v in g.items()), ""]  # fmt: skip
    lines += ["### Reference tables (mean ± std over seeds)", ""]
    for mode, s in r["main"]["modes"].items():
        lines += reference_table(mode, s["table"])
    for src, stats in r["external"].items():
        lines += [f"## External validation: `{src}` held out as Test", "",
                  "Trained and validated on the other sources; tested on this one, per class where the class exists in training.", ""]  # fmt: skip
        lines += mode_table(stats, f"{src} held out")
        for mode, s in stats["modes"].items():
            lines += reference_table(mode, s["table"])
    p = r["shortcut_probe"]
    if p:
        lines += ["## Shortcut probe: can the input tell the source set?", "",
                  f"The same classifier trained to predict the source set ({', '.join(p['sources'])}) instead of the disease. "
                  f"Chance: {p['chance_majority']:.2f} (always the largest source), {p['chance_uniform']:.2f} (uniform).", "",
                  "| input | source accuracy | balanced accuracy |", "|---|---|---|"]  # fmt: skip
        lines += [
            f"| {m} | {v['accuracy']['mean']:.3f} | {v['balanced_accuracy']['mean']:.3f} |"
            for m, v in p["modes"].items()
        ]
        lines.append("")
    lines += ["## What these numbers can and cannot support", "",
              "- They compare inputs (raw, masked, cropped) for one recipe on these data sets and this split. They are not "
              "diagnostic performance: nothing here was validated on a clinical population, and the labels of public CXR "
              "sets are noisy.",
              "- The test-set interval holds the models fixed; the between-seed interval holds the test set fixed; only the "
              "two-level interval holds both, and it is the one to quote. With 2-3 seeds the between-seed interval is wide.",
              "- A paired difference whose interval contains 0, or a Holm-adjusted McNemar p above 0.05, does not show that "
              "masking helps or hurts on these data.",
              "- Where class and source are confounded (the shared sets), high accuracy can come from recognising the source. "
              "The external (held-out source) tables and the shortcut probe measure that: a probe far above chance on masked "
              "inputs means masking did not remove the source signal.",
              "- Calibration (ECE) after temperature scaling is measured on Test with a temperature fitted on Val; it holds "
              "for data like Val, not for another hospital.", ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
