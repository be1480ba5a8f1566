"""Explain one prediction with Grad-CAM: a heat-map overlay and the share of it that falls on the lungs.

    python examples/03_explain_one_image.py lungcls-demo/bundle scan.png --out scan_gradcam.png

Research use only.
"""

import argparse
from pathlib import Path

import cv2

from lungcls import Pipeline
from lungcls.explain import heatmap_overlay

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("bundle", type=Path)
parser.add_argument("image", type=Path)
parser.add_argument("--out", type=Path, required=True)
args = parser.parse_args()

pipe = Pipeline.load(args.bundle)
prediction = pipe.predict(args.image)[0]
explanation = pipe.explain(args.image)[0]
cv2.imwrite(str(args.out), heatmap_overlay(explanation["input"], explanation["cam"], explanation["lung"]))
print(f"{args.image.name}: {prediction.label} " + ", ".join(f"{k} {v:.3f}" for k, v in prediction.probs.items()))
print(f"share of the Grad-CAM map inside the lungs: {explanation['in_lung_share']:.3f}; overlay written to {args.out}")
