"""The study's statistics on runs trained elsewhere: the seed experiment of ``recipe_study.py`` (GPU plan) analysed as
``masked_vs_raw.py`` analyses its own runs.

Reads every ``<mode>-s<seed>/eval_test.json`` under RUNS (per-image predictions on Test), the cache they were tested
on (for the clusters: patients, exact, near and crop-aligned copies), and writes ``analysis.md`` and
``analysis.json`` to ``--out``: per mode the three intervals and calibration with intervals, per masked mode the
contrast to raw (two-level paired bootstrap over seeds and clusters, non-inferiority p with Holm over the masked
modes, detectable difference, McNemar per pair of networks).

    python benchmarks/analyse_runs.py /tmp/study/experiment --cache /tmp/study/cache --out results/analysis
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from masked_vs_raw import clusters_of, compare, mode_table  # noqa: E402

from lungcls.atomic import write_json, write_text  # noqa: E402
from lungcls.cls.report import ClassificationReport  # noqa: E402
from lungcls.data import PackedCache  # noqa: E402
from lungcls.data.duplicates import crop_aligned_pairs  # noqa: E402

RUN = re.compile(r"(?P<mode>.+)-s(?P<seed>\d+)$")


def load_runs(folder: Path) -> dict[str, list]:
    """{mode: [an object with ``reports["test"]``, per seed in order]} from the run folders under ``folder``."""
    found: dict[str, dict[int, ClassificationReport]] = defaultdict(dict)
    for run in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "eval_test.json").is_file()):
        m = RUN.match(run.name)
        if m:
            found[m["mode"]][int(m["seed"])] = ClassificationReport(**json.loads((run / "eval_test.json").read_text()))
    order = ["raw"] + sorted(k for k in found if k != "raw")
    return {mode: [types.SimpleNamespace(reports={"test": found[mode][s]}) for s in sorted(found[mode])]
            for mode in order if mode in found}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, help="a folder of <mode>-s<seed> run folders with eval_test.json")
    ap.add_argument("--cache", type=Path, required=True, help="the packed cache the runs were tested on")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    runs = load_runs(args.runs)
    if "raw" not in runs:
        raise SystemExit(f"{args.runs}: no raw runs (raw-s<seed>/eval_test.json) to compare against")
    cache = PackedCache.open(args.cache)
    every = np.arange(len(cache))
    cropped = [
        (cache.hashes[i], cache.hashes[j]) for i, j in crop_aligned_pairs(np.asarray(cache.images), every, every)
    ]
    stats = compare(runs, args.n_boot, clusters_of(cache, cropped))
    stats.update(runs=str(args.runs), seeds={m: len(rs) for m, rs in runs.items()}, crop_aligned_pairs=len(cropped))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "analysis.json", stats)
    text = "\n".join(["# The seed experiment, analysed", "", f"Runs: `{args.runs}`; seeds per mode: {stats['seeds']}; "
                      f"{len(cropped)} crop-aligned pairs among the cache's pictures.", "",
                      *mode_table(stats, "Internal Test, paired against raw")])  # fmt: skip
    write_text(args.out / "analysis.md", text)
    print(text)


if __name__ == "__main__":
    main()
