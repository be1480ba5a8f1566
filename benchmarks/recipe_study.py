"""The recipe study: which training recipes to make the defaults, chosen on Val in one GPU call.

Three phases, one after the other, each a set of trainings that run at once on one device (separate processes;
an H200's 139 GiB holds about eight ResNet-50 runs), each run given its share of the phase's seconds as
``--time-budget`` (it trains as many epochs as fit and always evaluates and saves: nothing is killed):

1. **stage 1** (lung U-Net): the grid :data:`SEG_GRID`, every point with ``--seeds`` seeds, ranked on Val Dice;
   the best point's first seed is the segmenter of phase 3, and the ResNet-50 U-Net's first seed gives the
   encoder that the classifier points ``init=unet`` start from (in-domain pretraining on the lung masks).
2. **stage 2** (classifier): the grid :data:`CLS_GRID`, every point with ``--seeds`` seeds, raw inputs, ranked
   on mean Val accuracy (then Val macro-F1). Test is evaluated for the chosen point alone.
3. **the seed experiment**: the chosen classifier recipe in the four input modes (raw, masked-gt, masked,
   masked-cropped; masked modes from phase 1's chosen segmenter) with ``--experiment-seeds`` seeds each,
   evaluated on Test.

Everything is read from one split (shipped with the data: ``gpu_pack.py``) and one packed cache made first.
Results are written as they come (``runs.jsonl``), then ``recipe_study.{json,md}`` (the tables) and
``winner_seg.json`` / ``winner_cls.json`` (the chosen recipes as ``segmenter_recipe`` / ``classifier_recipe``
overrides of the ``default`` recipe).

    python benchmarks/recipe_study.py --split /tmp/data/split.csv --out /tmp/study --budget 480 --parallel 8
    python benchmarks/recipe_study.py ... --grid smoke       # the same on a CPU, tiny models (a rehearsal)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import write_results

# The grids, and why each point is there. Overrides of the ``default`` recipe; ``init``: ``scratch`` or ``unet``.
SEG_GRID: dict[str, dict] = {
    "r34": {},  # the default recipe: U-Net ResNet-34 at 256 px, Dice + BCE
    "r50": {"encoder_name": "resnet50"},  # the classifier's encoder: in-domain pretraining for CLS_GRID's init=unet
    "r18-ema": {"encoder_name": "resnet18", "ema_epochs": 1.0},  # the built-in's family: smaller, faster epochs
}
CLS_GRID: dict[str, dict] = {
    "default": {},  # AdamW 1e-3, wd 1e-4, 224 px, label smoothing 0.1, class weights, light augmentation
    "strong-aug": {"scale": [0.75, 1.25], "rotation": 15.0, "translate": 0.1, "mix": 0.5},  # RRC-like zoom + mixing
    "ema-wd": {"ema_epochs": 2.0, "weight_decay": 0.05},  # a moving average and AdamW's usual decay for small data
    "sgd": {"optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4},  # torchvision's ResNet reference optimiser
    "unet-init": {"init": "unet"},  # the encoder of a U-Net trained on the lung masks (no download)
    "unet-init-strong": {"init": "unet", "scale": [0.75, 1.25], "mix": 0.5, "ema_epochs": 2.0},
    "288px": {"image_size": 288},  # more pixels of small opacities, 1.65x the cost
    "bs32-lr5e-4": {"batch_size": 32, "lr": 5e-4},  # more, smaller steps in the same seconds
}
MODES = {"raw": {"mode": "raw"}, "masked-gt": {"mode": "masked", "mask_source": "gt"},
         "masked": {"mode": "masked"}, "masked-cropped": {"mode": "masked-cropped"}}  # fmt: skip
# a rehearsal on a CPU: the same phases, tiny models
SMOKE = {"segmenter": {"encoder_name": "resnet18", "encoder_depth": 3, "decoder_channels": [8, 8, 8], "image_size": 32,
                       "batch_size": 8},
         "classifier": {"arch": "resnet18", "image_size": 32, "batch_size": 8}}  # fmt: skip
SMOKE_SEG_GRID = {"r18": {}, "r18-ema": {"ema_epochs": 1.0}}
SMOKE_CLS_GRID = {
    "default": {},
    "strong-aug": {"mix": 0.5, "scale": [0.75, 1.25]},
    "sgd": {"optimizer": "sgd", "lr": 0.05},
}
SHARES = {"seg": 0.2, "cls": 0.4, "experiment": 0.4}  # of the seconds left after the cache is made


def run_one(job: dict) -> None:
    """Train one job (a grid point and seed) in this process; the parent reads its ``config.json``."""
    from lungcls.cls.train import train_classifier
    from lungcls.recipes import classifier_recipe, segmenter_recipe
    from lungcls.seg.train import train_segmenter

    over = {k: v for k, v in job["overrides"].items() if k != "init"}
    budget = max(1.0, job["budget"] - (time.time() - job["launched"]))  # the process's start counted in
    over |= {"seed": job["seed"], "time_budget": budget, "epochs": job["epochs"], "device": job["device"]}
    run = {"cache_dir": job["cache"], "progress": False, "overwrite": True, "evaluate": job["evaluate"]}
    if job["stage"] == "seg":  # a budget too short for one epoch still trains one, evaluates and saves
        model, train = segmenter_recipe("default", **over)
        train_segmenter([job["cache"]], job["out"], model, train, **run)
        return
    model, train = classifier_recipe("default", **over)
    weights = job.get("weights")
    train_classifier([job["cache"]], job["out"], model, train, segmenter=job.get("segmenter"), weights=weights, **run)


class Costs:
    """What a run costs beyond its epochs (process start, cache, model, final evaluation), measured from the runs
    that ended: a share of a phase's seconds smaller than twice that would mostly wait, so fewer jobs run."""

    def __init__(self, guess: float) -> None:
        self.fixed = guess

    def measure(self, job: dict, wall: float) -> None:
        path = Path(job["out"]) / "history.json"
        if path.is_file():
            epochs = sum(r["seconds"] + r.get("validation_seconds", 0.0) for r in json.loads(path.read_text()))
            self.fixed = max(self.fixed * 0.5, wall - epochs)  # the latest, not far below the earlier ones

    def fitting(self, jobs: list[dict], parallel: int, seconds: float) -> tuple[list[dict], list[dict]]:
        """The first jobs (seed-major: whole seeds go last) whose waves leave each run twice its fixed cost."""
        keep = len(jobs)
        while keep > parallel and seconds / -(-keep // parallel) < 2 * self.fixed:
            keep -= 1
        return jobs[:keep], jobs[keep:]


def launch(jobs: list[dict], parallel: int, seconds: float, log: Path, costs: Costs) -> list[dict]:
    """Run ``jobs`` ``parallel`` at a time in waves that share ``seconds`` evenly; each job's result as it ends.
    Jobs that would leave too little time to each run (see :class:`Costs`) are not run, and are listed as such."""
    jobs, dropped = costs.fitting(jobs, parallel, seconds)
    waves = -(-len(jobs) // parallel)
    each = max(1.0, seconds / max(waves, 1))  # a process's start (imports) is counted inside its budget
    done = [{**job, "exit": None, "not_run": f"{seconds:.0f} s left too little for it"} for job in dropped]
    for job in done:
        print(f"  {job['name']} seed {job['seed']}: not run ({job['not_run']})", flush=True)
    for w in range(waves):
        wave = jobs[w * parallel : (w + 1) * parallel]
        procs = []
        for job in wave:
            job["budget"], job["launched"] = each, time.time()
            Path(job["out"]).mkdir(parents=True, exist_ok=True)
            spec = Path(job["out"]) / "job.json"
            spec.write_text(json.dumps(job))
            with open(Path(job["out"]) / "train.log", "w") as out:
                procs.append((job, time.monotonic(), subprocess.Popen(
                    [sys.executable, __file__, "--one", str(spec)], stdout=out, stderr=subprocess.STDOUT)))  # fmt: skip
        for job, started, proc in procs:
            code = proc.wait()
            result = {**job, "exit": code, "seconds": round(time.monotonic() - started, 1), **_scores(job)}
            costs.measure(job, result["seconds"])
            done.append(result)
            with log.open("a") as f:
                f.write(json.dumps(result) + "\n")
            print(f"  {job['name']} seed {job['seed']}: exit {code}, {result['seconds']} s of {each:.0f}, "
                  f"{result.get('epochs_trained')} epochs, val {result.get('val')}", flush=True)  # fmt: skip
    return done


def _scores(job: dict) -> dict:
    """Val (and Test, when evaluated) score of a finished run: accuracy for a classifier, mean Dice for a U-Net."""
    path = Path(job["out"]) / "config.json"
    if not path.is_file():
        return {}
    config = json.loads(path.read_text())
    out = {"epochs_trained": config.get("run", {}).get("epochs_trained")}
    for split, report in config.get("evaluation", {}).items():
        if job["stage"] == "seg":  # a budget too short for one epoch still trains one, evaluates and saves
            dice = report["dice"]
            out[split] = dice["mean"] if isinstance(dice, dict) else dice
        else:
            out[split], out[f"{split}_macro_f1"] = report["accuracy"], report["macro_f1"]
    return out


def rank(results: list[dict]) -> list[tuple[str, float, float, list[float]]]:
    """Grid points by mean Val score over seeds (then Val macro-F1): (name, mean, macro-F1 mean, per seed)."""
    points: dict[str, list[dict]] = {}
    for r in results:
        points.setdefault(r["name"], []).append(r)
    table = []
    for name, rs in points.items():
        vals = [r["val"] for r in rs if r.get("val") is not None]
        f1 = [r.get("val_macro_f1", 0.0) for r in rs if r.get("val") is not None]
        table.append((name, statistics.mean(vals) if vals else float("nan"), statistics.mean(f1) if f1 else 0.0, vals))
    return sorted(table, key=lambda t: (-t[1] if t[1] == t[1] else float("inf"), -t[2]))  # NaN (no result) last


def predict_masks(segmenter: Path, cache: Path, device: str) -> None:
    """The segmenter's masks of every cache row, predicted once (kept beside the cache) before the runs that read them."""
    code = ("from lungcls.data.cache import PackedCache; from lungcls.seg.segmenter import Segmenter; "
            f"Segmenter.load({str(segmenter)!r}, device={device!r}).cache_masks(PackedCache.open({str(cache)!r}))")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)


def test_chosen(runs: list[dict], cache: Path, device: str) -> dict[int, float]:
    """Test accuracy of the chosen point's runs (after the ranking, which saw Val only): {seed: accuracy}."""
    test = {}
    for r in runs:
        cmd = [sys.executable, "-m", "lungcls", "evaluate-cls", str(cache), "--model", r["out"], "--split", "Test",
               "--out", r["out"], "--device", device, "-q", "--force"]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
        test[r["seed"]] = json.loads((Path(r["out"]) / "eval_test.json").read_text())["accuracy"]
    return test


def make_jobs(stage: str, grid: dict, seeds: int, evaluate: list[str], base: dict, out: Path, smoke: bool,
              links: dict[str, Path]) -> list[dict]:  # fmt: skip
    """One job per grid point and seed, seed-major (whole seeds go last when time runs short); a classifier point
    with ``init: unet`` starts from ``links["encoder"]``, one on predicted masks reads ``links["segmenter"]``."""
    fixed = SMOKE["segmenter" if stage == "seg" else "classifier"] if smoke else {}
    jobs = [{**base, "stage": stage, "name": name, "seed": seed, "evaluate": evaluate,
             "overrides": {**fixed, **over}, "out": str(out / stage / f"{name}-s{seed}")}
            for seed in range(seeds) for name, over in grid.items()]  # fmt: skip
    for job in jobs:
        over = job["overrides"]
        if over.get("init") == "unet":
            job["weights"] = str(links["encoder"])
        if over.get("mode", "raw") != "raw" and over.get("mask_source") != "gt":
            job["segmenter"] = str(links["segmenter"])
    return jobs


def study(args: argparse.Namespace) -> dict:
    """The three phases (see the module's docstring); a phase is skipped when its winner is given."""
    out, started = args.out, time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    log, cache = out / "runs.jsonl", out / "cache"
    subprocess.run([sys.executable, "-m", "lungcls", "prepare", str(args.split), "--out", str(cache), "-q"], check=True)
    smoke = args.grid == "smoke"
    seg_grid = {"chosen": args.winner_seg} if args.winner_seg is not None else SMOKE_SEG_GRID if smoke else SEG_GRID
    cls_grid = {"chosen": args.winner_cls} if args.winner_cls is not None else SMOKE_CLS_GRID if smoke else CLS_GRID
    seg_seeds = 1 if args.winner_seg is not None else args.seeds
    modes = {m: MODES[m] for m in args.modes}
    base = {"cache": str(cache), "device": args.device, "epochs": args.max_epochs}
    shares = {
        "seg": SHARES["seg"],
        "cls": SHARES["cls"] if args.winner_cls is None else 0.0,
        "experiment": SHARES["experiment"],
    }

    def seconds(phase: str) -> float:
        """This phase's share of what is left now (a late phase is not squeezed by an early one's overrun)."""
        left = args.budget - (time.monotonic() - started) - 10.0
        later = list(shares)[list(shares).index(phase) :]
        return max(0.0, left * shares[phase] / sum(shares[p] for p in later))

    print(f"phase 1: stage 1, {len(seg_grid)} points x {seg_seeds} seeds", flush=True)
    costs = Costs(args.fixed_guess)
    seg = launch(make_jobs("seg", seg_grid, seg_seeds, ["Val"], base, out, smoke, {}), args.parallel, seconds("seg"), log,
                 costs)  # fmt: skip
    seg_rank = rank(seg)
    seg_best = seg_rank[0][0]
    segmenter = out / "seg" / f"{seg_best}-s0"
    encoder = out / "seg" / ("r50-s0" if "r50" in seg_grid else f"{seg_best}-s0") / "model.safetensors"
    links = {"segmenter": segmenter, "encoder": encoder}
    cls, cls_rank, test = [], [], {}
    if args.winner_cls is None:
        print(f"phase 2: stage 2, {len(cls_grid)} points x {args.seeds} seeds", flush=True)
        cls_jobs = make_jobs("cls", cls_grid, args.seeds, ["Val"], base, out, smoke, links)
        cls = launch(cls_jobs, args.parallel, seconds("cls"), log, costs)
        cls_rank = rank(cls)
        test = test_chosen([r for r in cls if r["name"] == cls_rank[0][0] and r["exit"] == 0], cache, args.device)
    cls_best = cls_rank[0][0] if cls_rank else "chosen"

    print(f"phase 3: the seed experiment, {len(modes)} modes x {args.experiment_seeds} seeds", flush=True)
    chosen = {**(SMOKE["classifier"] if smoke else {}), **cls_grid[cls_best]}
    grid = {m: {**chosen, **o} for m, o in modes.items()}
    experiment = make_jobs("experiment", grid, args.experiment_seeds, ["Val", "Test"], base, out, smoke, links)
    if any("segmenter" in job for job in experiment):
        predict_masks(segmenter, cache, args.device)
    exp = launch(experiment, args.parallel, seconds("experiment"), log, costs)
    return {"seg": seg, "seg_rank": seg_rank, "cls": cls, "cls_rank": cls_rank, "cls_test": test,
            "experiment": exp, "chosen": {"segmenter": seg_best, "classifier": cls_best},
            "winner_seg": seg_grid[seg_best], "winner_cls": cls_grid[cls_best], "budget": args.budget,
            "seconds": round(time.monotonic() - started, 1)}  # fmt: skip


def tables(r: dict) -> str:
    def ranking(rows: list, what: str) -> str:
        lines = [f"| point | mean Val {what} | Val macro-F1 | per seed |", "|---|---|---|---|"]
        for n, m, f, vs in rows:
            f1 = f"{f:.4f}" if what == "accuracy" else "-"
            lines.append(f"| {n} | {m:.4f} | {f1} | {', '.join(f'{v:.4f}' for v in vs)} |")
        return "\n".join(lines)

    exp: dict[str, list[float]] = {}
    for e in r["experiment"]:
        if e.get("test") is not None:
            exp.setdefault(e["name"], []).append(e["test"])
    lines = ["| mode | seeds | Test accuracy, mean | sd | per seed |", "|---|---|---|---|---|"]
    for mode, accs in exp.items():
        sd = statistics.stdev(accs) if len(accs) > 1 else float("nan")
        lines.append(f"| {mode} | {len(accs)} | {statistics.mean(accs):.4f} | {sd:.4f} | "
                     f"{', '.join(f'{a:.4f}' for a in accs)} |")  # fmt: skip
    test = ", ".join(f"seed {s}: {a:.4f}" for s, a in r["cls_test"].items()) or "(not searched here)"
    ran = [x for x in r["seg"] + r["cls"] + r["experiment"] if "not_run" not in x]
    skipped = [f"{x['name']}-s{x['seed']}" for x in r["seg"] + r["cls"] + r["experiment"] if "not_run" in x]
    over = max((x["seconds"] - x["budget"] for x in ran), default=0.0)
    failed = [f"{x['name']}-s{x['seed']}" for x in ran if x["exit"] != 0]
    return (f"## Stage 1 (ranked on Val Dice)\n\n{ranking(r['seg_rank'], 'Dice')}\n\n"
            f"## Stage 2, raw inputs (ranked on Val accuracy; Test for the chosen point only)\n\n"
            f"{ranking(r['cls_rank'], 'accuracy')}\n\nChosen: **{r['chosen']['classifier']}**, Test accuracy {test}\n\n"
            f"## The seed experiment (chosen recipe, segmenter {r['chosen']['segmenter']})\n\n" + "\n".join(lines)
            + f"\n\n{len(ran)} runs, {len(failed)} failed {failed or ''}, {len(skipped)} not run for want of time "
            f"{skipped or ''}; the largest overrun of a run's budget "
            f"{over:+.1f} s (its process start included); wall time {r['seconds']} s of a {r['budget']:.0f} s budget.")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # a job, in its own process
    parser.add_argument("--split", type=Path, help="the split manifest (CSV) of the data")
    parser.add_argument("--out", type=Path, default=Path("results/recipe_study"))
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole study, cache included")
    parser.add_argument("--parallel", type=int, default=8, help="trainings at once on the device")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per grid point")
    parser.add_argument("--experiment-seeds", type=int, default=5, help="seeds per mode in the seed experiment")
    parser.add_argument("--max-epochs", type=int, default=300, help="the most epochs a run may train in its budget")
    parser.add_argument("--grid", choices=("gpu", "smoke"), default="gpu")
    parser.add_argument(
        "--fixed-guess",
        type=float,
        default=25.0,
        help="seconds a run costs beyond its epochs, until measured (about 23 s on an H200)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES), help="the experiment's modes")
    parser.add_argument("--winner-seg", type=json.loads, help="skip the stage-1 search: this recipe (JSON overrides)")
    parser.add_argument("--winner-cls", type=json.loads, help="skip the stage-2 search: this recipe (JSON overrides)")
    args = parser.parse_args()
    if args.one:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        run_one(json.loads(args.one.read_text()))
        return
    if args.split is None:
        parser.error("--split is required")
    result = study(args)
    (args.out / "winner_seg.json").write_text(json.dumps(result["winner_seg"], indent=1) + "\n")
    (args.out / "winner_cls.json").write_text(json.dumps(result["winner_cls"], indent=1) + "\n")
    table = tables(result)
    write_results("recipe_study", result, table, out_dir=args.out)
    print(table)


if __name__ == "__main__":
    main()
