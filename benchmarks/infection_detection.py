"""COVID-19 detection three ways on the same Test images: the ResNet classifier (raw and masked inputs), the infection
segmenter (COVID-19 when the infected share of the lungs passes a threshold chosen on Val), and both combined (a
logistic regression on Val of the classifier's P(COVID-19) and the infected share); sensitivity, specificity and
AUROC with 95% intervals over bootstrap resamples of duplicate-picture clusters, averaged over the seeds (the same
resamples for every seed, so the interval is the Test set's, for the seed-averaged procedure).

Reads a masked-vs-raw study's folder (its cache and ``runs/<mode>-seed<k>/eval_{val,test}.json``); the study calls
:func:`compare_detectors` itself, and this script does it for a study that has already run:

    python benchmarks/infection_detection.py results/covidqu-cpu --out benchmarks/results/infection_detection_covidqu_cpu
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from lungcls import builtin  # noqa: E402
from lungcls.atomic import write_json, write_text  # noqa: E402
from lungcls.data.cache import PackedCache  # noqa: E402
from lungcls.data.duplicates import duplicate_groups  # noqa: E402
from lungcls.data.split import group_ids  # noqa: E402
from lungcls.seg.detector import auroc, choose_threshold, combine, fit_combination, logit  # noqa: E402
from lungcls.seg.infection import measure  # noqa: E402
from lungcls.seg.segmenter import Segmenter  # noqa: E402
from lungcls.stats import cluster_draws  # noqa: E402

COVID = "COVID-19"
METRICS = ("sensitivity", "specificity", "auroc")


def infected_shares(cache: PackedCache, rows: np.ndarray, infection: Segmenter, lungs: Segmenter) -> np.ndarray:
    """The infected share of the lungs of each cache row (the built-in path: lungs, infection inside them)."""
    out = []
    for start in range(0, len(rows), 64):
        batch = torch.from_numpy(np.asarray(cache.images[rows[start : start + 64]]))[:, None]
        lung = lungs.masks(batch)
        found = infection.masks(batch).masks.to(lung.masks.device)
        out += [r.share for r in measure(found, lung.masks, lung.flags, with_masks=False)]
    return np.array(out)


def _scores(score: np.ndarray, decided: np.ndarray, positive: np.ndarray, idx: np.ndarray) -> dict[str, float]:
    p, d = positive[idx], decided[idx]
    return {
        "sensitivity": float(d[p].mean()) if p.any() else np.nan,
        "specificity": float((~d[~p]).mean()) if (~p).any() else np.nan,
        "auroc": auroc(score[idx], p),
    }


def summarise(per_seed: list[tuple[np.ndarray, np.ndarray]], positive: np.ndarray, draws: list[np.ndarray]) -> dict:
    """{metric: {"value", "ci95", "seeds"}} averaged over seeds; ``per_seed``: (score, decision) per seed."""
    every = np.arange(len(positive))
    seeds = [_scores(s, d, positive, every) for s, d in per_seed]
    boot = [[_scores(s, d, positive, i) for s, d in per_seed] for i in draws]
    out = {}
    for m in METRICS:
        values = np.array([np.mean([b[m] for b in draw]) for draw in boot])
        values = values[~np.isnan(values)]  # resamples without a class leave a score undefined
        out[m] = {"value": float(np.mean([s[m] for s in seeds])), "ci95": [float(np.percentile(values, 2.5)),
                  float(np.percentile(values, 97.5))], "seeds": [s[m] for s in seeds]}  # fmt: skip
    return out


def _runs(runs_dir: Path) -> dict[str, list[Path]]:
    found = defaultdict(list)
    for d in sorted(runs_dir.glob("*-seed*")):
        m = re.fullmatch(r"(.+)-seed(\d+)", d.name)
        if m and (d / "eval_test.json").is_file() and (d / "eval_val.json").is_file():
            found[m.group(1)].append(d)
    return dict(found)


def _split(run: Path, split: str, covid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cache rows, P(COVID-19), predicted COVID-19) of one run's evaluation of ``split``."""
    report = json.loads((run / f"eval_{split}.json").read_text())
    covid, images = report["class_names"].index(COVID), report["images"]  # the run's own class order
    rows = np.array([r["row"] for r in images])
    return rows, np.array([r["probs"][covid] for r in images]), np.array([r["pred"] == covid for r in images])


def compare_detectors(study: Path, n_boot: int = 1000, infection: str | None = None, device: str = "auto") -> dict:
    """The three detectors side by side for every mode of the study in ``study`` (see the module's docstring)."""
    cache = PackedCache.open(study / "cache")
    if COVID not in cache.class_names:
        return {"skipped": f"no {COVID} class in {study / 'cache'}"}
    covid = cache.class_names.index(COVID)
    finder = Segmenter.load(infection, device, target="infection")
    lungs = Segmenter.load(builtin.DEFAULT, device, target="lungs")
    runs = _runs(study / "runs")
    val_rows, test_rows = cache.indices("Val"), cache.indices("Test")
    share = dict(zip(val_rows.tolist(), infected_shares(cache, val_rows, finder, lungs)))
    share |= dict(zip(test_rows.tolist(), infected_shares(cache, test_rows, finder, lungs)))
    is_covid = cache.labels == covid
    val_share = np.array([share[r] for r in val_rows])
    threshold = choose_threshold(val_share, is_covid[val_rows])
    groups = group_ids(cache.manifest, duplicate_groups(cache.hashes, np.asarray(cache.thumbs)))

    def draws(rows: np.ndarray) -> list[np.ndarray]:
        return cluster_draws([groups[r] for r in rows], n_boot, np.random.default_rng(0))

    test_share = np.array([share[r] for r in test_rows])
    seen = set(finder.seen_images)
    result = {
        "infection_model": finder.info.get("source", {}).get("name"), "threshold": threshold,
        "threshold_chosen_on": f"Val of the study ({len(val_rows)} images), Youden", "n_test": len(test_rows),
        "covid_test": int(is_covid[test_rows].sum()), "test_seen_by_infection_model": sum(cache.hashes[r] in seen for r in test_rows),
        "detector": summarise([(test_share, test_share >= threshold)], is_covid[test_rows], draws(test_rows)), "modes": {},
    }  # fmt: skip
    for mode, dirs in runs.items():
        alone, both, rows = [], [], None
        for d in dirs:
            (vr, vp, _), (tr, tp, tpred) = _split(d, "val", covid), _split(d, "test", covid)
            if rows is not None and not np.array_equal(tr, rows):
                raise SystemExit(f"{d}: not evaluated on the same images as the other seeds of {mode}")
            rows = tr
            vs, ts = np.array([share[r] for r in vr]), np.array([share[r] for r in tr])
            w = fit_combination(np.column_stack([logit(vp), logit(vs)]), is_covid[vr])
            val_comb = combine(np.column_stack([logit(vp), logit(vs)]), w)
            comb = combine(np.column_stack([logit(tp), logit(ts)]), w)
            alone.append((tp, tpred))
            both.append((comb, comb >= choose_threshold(val_comb, is_covid[vr])))
        result["modes"][mode] = {"classifier": summarise(alone, is_covid[rows], draws(rows)), "n": len(rows),
                                 "combined": summarise(both, is_covid[rows], draws(rows)), "seeds": len(dirs)}  # fmt: skip
    return result


def detector_lines(r: dict) -> list[str]:
    """The report's section: one row per detector and mode."""
    if not r or "skipped" in r:
        return [] if not r else ["", f"COVID-19 from infection: skipped ({r['skipped']})."]

    def cell(m: dict) -> str:
        return f"{m['value']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"

    lines = [
        "", "## COVID-19 three ways: classifier, infection, combined", "",
        f"Same {r['n_test']} Test images ({r['covid_test']} COVID-19). Infection: `{r['infection_model']}`, COVID-19 "
        f"when the infected share of the lungs is >= {r['threshold']:.4f} (chosen on {r['threshold_chosen_on']}); "
        f"{r['test_seen_by_infection_model']} Test images were among the infection model's training images. "
        "Classifier: COVID-19 when it is the predicted class; score P(COVID-19). Combined: logistic regression on "
        "Val of logit P(COVID-19) and logit infected share, threshold by Youden on Val. Each figure is the mean over "
        "seeds with a 95% interval over bootstrap resamples of duplicate-picture clusters of Test.", "",
        "| detector | input | images | seeds | sensitivity | specificity | AUROC |", "|---|---|---|---|---|---|---|",
        f"| infection segmenter | - | {r['n_test']} | - | {' | '.join(cell(r['detector'][m]) for m in METRICS)} |",
    ]  # fmt: skip
    for mode, v in r["modes"].items():
        for name in ("classifier", "combined"):
            lines.append(f"| {name} | {mode} | {v['n']} | {v['seeds']} | {' | '.join(cell(v[name][m]) for m in METRICS)} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path, help="a masked-vs-raw study's --out folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--infection", default=None, help="infection segmenter (default: the built-in one)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    t0 = time.perf_counter()
    result = compare_detectors(args.study, args.n_boot, args.infection, args.device)
    result.update(command=" ".join(sys.argv), seconds=round(time.perf_counter() - t0, 1))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", result)
    text = "\n".join(["# COVID-19 from infection beside the classifier", *detector_lines(result)[2:], "",
                      f"Command: `{result['command']}` ({result['seconds']} s)."]) + "\n"  # fmt: skip
    write_text(args.out / "report.md", text)
    print(text)


if __name__ == "__main__":
    main()
