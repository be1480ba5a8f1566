"""What the pipeline's decision policy would do on a masked-vs-raw study's Test images: how many the input gate
refuses (and why), how many have doubtful lungs (flagged by stage 1, or an estimated mask Dice under
:data:`lungcls.decisions.MIN_DICE_ESTIMATE`: flagged, abstained or sent to the raw classifier, by policy), and how
many each mode's classifier would abstain on at each confidence threshold (mean over seeds). Called by the study.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from lungcls import builtin
from lungcls.data.cache import PackedCache
from lungcls.decisions import MIN_DICE_ESTIMATE, doubtful_lungs
from lungcls.gate import InputGate
from lungcls.seg.segmenter import Segmenter


def study_decisions(out: Path, seg: Segmenter, examples: int = 3) -> dict | None:
    """The counts (see the module's docstring) for the study in ``out``; None when the built-in segmenter carries no
    gate."""
    if not Segmenter.load(builtin.DEFAULT, device="cpu", target="lungs").info.get("gate"):
        return None
    cache = PackedCache.open(out / "cache")
    rows = cache.indices("Test")
    gate = InputGate.load(device=str(seg.device))
    verdicts, doubtful = [], []
    for start in range(0, len(rows), 64):
        batch = torch.from_numpy(np.asarray(cache.images[rows[start : start + 64]]))[:, None]
        lungs = seg.masks(batch, keep_probs=gate.segmenter is seg)
        verdicts += gate.check(batch, lungs=lungs if gate.segmenter is seg else None)
        doubtful += [doubtful_lungs(f, q, MIN_DICE_ESTIMATE) for f, q in zip(lungs.flags, lungs.dice_estimates)]
    refused = [(cache.samples[r].image, v.why()) for r, v in zip(rows, verdicts) if not v.accepted]
    unsure = [(cache.samples[r].image, d) for r, d in zip(rows, doubtful) if d]
    coverage = {}
    for run in sorted((out / "runs").glob("*-seed*")):
        report = json.loads((run / "eval_test.json").read_text()) if (run / "eval_test.json").is_file() else {}
        if report.get("coverage"):
            coverage.setdefault(run.name.rsplit("-seed", 1)[0], []).append(report["coverage"])
    return {
        "test_images": len(rows),
        "refused": len(refused),
        "refused_reasons": dict(Counter(r for v in verdicts for r in v.reasons)),
        "refused_examples": refused[:examples],
        "doubtful_lungs": len(unsure),
        "doubtful_examples": unsure[:examples],
        "coverage": {m: _mean_curve(c) for m, c in coverage.items()},
    }


def _mean_curve(curves: list[list[dict]]) -> list[dict]:
    return [
        {"threshold": pts[0]["threshold"], "coverage": float(np.mean([p["coverage"] for p in pts])),
         "accuracy": float(np.nanmean([p["accuracy"] for p in pts]))}
        for pts in zip(*curves)
    ]  # fmt: skip


def decision_lines(d: dict | None) -> list[str]:
    """The study report's section."""
    if not d:
        return []
    lines = [
        "", "## What the decision policy would do on Test", "",
        f"Of {d['test_images']} Test images, the input gate refuses {d['refused']} "
        f"({', '.join(f'{k} {v}' for k, v in d['refused_reasons'].items()) or 'none'}), and {d['doubtful_lungs']} have "
        f"doubtful lungs (flagged, or an estimated mask Dice under {MIN_DICE_ESTIMATE}): in masked modes those are "
        "answered with a flag, abstained on, or answered by the raw classifier, as `--on-doubtful` says.",
    ]  # fmt: skip
    lines += [f"- refused `{Path(p).name}`: {why}" for p, why in d["refused_examples"]]
    lines += [f"- doubtful `{Path(p).name}`: {why}" for p, why in d["doubtful_examples"]]
    if d["coverage"]:
        first = next(iter(d["coverage"].values()))
        lines += ["", "Abstaining below a confidence (`--abstain-below`): share of Test answered / accuracy on it, mean "
                  "over seeds:", "", "| mode | " + " | ".join(f">= {p['threshold']:.2f}" for p in first) + " |",
                  "|---" * (len(first) + 1) + "|"]  # fmt: skip
        for mode, curve in d["coverage"].items():
            lines.append(f"| {mode} | " + " | ".join(f"{p['coverage']:.2f} / {p['accuracy']:.3f}" for p in curve) + " |")
    return lines
