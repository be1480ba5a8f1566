"""The study lungcls exists for: does masking the CXR to its lungs change what the classifier learns?

For each classifier input -- ``raw``, ``masked-gt`` (the dataset's lung masks, only images that have
one), ``masked`` and ``masked-cropped`` (stage-1 masks) -- the same classifier is trained with the same
budget and seeds on one split made once for both stages, selected on Val only, and tested on a held-out
Test split that nothing was tuned on. The report gives, per mode:

- the reference table (per-class precision/recall/F1, accuracy, macro and weighted averages), mean and
  standard deviation over seeds;
- the **primary endpoint**, stated before the run (:data:`PRIMARY`, :data:`MARGIN`): masked - raw balanced accuracy on
  external data (``--external``: sets never trained on, pictures they share with the training data removed by the
  duplicate finder), non-inferiority by the two-level paired bootstrap over training seeds and test clusters, Holm
  over the masked-mode contrasts only; everything else is secondary;
- every bootstrap draws clusters, not images: a patient, or a group of duplicated pictures (exact or near), so
  one picture twice in Test counts once;
- three intervals of the seed-averaged accuracy, each labelled by what it resamples: the Test clusters with the
  models fixed, the seeds with the test set fixed (t-interval), and both;
- per contrast against ``raw`` on the images both saw: the difference in balanced accuracy and in accuracy with the
  two-level interval, the non-inferiority p-value, the smallest difference the Test set can detect (80% power), and
  exact McNemar tests per pair of trained networks (secondary, unadjusted);
- calibration per mode with cluster intervals: ECE, class-wise ECE, Brier score, NLL;
- expected calibration error before and after temperature scaling (fitted on Val), reliability diagrams;
- the share of Grad-CAM saliency inside the lungs, over every seed;
- external validation: each ``--hold-out`` source as Test, trained and validated on the other sources;
- shortcut controls (:mod:`shortcut_probes`): the class told from the whole picture, the lungs only, everything
  but the lungs, and the mask's outline alone; the source set within each class; each with seeds and intervals;
- Grad-CAM on a random class-stratified Test sample at two layers: in-lung share, that share over the lung
  fraction, and the shares on the lung edge and on the black background.

Presets (``--preset``): ``quick`` (minutes on a CPU: tiny models at 64 px, 2 seeds), ``covidqu-cpu`` (real
COVID-QU-Ex on 2 CPU cores: ResNet-18 at 128 px, 6 epochs, 3 seeds, the built-in segmenter, which was trained on
this split's Train/Val by the committed command), ``gpu`` (the default recipes, ResNet-50, 5 seeds).

    python benchmarks/masked_vs_raw.py ../shared/data/{ieee8023-radiologist100,ieee8023-v7labs427,nih-cxr8,covid19-radiography} \\
        --preset quick --hold-out covid19-radiography
    python benchmarks/masked_vs_raw.py ../shared/data --preset covidqu-cpu --out benchmarks/results/masked_vs_raw_covidqu_cpu
    (the same as ``../shared/data/covidqu-infseg --external ../shared/data/{nih-cxr8,covid19-radiography,...}``)

Everything goes to ``--out`` (default ``results/<preset>/``, git-ignored): report.md, report.html,
results.json, figures and the run folders.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
import types
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shortcut_probes  # noqa: E402
from infection_detection import compare_detectors, detector_lines  # noqa: E402
from study_decisions import decision_lines, study_decisions  # noqa: E402
from common import REPO, machine  # noqa: E402

from lungcls.atomic import write_bytes, write_json, write_text  # noqa: E402
from lungcls.cls.train import train_classifier  # noqa: E402
from lungcls.config import ClassifierConfig, SegmenterConfig, TrainConfig, to_dict  # noqa: E402
from lungcls.data import PackedCache, open_dataset  # noqa: E402
from lungcls.data.manifest import Manifest  # noqa: E402
from lungcls.cls.evaluate import evaluate_classifier  # noqa: E402
from lungcls.data.training_data import open_eval_data, seen_by, split_and_cache  # noqa: E402
from lungcls.explain import explain  # noqa: E402
from lungcls.plots import confusion_figure, curves_figure, figure_png, reliability_figure  # noqa: E402
from lungcls.recipes import classifier_recipe, segmenter_recipe  # noqa: E402
from lungcls.seg.evaluate import evaluate_segmenter  # noqa: E402
from lungcls.seg.segmenter import Segmenter  # noqa: E402
from lungcls.seg.train import train_segmenter  # noqa: E402
from lungcls.data.duplicates import crop_aligned_pairs, duplicate_groups  # noqa: E402
from lungcls.data.split import group_ids  # noqa: E402
from lungcls.stats import (  # noqa: E402
    balanced_accuracy,
    calibration_scores,
    cluster_draws,
    cluster_interval,
    detectable_difference,
    hierarchical_difference,
    holm,
    mcnemar,
    noninferiority_p,
    seed_spread,
    two_level_bootstrap,
)

#: the primary endpoint, stated before any run: masked - raw in balanced accuracy on external data (sources the
#: classifier never trained on); a masked mode is non-inferior when its difference is above -MARGIN, tested by the
#: two-level bootstrap over seeds and test clusters, Holm over the masked-mode contrasts (3 at most) only.
PRIMARY = "masked - raw difference in balanced accuracy on external data (sources never trained on)"
MARGIN = 0.05

#: the sets kept external when ``covidqu-cpu`` is given the folder of every set (ieee8023-originals is left out: it
#: holds the same pictures as the two ieee8023 mask sets, before their crop)
SHARED_SETS = ("nih-cxr8", "covid19-radiography", "ieee8023-radiologist100", "ieee8023-v7labs427")
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
    #: given the folder that holds every set (``../shared/data``), the set trained on and the sets kept external
    train_on: str | None = None
    external: tuple[str, ...] = ()


def preset(name: str, device: str) -> Preset:
    """The study's settings; each is a recipe of :mod:`lungcls.recipes` with a few fields changed."""
    if name == "quick":
        return Preset(segmenter_recipe("demo", epochs=4, device=device), classifier_recipe("demo", epochs=4, batch_size=32, device=device),
                      seeds=2, working_size=128, n_boot=200, cam_images=32)  # fmt: skip
    if name == "covidqu-cpu":
        from lungcls import builtin

        # test=0.15: the split the built-in segmenter was trained with (scripts/builtin_segmenter.sh), so it never saw Test
        return Preset(segmenter_recipe("cpu", device=device), classifier_recipe("cpu", epochs=6, device=device), seeds=3,
                      working_size=256, seg_model=builtin.DEFAULT if builtin.DEFAULT in builtin.names() else None,
                      test=0.15, train_on="covidqu-infseg", external=SHARED_SETS)  # fmt: skip
    if name == "gpu":
        return Preset(segmenter_recipe("default", device=device), classifier_recipe("default", device=device), seeds=5,
                      working_size=256)  # fmt: skip
    raise SystemExit(f"unknown preset {name!r}; choose quick, covidqu-cpu or gpu")


def expand_root(data: list[Path], external: list[Path], p: Preset) -> tuple[list[Path], list[Path]]:
    """One folder holding ``p.train_on`` (the folder of every set): train on that set, and keep the preset's
    external sets (unless ``--external`` named others) as the external data; anything else is returned as given."""
    if len(data) != 1 or not p.train_on or not (data[0] / p.train_on).is_dir():
        return data, external
    root = data[0]
    return [root / p.train_on], external or [root / s for s in p.external if (root / s).is_dir()]


def make_cache(
    data: list[Path], out: Path, size: int, test: float = 0.2, seed: int = 0, pinned: frozenset[str] = frozenset()
) -> tuple[PackedCache, str, list[tuple[str, str]]]:
    """One split for everything (both stages, every mode and seed), made once: Train/Val/Test by patient and
    duplicate picture, crop-aligned copies included (searched first on the images as they are); data with Train
    and Val only has Test carved out of Train; ``pinned`` (content hashes: the images a reused segmenter saw) stay in
    Train, so no Test image was seen by stage 1. Returns the cache, what split was made, and the crop-aligned pairs
    (content hashes)."""
    manifest = open_dataset(data).manifest
    whole = split_and_cache(manifest, out / "cache-unsplit", size, split="none", progress=False).cache
    every = np.arange(len(whole))
    row_of = {s.image: k for k, s in enumerate(manifest)}
    pairs = crop_aligned_pairs(np.asarray(whole.images), every, every)
    also = [[row_of[whole.samples[i].image], row_of[whole.samples[j].image]] for i, j in pairs]
    print(f"crop-aligned copies: {len(pairs)} pairs, kept on one side of the split and resampled together", flush=True)
    made = split_and_cache(manifest, out / "cache", size, split="complete", val=0.1, test=test, seed=seed, also=also,
                           pinned=pinned)  # fmt: skip
    return made.cache, made.split, [(whole.hashes[i], whole.hashes[j]) for i, j in pairs]


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


def clusters_of(cache: PackedCache, cropped: list[tuple[str, str]] = ()) -> dict[str, str]:
    """A cluster per picture (content hash): pictures share one when they share a patient or are the same picture
    (exact or near duplicates, :mod:`lungcls.data.duplicates`, and the crop-aligned pairs ``cropped``); the
    bootstrap draws clusters whole."""
    row = {h: k for k, h in enumerate(cache.hashes)}
    groups = duplicate_groups(cache.hashes, np.asarray(cache.thumbs))
    groups += [[row[a], row[b]] for a, b in cropped if a in row and b in row]
    ids = group_ids(cache.manifest, groups)
    return {h: f"{cache.digest()[:8]}/{g}" for h, g in zip(cache.hashes, ids)}


def external_cache(train: PackedCache, data: list[Path], out: Path, size: int) -> tuple[PackedCache, int]:
    """``data`` (pooled) cached for evaluation without every picture it shares with ``train`` (exact or near
    duplicates, found by the duplicate finder); returns the cache and how many images were removed."""
    every = open_eval_data(data, size, out / "all", progress=False)
    groups = duplicate_groups(list(train.hashes) + list(every.hashes),
                              np.concatenate([np.asarray(train.thumbs), np.asarray(every.thumbs)]))  # fmt: skip
    n = len(train)
    shared = {i - n for g in groups if min(g) < n for i in g if i >= n}
    images = np.concatenate([np.asarray(train.images), np.asarray(every.images)])
    cropped = {j - n for _, j in crop_aligned_pairs(images, np.arange(n), np.arange(n, n + len(every)))}
    print(f"external data: {len(shared)} pictures shared with the training data found by the plain search, "
          f"{len(cropped - shared)} more crop-aligned", flush=True)  # fmt: skip
    shared |= cropped
    kept = Manifest([dataclasses.replace(s, split="Test") for i, s in enumerate(every.samples) if i not in shared])
    kept.write_csv(out / "kept.csv")
    return open_eval_data([out / "kept.csv"], size, out / "kept", progress=False), len(shared)


def evaluate_externally(runs: dict[str, list], cache: PackedCache, seg: Segmenter) -> dict[str, list]:
    """Each trained run evaluated on an external cache: {mode: [an object with ``reports["test"]`` per seed]}."""
    out: dict[str, list] = {}
    for mode, rs in runs.items():
        out[mode] = [types.SimpleNamespace(reports={"test": evaluate_classifier(
            r.model, cache, None, seg if MODES[mode][1] == "predicted" else None, progress=False)}) for r in rs]  # fmt: skip
    return out


def per_image(report) -> dict[str, dict]:
    """Test images of a report by content hash (the same picture across modes and splits)."""
    return {im["hash"]: im for im in report.images}


def compare(
    runs: dict[str, list], n_boot: int, clusters: dict[str, str], split: str = "test", reference: str = "raw"
) -> dict:
    """Every statistic of the study over ``runs`` ({mode: [TrainResult per seed]}) on their ``split`` reports.

    ``clusters``: a cluster per picture (:func:`clusters_of`): the unit every bootstrap draws."""
    out = {"modes": {}, "vs_" + reference: {}, "n_boot": n_boot, "margin": MARGIN}
    for mode, rs in runs.items():
        reports = [r.reports[split] for r in rs]
        a = test_arrays(reports, clusters)
        keys, cl, labels, preds, probs = a["_keys"], a["_clusters"], a["_labels"], a["_preds"], a["probs"]
        correct = preds == labels
        seed_mean = lambda idx: float(correct[:, idx].mean())  # noqa: E731
        per_seed = [calibration_scores(p, labels) for p in probs]
        calib = {m: float(np.mean([c[m] for c in per_seed])) for m in per_seed[0]}
        calib_ci = calibration_intervals(probs, labels, cl, min(n_boot, 300))
        out["modes"][mode] = {
            "table": aggregate(reports), "n_test": len(keys), "clusters": len(set(cl)),
            "seed_accuracies": correct.mean(axis=1).tolist(),
            "balanced_accuracy": seed_spread([balanced_accuracy(p, labels) for p in preds]),
            "accuracy_test_ci": cluster_interval(seed_mean, cl, n_boot), "between_seeds": seed_spread(correct.mean(axis=1)),
            "accuracy_both_ci": two_level_bootstrap(correct, n_boot=n_boot, groups=cl),
            "calibration": calib, "calibration_ci": calib_ci,
            "ece_before": float(np.mean([r.calibration["ece_before"] for r in reports])),
            "ece_after": float(np.mean([r.calibration["ece_after"] for r in reports])),
            "temperature": [r.calibration["temperature"] for r in reports], "empty_masks": [r.empty_masks for r in reports],
        }  # fmt: skip
        out["modes"][mode].update({k: v for k, v in a.items() if k.startswith("_")})
    if reference in runs:
        contrasts = [m for m in runs if m != reference]
        for mode in contrasts:
            out["vs_" + reference][mode] = paired(out["modes"][reference], out["modes"][mode], n_boot)
        adjusted = holm([out["vs_" + reference][m]["noninferiority_p"] for m in contrasts])
        for mode, adj in zip(contrasts, adjusted):
            out["vs_" + reference][mode]["noninferiority_p_holm"] = adj
    for m in out["modes"].values():
        for k in ("_keys", "_preds", "_labels", "_clusters"):
            m.pop(k)
    return out


def test_arrays(reports: list, clusters: dict[str, str]) -> dict:
    """One mode's per-image results over its seeds, in one order (by content hash): ``_keys``, ``_labels`` (N,),
    ``_preds`` (S, N), ``_clusters`` (what :func:`paired` reads), ``probs`` (S, N, K) and ``source`` (N,)."""
    seeds = [per_image(r) for r in reports]  # each report indexed once
    keys = sorted(seeds[0])
    first = seeds[0]
    return {"_keys": keys, "_labels": np.array([first[k]["label"] for k in keys]),
            "_preds": np.array([[im[k]["pred"] for k in keys] for im in seeds]),
            "_clusters": [clusters.get(k, k) for k in keys],
            "probs": np.array([[im[k]["probs"] for k in keys] for im in seeds]),
            "source": np.array([first[k]["source"] for k in keys])}  # fmt: skip


def by_source(runs: dict[str, list], n_boot: int, clusters: dict[str, str], split: str = "test") -> dict:
    """Per source set of the evaluated images (secondary, unadjusted): each mode's accuracy and balanced accuracy,
    and each masked mode's contrast to raw on that source's images (:func:`paired`)."""
    arrays = {mode: test_arrays([r.reports[split] for r in rs], clusters) for mode, rs in runs.items()}
    out = {}
    for source in sorted(set(arrays.get("raw", {}).get("source", []))):
        sub = {}
        for mode, a in arrays.items():
            keep = np.flatnonzero(a["source"] == source)
            sub[mode] = {"_keys": [a["_keys"][i] for i in keep], "_labels": a["_labels"][keep],
                         "_preds": a["_preds"][:, keep], "_clusters": [a["_clusters"][i] for i in keep]}  # fmt: skip
        out[source] = {
            "n_images": int(len(sub["raw"]["_keys"])),
            "accuracy": {m: float((v["_preds"] == v["_labels"]).mean()) for m, v in sub.items() if len(v["_keys"])},
            "balanced_accuracy": {m: float(np.mean([balanced_accuracy(p, v["_labels"]) for p in v["_preds"]]))
                                  for m, v in sub.items() if len(v["_keys"])},
            "vs_raw": {m: paired(sub["raw"], v, n_boot) for m, v in sub.items() if m != "raw" and len(v["_keys"])},
        }  # fmt: skip
    return out


def calibration_intervals(probs: np.ndarray, labels: np.ndarray, clusters: list[str], n_boot: int) -> dict:
    """95% cluster-bootstrap intervals of the seed-averaged calibration scores (one pass over the draws for all four).

    Bias-corrected percentile intervals: binned ECE on a resample is biased upward (fewer distinct images per bin),
    so plain percentiles can lie wholly above the full-sample value ``t``; each interval is shifted down by the
    bootstrap's estimate of that bias (mean of the resamples - ``t``). Scores cannot be negative: bounds stop at 0."""
    values = defaultdict(list)
    for idx in cluster_draws(clusters, n_boot, np.random.default_rng(0)):
        per_seed = [calibration_scores(p[idx], labels[idx]) for p in probs]
        for m in per_seed[0]:
            values[m].append(float(np.mean([s[m] for s in per_seed])))
    full = [calibration_scores(p, labels) for p in probs]
    point = {m: float(np.mean([s[m] for s in full])) for m in values}
    shifted = lambda m, q: max(0.0, float(np.percentile(values[m], q) - (np.mean(values[m]) - point[m])))  # noqa: E731
    return {m: [shifted(m, 2.5), shifted(m, 97.5)] for m in values}


def _accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(pred == labels))


def paired(ref: dict, mine: dict, n_boot: int) -> dict:
    """One mode against the reference on the same test images: the difference of seed-averaged balanced accuracy (and
    accuracy) with the two-level paired bootstrap (seeds and test clusters resampled), the non-inferiority p-value
    for the margin, the detectable difference (power), and McNemar per pair of trained networks (secondary)."""
    shared = sorted(set(ref["_keys"]) & set(mine["_keys"]))  # masked-gt is tested on the images with a mask only
    at_ref, at_mine = ({k: i for i, k in enumerate(m["_keys"])} for m in (ref, mine))
    ia, ib = [at_ref[k] for k in shared], [at_mine[k] for k in shared]
    labels, cl = ref["_labels"][ia], [ref["_clusters"][i] for i in ia]
    a, b = ref["_preds"][:, ia], mine["_preds"][:, ib]
    bal = hierarchical_difference(a, b, labels, cl, n_boot=n_boot)
    acc = hierarchical_difference(a, b, labels, cl, metric=_accuracy, n_boot=n_boot, seed=1)
    right_a, right_b = a == labels, b == labels
    discordance = float(np.mean([np.mean(right_a[i % len(a)] != right_b[i]) for i in range(len(b))]))
    return {"n_images": int(len(labels)), "clusters": bal["clusters"], "seeds": bal["seeds"],
            "balanced_accuracy_diff": bal["difference"], "balanced_accuracy_diff_ci": bal["ci95"],
            "accuracy_diff": acc["difference"], "accuracy_diff_ci": acc["ci95"],
            "noninferiority_p": noninferiority_p(bal["draws"], MARGIN),
            "discordance": discordance, "detectable_difference": detectable_difference(len(labels), discordance),
            "mcnemar": [mcnemar(right_b[k], right_a[k]) for k in range(min(len(a), len(b)))]}  # fmt: skip


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


def map_shares(cam: np.ndarray, lung: np.ndarray, x: np.ndarray) -> dict[str, float] | None:
    """Where one saliency map (H, W) >= 0 lies: inside the ``lung`` mask (and that share divided by the lung's share of
    the picture: 1.0 = no preference), on the lung's edge (a band of 2% of the side on either side of the border),
    and on the black background (input ``x`` exactly 0 outside the lungs). None for an all-zero map."""
    import cv2

    total = float(cam.sum())
    if total <= 0:
        return None
    lung = (lung > 0).astype(np.uint8)
    band = max(1, round(0.02 * lung.shape[0]))
    kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    edge = cv2.dilate(lung, kernel) != cv2.erode(lung, kernel)
    inside = float(cam[lung > 0].sum()) / total
    return {"in_lung": inside, "in_lung_over_fraction": inside / max(float(lung.mean()), 1e-6),
            "edge": float(cam[edge].sum()) / total, "background": float(cam[(x == 0) & (lung == 0)].sum()) / total}  # fmt: skip


def saliency(runs: dict[str, list], seg: Segmenter, cache: PackedCache, n: int) -> dict:
    """Where Grad-CAM looks, measured fairly: on a random class-stratified sample of about ``n`` Test images (seeded),
    every seed of every mode, at the last block and at the finer ``layer3``. Per map: the share inside the lungs, that
    share divided by the lung's share of the input (1.0 = no preference), the share on the lung's edge (a band of
    4% of the input's side across the mask's border) and on the black background masking leaves (input exactly 0
    outside the lungs)."""
    test = cache.indices("Test")
    labels = cache.labels_for(cache.class_names)[test]
    rng = np.random.default_rng(0)
    per_class = max(1, n // max(1, len(np.unique(labels))))
    rows = np.sort(np.concatenate([rng.permutation(test[labels == c])[:per_class] for c in np.unique(labels)]))
    images = torch.from_numpy(np.asarray(cache.images[rows]))[:, None]
    masks = seg.masks(images).masks
    out = {}
    for mode, rs in runs.items():
        for layer in (None, "layer3"):
            values: dict[str, list[float]] = defaultdict(list)
            for r in rs:
                for e in explain(r.model, images, masks.to(r.model.device), layer=layer):
                    shares = map_shares(e["cam"], e["lung"], e["input"]) if e["lung"] is not None else None
                    for k, v in (shares or {}).items():
                        values[k].append(v)
            out[f"{mode}@{layer or 'last block'}"] = {
                k: float(np.mean(v)) for k, v in values.items()} | {"n": len(values["in_lung"]), "seeds": len(rs)}  # fmt: skip
    return out


def probes(cache: PackedCache, seg: Segmenter, clusters: dict[str, str], seeds: int, n_boot: int) -> dict:
    """The shortcut controls (:mod:`shortcut_probes`) on the study's split: the class from the whole picture, the
    lungs only, everything but the lungs, and the mask's outline alone (stage-1 masks, as the masked modes see
    them); and the source set within each class that has two or more sources."""
    masks = seg.cache_masks(cache, progress=False)
    names = cache.class_names
    labels = cache.labels_for(names)
    train, test = cache.indices("Train"), cache.indices("Test")
    cl = [clusters.get(h, h) for h in cache.hashes]
    sources = np.array([s.source for s in cache.samples])
    n = max(seeds, 3)
    return {"seeds": n, "class": shortcut_probes.class_probes(cache.images, masks, labels, train, test, cl, len(names), n, n_boot),
            "source": shortcut_probes.source_probes(cache.images, masks, labels, sources, train, test, cl, names, n, n_boot)}  # fmt: skip


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
    ap.add_argument("--external", nargs="*", type=Path, default=[],
                    help="data sets never trained on (each evaluated after removing the pictures it shares with the "
                         "training data): the primary endpoint")  # fmt: skip
    ap.add_argument("--no-probe", action="store_true", help="skip the shortcut probe")
    ap.add_argument("--infection", default="auto",
                    help="infection segmenter for COVID-19 from infection beside the classifier ('auto': the built-in "
                         "one when installed; 'none': skip)")  # fmt: skip
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite report.md/html from --out's results.json (adding COVID-19 from infection if missing)")
    ap.add_argument("--n-boot", type=int, default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    p = preset(args.preset, args.device)
    args.data, args.external = expand_root(args.data, args.external, p)
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
    if args.report_only:
        return rewrite_report(out, args)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    seen = frozenset(Segmenter.load(seg_spec, device=args.device).seen_images) if seg_spec else frozenset()
    cache, split_what, cropped = make_cache(args.data, out, p.working_size, p.test, pinned=seen)
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
    clusters = clusters_of(cache, cropped)
    main_stats = compare(runs, n_boot, clusters)
    main_stats["gradcam_in_lung_share"] = saliency(runs, seg, cache, p.cam_images)
    external = {}
    for src in args.hold_out:
        print(f"external validation: {src} held out", flush=True)
        loso = train_modes([cache.path], out / f"holdout-{src}", p, [m for m in ("raw", "masked", "masked-cropped") if m in args.modes],
                           seg, seeds, hold_out=src, cache_dir=out / f"holdout-{src}" / "cache")  # fmt: skip
        external[src] = compare(loso, n_boot, clusters)
    outside = None
    if args.external:
        print(f"external data: {', '.join(e.name for e in args.external)}", flush=True)
        ext_cache, removed = external_cache(cache, args.external, out / "external", p.working_size)
        evaluated, ext_clusters = evaluate_externally(runs, ext_cache, seg), clusters_of(ext_cache)
        outside = compare(evaluated, n_boot, ext_clusters)
        outside.update(sets=[e.name for e in args.external], removed_shared_pictures=removed, images=len(ext_cache))
        outside["by_source"] = by_source(evaluated, n_boot, ext_clusters)
    primary = primary_endpoint(outside)
    probe = None if args.no_probe else probes(cache, seg, clusters, seeds, n_boot)
    three_ways = covid_three_ways(out, n_boot, args.infection, args.device)
    decided = study_decisions(out, seg)

    figures(out, runs, stage1)
    results = {
        "study": "masked_vs_raw", "preset": args.preset, "data": [str(d) for d in args.data], "split": split_what,
        "split_counts": cache.manifest.counts(), "crop_aligned_pairs": len(cropped), "manifest_digest": cache.digest(), "seeds": seeds, "n_boot": n_boot,
        "settings": {"segmenter": seg.info.get("source"), "seg_recipe": [to_dict(c) for c in p.seg],
                     "cls_recipe": [to_dict(c) for c in p.cls], "working_size": p.working_size},
        "stage1_saw": leaked,
        "stage1": {k: {"summary": v.summary, "by_source": v.by_source} for k, v in stage1.items()},
        "main": main_stats, "external": external, "external_data": outside, "primary": primary,
        "shortcut_probe": probe,
        "covid_three_ways": three_ways,
        "decisions": decided,
        "machine": machine(), "command": " ".join(sys.argv), "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    write_json(out / "results.json", results)
    write_text(out / "report.md", report(results))
    from lungcls.html_report import write_html_report

    write_html_report(out, out / "report.html", title=f"lungcls masked vs raw ({args.preset})")
    print((out / "report.md").read_text())


def primary_endpoint(outside: dict | None) -> dict:
    """The primary endpoint on the external data (pooled): masked - raw balanced accuracy per masked mode, with the
    two-level interval (seeds and test clusters) and the non-inferiority p (margin :data:`MARGIN`), Holm-adjusted
    over the masked-mode contrasts only; ``result`` None without external data."""
    if not outside:
        return {"endpoint": PRIMARY, "margin": MARGIN, "result": None,
                "why": "no external data given (--external): the primary endpoint was not measured"}  # fmt: skip
    keep = ("n_images", "clusters", "seeds", "balanced_accuracy_diff", "balanced_accuracy_diff_ci",
            "noninferiority_p", "noninferiority_p_holm", "detectable_difference")  # fmt: skip
    result = {m: {k: c[k] for k in keep} for m, c in outside["vs_raw"].items()}
    return {"endpoint": PRIMARY, "margin": MARGIN, "sets": outside["sets"], "result": result}


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


def fmt_ci(ci: list[float], signed: bool = False, clip: bool = True) -> str:
    """An interval as text; accuracies cannot leave [0, 1], so an unsigned one is clipped to it (``clip``)."""
    f = "{:+.3f}" if signed else "{:.3f}"
    ci = ci if signed or not clip else [min(1.0, max(0.0, v)) if not math.isnan(v) else v for v in ci]
    return "[" + ", ".join(f.format(v) if not math.isnan(v) else "n/a" for v in ci) + "]"


def fmt_p(p: float) -> str:
    """A p-value as text: three decimals, '< 0.001' below that (never a rounded 0)."""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def mode_table(stats: dict, title: str) -> list[str]:
    lines = [f"### {title}", "",
             "| mode | test images (clusters) | accuracy, mean of seeds | test set only: clusters resampled, models fixed | "
             "seeds only: std, t-interval | seeds and clusters resampled | balanced accuracy, mean ± std | "
             "ECE / class-wise ECE / Brier / NLL [cluster 95% CI] |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for mode, s in stats["modes"].items():
        b, c, ci = s["between_seeds"], s["calibration"], s["calibration_ci"]
        cal = " / ".join(f"{c[k]:.3f} {fmt_ci(ci[k], clip=False)}" for k in ("ece", "classwise_ece", "brier", "nll"))
        bal = s["balanced_accuracy"]
        lines.append(f"| {mode} | {s['n_test']} ({s['clusters']}) | {s['table']['accuracy']['mean']:.3f} | "
                     f"{fmt_ci(s['accuracy_test_ci'])} | {b['std']:.3f}, {fmt_ci(b['ci'])} | {fmt_ci(s['accuracy_both_ci'])} | "
                     f"{bal['mean']:.3f} ± {bal['std']:.3f} | {cal} |")  # fmt: skip
    lines += ["", "| contrast | images (clusters) | seeds | Δ balanced accuracy [seeds and clusters resampled] | "
              f"non-inferiority p (margin {stats['margin']}), Holm over the masked modes | Δ accuracy [same] | "
              "detectable Δ (80% power) | McNemar p per pair of trained networks (secondary, unadjusted) |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for mode, v in stats.get("vs_raw", {}).items():
        tests = ", ".join(fmt_p(t["p_value"]) for t in v["mcnemar"])
        lines.append(f"| {mode} - raw | {v['n_images']} ({v['clusters']}) | {v['seeds'][1]} vs {v['seeds'][0]} | "
                     f"{v['balanced_accuracy_diff']:+.3f} {fmt_ci(v['balanced_accuracy_diff_ci'], True)} | "
                     f"{fmt_p(v['noninferiority_p'])} → {fmt_p(v['noninferiority_p_holm'])} | "
                     f"{v['accuracy_diff']:+.3f} {fmt_ci(v['accuracy_diff_ci'], True)} | {v['detectable_difference']:.3f} | "
                     f"{tests} |")  # fmt: skip
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


def _primary_lines(r: dict) -> list[str]:
    """The primary endpoint's section."""
    lines: list[str] = []
    pr = r["primary"]
    lines += ["", "## Primary endpoint (stated before the run)", "",
              f"{pr['endpoint']}; a masked mode is non-inferior when the difference is above -{pr['margin']}, tested by the "
              "two-level paired bootstrap over training seeds and test clusters (a cluster: a patient or a group of "
              "duplicated pictures), Holm over the masked-mode contrasts only. Everything else in this report is secondary.", ""]  # fmt: skip
    if pr["result"] is None:
        lines += [f"Not measured: {pr['why']}.", ""]
    else:
        lines += [f"External sets: {', '.join(pr['sets'])} (pictures shared with the training data removed).", "",
                  "| contrast | images (clusters) | Δ balanced accuracy [95%] | non-inferiority p (Holm) | detectable Δ |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for m, v in pr["result"].items():
            lines.append(f"| {m} - raw | {v['n_images']} ({v['clusters']}) | {v['balanced_accuracy_diff']:+.3f} "
                         f"{fmt_ci(v['balanced_accuracy_diff_ci'], True)} | {fmt_p(v['noninferiority_p_holm'])} | "
                         f"{v['detectable_difference']:.3f} |")  # fmt: skip
        lines.append("")
    return lines


def _external_lines(r: dict) -> list[str]:
    """The external data's section, and the held-out sources'."""
    lines: list[str] = []
    if r.get("external_data"):
        x = r["external_data"]
        lines += [f"## External data: {', '.join(x['sets'])}", "",
                  f"The classifiers above, evaluated on {x['images']} images of data they never saw ({x['removed_shared_pictures']} "
                  "pictures shared with the training data removed first). Accuracy per source is in the reference tables.", ""]  # fmt: skip
        lines += mode_table(x, "External data, paired against raw")
        lines += ["Per source (secondary, unadjusted):", "",
                  "| source | images | balanced accuracy per mode | Δ balanced accuracy vs raw [seeds and clusters resampled] |",
                  "|---|---|---|---|"]  # fmt: skip
        for src, v in x.get("by_source", {}).items():
            bal = ", ".join(f"{m} {b:.3f}" for m, b in v["balanced_accuracy"].items())
            diffs = ", ".join(f"{m} {c['balanced_accuracy_diff']:+.3f} {fmt_ci(c['balanced_accuracy_diff_ci'], True)}"
                              for m, c in v["vs_raw"].items())  # fmt: skip
            lines.append(f"| {src} | {v['n_images']} | {bal} | {diffs} |")
        lines.append("")
        for mode, s in x["modes"].items():
            lines += reference_table(mode, s["table"])
    for src, stats in r["external"].items():
        lines += [f"## External validation: `{src}` held out as Test", "",
                  "Trained and validated on the other sources; tested on this one, per class where the class exists in training.", ""]  # fmt: skip
        lines += mode_table(stats, f"{src} held out")
        for mode, s in stats["modes"].items():
            lines += reference_table(mode, s["table"])
    return lines


def _probe_lines(r: dict) -> list[str]:
    """The shortcut controls' section."""
    lines: list[str] = []
    p = r["shortcut_probe"]
    if p:
        lines += ["## Shortcut controls: what tells the class, and where the picture came from", "",
                  f"Logistic-regression probes on 32 x 32 thumbnails (Train as it is, and bootstrap resamples of its "
                  f"clusters: {p['seeds']} seeds); balanced accuracy mean ± std over seeds, accuracy with the interval "
                  "over seeds and Test clusters. `outside` or `outline` near `whole` means masked inputs keep a "
                  "shortcut (what the mask leaves, or its shape and position).", "",
                  "| input | balanced accuracy | accuracy [seeds and clusters resampled] | chance (largest class) |",
                  "|---|---|---|---|"]  # fmt: skip
        for name, v in p["class"].items():
            b_ = v["balanced_accuracy"]
            lines.append(f"| {name} | {b_['mean']:.3f} ± {b_['std']:.3f} | {v['accuracy']:.3f} {fmt_ci(v['accuracy_ci'])} | "
                         f"{v['chance_majority']:.3f} |")  # fmt: skip
        rows = []
        for cls, v in p["source"].items():
            for part in ("whole", "inside") if "skipped" not in v else ():
                b_, w = v[part]["balanced_accuracy"], v[part]
                rows.append(f"| {cls} ({', '.join(v['sources'])}) | {part} | {b_['mean']:.3f} ± {b_['std']:.3f} | "
                            f"{w['accuracy']:.3f} {fmt_ci(w['accuracy_ci'])} | {w['chance_majority']:.3f} |")  # fmt: skip
        lines += ["", "Source set within one class" + (
            " (chance: balanced accuracy 0.50 between two sources; the last column is the accuracy of always guessing "
            "the larger source):" if rows else ":"), ""]  # fmt: skip
        if rows:
            lines += ["| class (sources) | input | balanced accuracy | accuracy [seeds and clusters resampled] | chance |",
                      "|---|---|---|---|---|", *rows]  # fmt: skip
        skipped = [v["skipped"] for v in p["source"].values() if "skipped" in v]
        lines += [*([""] if rows and skipped else []), *(f"- {why}" for why in skipped), ""]
    return lines


def covid_three_ways(out: Path, n_boot: int, spec: str, device: str) -> dict | None:
    """COVID-19 from the classifier, from infection and combined (:mod:`infection_detection`); None when skipped."""
    from lungcls import builtin

    if spec == "none" or (spec == "auto" and builtin.INFECTION not in builtin.names()):
        return None
    print("COVID-19 three ways: classifier, infection, combined", flush=True)
    return compare_detectors(out, n_boot, None if spec == "auto" else spec, device)


def rewrite_report(out: Path, args) -> None:
    """report.md and report.html again from ``out/results.json``, with COVID-19 three ways computed if missing."""
    import json

    results = json.loads((out / "results.json").read_text())
    if results.get("covid_three_ways") is None:
        results["covid_three_ways"] = covid_three_ways(out, results["n_boot"], args.infection, args.device)
    source = results["settings"].get("segmenter") or {}
    if results.get("decisions") is None and source.get("origin") == "builtin":
        results["decisions"] = study_decisions(out, Segmenter.load(source.get("name"), device=args.device))
    write_json(out / "results.json", results)
    write_text(out / "report.md", report(results))
    from lungcls.html_report import write_html_report

    write_html_report(out, out / "report.html", title=f"lungcls masked vs raw ({results['preset']})", force=True)
    print((out / "report.md").read_text())


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
    lines += _primary_lines(r)
    lines += ["## Masked vs raw on the held-out Test split (secondary: internal)", ""]
    lines += mode_table(r["main"], "All modes, paired against raw")
    g = r["main"]["gradcam_in_lung_share"]
    lines += ["### Where Grad-CAM looks (a random class-stratified sample of Test, every seed)", "",
              "| mode @ layer | maps | share in the lungs | ÷ lung share of the input (1 = uniform) | on the lung edge | "
              "on the black background |", "|---|---|---|---|---|---|"]  # fmt: skip
    for m, v in g.items():
        if v["n"]:
            lines.append(f"| {m} | {v['n']} | {v['in_lung']:.2f} | {v['in_lung_over_fraction']:.2f} | {v['edge']:.2f} | "
                         f"{v['background']:.2f} |")  # fmt: skip
    lines.append("")
    lines += ["### Reference tables (mean ± std over seeds)", ""]
    for mode, s in r["main"]["modes"].items():
        lines += reference_table(mode, s["table"])
    lines += _external_lines(r)
    lines += _probe_lines(r)
    lines += detector_lines(r.get("covid_three_ways")) + decision_lines(r.get("decisions")) + [""]
    lines += ["## What these numbers can and cannot support", "",
              "- They compare inputs (raw, masked, cropped) for one recipe on these data sets and this split. They are not "
              "diagnostic performance: nothing here was validated on a clinical population, and the labels of public CXR "
              "sets are noisy.",
              "- The test-set interval resamples clusters of the Test set (patients, or groups of duplicated pictures) and "
              "holds the trained models fixed; the between-seed interval holds the test set fixed; only the interval over "
              "seeds and clusters holds both, and it is the one to quote. With 2-3 seeds it is wide, and it cannot reach "
              "beyond what the seeds span.",
              "- McNemar compares two trained networks, not two training procedures: it is secondary and unadjusted. A "
              "difference whose interval contains 0 does not show that masking helps or hurts; a difference smaller than "
              "the detectable one (80% power) could not have been seen on this Test set.",
              "- A drop on an internal Test set is what removing a shortcut predicts; the external data says more.",
              "- Where class and source are confounded (the shared sets), high accuracy can come from recognising the source. "
              "The external (held-out source) tables and the shortcut probe measure that: a probe far above chance on masked "
              "inputs means masking did not remove the source signal.",
              "- Calibration (ECE) after temperature scaling is measured on Test with a temperature fitted on Val; it holds "
              "for data like Val, not for another hospital.", ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
