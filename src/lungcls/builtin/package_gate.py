"""Calibrate the input gate (:mod:`lungcls.gate`) of the built-in lung segmenter: the threshold on its feature
distance, the 99.5th percentile over the Val images of its own split, written as the ``gate`` section of its
``config.json`` and as a section of its model card. Nothing else is fitted: the distance reads the running
statistics of the segmenter's own batch-norm layers.

    python -m lungcls.builtin.package_gate --cache CACHE

``CACHE`` is a packed cache of the segmenter's split (``scripts/builtin_gate.sh`` makes it). A lung segmenter that
``lungcls train-seg`` trains gets its gate the same way when its training ends. Not imported by lungcls at run time.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import torch

from .. import builtin
from ..atomic import write_json, write_text
from ..data.cache import PackedCache
from ..gate import calibrate
from ..seg.segmenter import Segmenter

#: the model card's section on the gate, replaced on each calibration
HEADING = "## Input gate"


def package_gate(cache: PackedCache, name: str = builtin.DEFAULT) -> dict:
    """Calibrate the gate of built-in segmenter ``name`` on its Val images found in ``cache``; returns the section."""
    seg = Segmenter.load(name, device="cpu", target="lungs")
    wanted = set((seg.images or {}).get("Val", []))
    rows = np.array([r for r in cache.indices("Val") if not wanted or cache.hashes[r] in wanted])
    gate = calibrate(seg, torch.from_numpy(np.asarray(cache.images[rows]))[:, None])
    if gate is None:
        raise SystemExit(f"{name}: no batch-norm layers in its decoder, or no Val images in {cache.path}")
    folder = Path(str(builtin.folder(name)))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    write_json(folder / "config.json", config | {"gate": gate})
    card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    card = re.sub(rf"\n{HEADING}\n.*?(?=\n## |\Z)", "", card, flags=re.S).rstrip("\n") + "\n\n" + section(gate)
    write_text(folder / "MODEL_CARD.md", card)
    return gate


def section(gate: dict) -> str:
    """The model card's section on the gate (its evaluation is in benchmarks/results/input_gate)."""
    f = gate["fitted"]
    return "\n".join([
        HEADING, "",
        "Before either stage, `lungcls.gate` answers whether a picture is a frontal adult chest X-ray like this "
        "segmenter's training images, and why not: blank, colour, aspect, no lung fields, inverted, rotated, unlike "
        "the training CXRs.", "",
        "- Distance: per batch-norm layer of the decoder, the activations' mean and spread over the picture against "
        "the layer's running statistics from training (no other fitted statistics); threshold "
        f"{gate['threshold']:.3f}, the {f['quantile']}th percentile on {f['val_images']} Val images (median "
        f"{f['median']:.3f}, largest {f['max']:.3f}); reproduced by `bash scripts/builtin_gate.sh`.",
        f"- Colour: more than {gate['max_colour']:.0%} coloured pixels; aspect outside {gate['aspect'][0]}-"
        f"{gate['aspect'][1]} (width / height); blank: grey-level spread under {gate['min_std']}; clear lungs: mean "
        f"lung probability {gate['min_clear']} and no flags.",
        "- Evaluated by `python benchmarks/input_gate.py ../shared/data --out benchmarks/results/input_gate` "
        "(`benchmarks/results/input_gate/report.md`).",
        "- The data holds no lateral views and no children: the gate was not tested on them and claims nothing about "
        "them. A CXR from a population or device unlike COVID-QU-Ex's sources can be refused as "
        "`unlike-training-cxrs`; the false-rejection rate per set is in the evaluation.",
    ]) + "\n"  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--segmenter", default=builtin.DEFAULT)
    args = ap.parse_args()
    print(package_gate(PackedCache.open(args.cache), args.segmenter))


if __name__ == "__main__":
    main()
