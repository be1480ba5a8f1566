"""Fit the input gate (:mod:`lungcls.gate`) for a lung segmenter and write it as a built-in model: the mean and
shrunk precision matrix of its encoder features on the Train images of its own split, the distance threshold (the
99.5th percentile on its Val images), and a model card.

    python -m lungcls.builtin.package_gate --cache CACHE --out src/lungcls/builtin/gate-covidqu

``CACHE`` is a packed cache of the segmenter's split (``scripts/builtin_gate.sh`` makes it). Not imported by lungcls
at run time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from .. import builtin
from ..atomic import write_text
from ..config import to_dict
from ..data.cache import PackedCache
from ..gate import GateConfig, encoder_features, fit_distribution, mahalanobis
from ..runs import images_record
from ..seg.segmenter import Segmenter
from ..store import write_model

QUANTILE = 99.5


def package_gate(cache: PackedCache, out: Path, segmenter: str = builtin.DEFAULT) -> dict:
    """Fit and write the gate; returns its config."""
    seg = Segmenter.load(segmenter, device="cpu", target="lungs")
    seen = {s: set(seg.images.get(s, [])) for s in ("Train", "Val")} if seg.images else {}
    rows = {s: np.array([r for r in cache.indices(s) if not seen or cache.hashes[r] in seen[s]]) for s in ("Train", "Val")}

    def features(split: str) -> torch.Tensor:
        return encoder_features(seg, torch.from_numpy(np.asarray(cache.images[rows[split]]))[:, None])

    cfg = GateConfig()
    mean, precision = fit_distribution(features("Train"), cfg.shrinkage)
    val = mahalanobis(features("Val"), mean, precision).numpy()
    cfg.threshold = float(np.percentile(val, QUANTILE))
    config = {
        "kind": "gate",
        "gate": to_dict(cfg),
        "segmenter": {"name": segmenter, "sha256": seg.info["source"]["sha256"]},
        "fitted": {"train_images": len(rows["Train"]), "val_images": len(rows["Val"]), "quantile": QUANTILE,
                   "val_distance": {"median": float(np.median(val)), "max": float(val.max())}},  # fmt: skip
        "builtin": {"description": f"input gate for {segmenter}: is it a frontal CXR like its training images?",
                    "trained_on": f"{len(rows['Train'])} Train / {len(rows['Val'])} Val images of {segmenter}'s split"},
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    sha = write_model(out, config, {"mean": mean.float(), "precision": precision.float()},
                      images_record(cache, rows))  # fmt: skip
    write_text(out / "MODEL_CARD.md", card(out.name, config, sha))
    return config


def card(name: str, config: dict, sha: str) -> str:
    """The gate's card; its evaluation (AUROC, false rejections) is in benchmarks/results/input_gate.md."""
    g, f = config["gate"], config["fitted"]
    return "\n".join([
        f"# Built-in input gate `{name}`", "",
        "**Research use only. Not a diagnostic device.**", "",
        f"Answers, before either stage, whether a picture is a frontal adult chest X-ray like the training images of "
        f"`{config['segmenter']['name']}` (sha256 `{config['segmenter']['sha256'][:16]}`), and why not "
        "(`lungcls.gate`): blank, colour, aspect, no lung fields, inverted, rotated, unlike the training CXRs.", "",
        f"- Distance: Mahalanobis distance of the segmenter's encoder features (last two stages, averaged over the "
        f"picture) to their mean on {f['train_images']} Train images, covariance shrunk by {g['shrinkage']} towards "
        f"the identity; threshold {g['threshold']:.2f}, the {f['quantile']}th percentile on {f['val_images']} Val "
        f"images (median {f['val_distance']['median']:.2f}, largest {f['val_distance']['max']:.2f}).",
        f"- Colour: more than {g['max_colour']:.0%} coloured pixels; aspect outside {g['aspect'][0]}-{g['aspect'][1]} "
        f"(width / height); blank: grey-level spread under {g['min_std']}; clear lungs: mean lung probability "
        f"{g['min_clear']} and no flags.",
        f"- Weights sha256 `{sha[:16]}`; reproduced by `bash scripts/builtin_gate.sh`; evaluated by "
        "`python benchmarks/input_gate.py` (`benchmarks/results/input_gate.md`).", "",
        "## Limits", "",
        "- The data holds no lateral views and no children: the gate was not tested on them, and claims nothing "
        "about them.",
        "- A CXR from a population or device unlike COVID-QU-Ex's sources can be refused as `unlike-training-cxrs`; "
        "the false-rejection rate per set is in the evaluation.",
    ]) + "\n"  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--segmenter", default=builtin.DEFAULT)
    args = ap.parse_args()
    print(package_gate(PackedCache.open(args.cache), args.out, args.segmenter))


if __name__ == "__main__":
    main()
