"""Explain one prediction: a class-activation picture at the image's own size, and the share of the map
that falls on the lungs.

    python examples/03_explain_one_image.py lungcls-demo/bundle scan.png --out scan_gradcam.png [--method gradcam++]

Research use only.
"""

import argparse
from pathlib import Path

import cv2

from lungcls import Pipeline
from lungcls.explain import explanation_picture
from lungcls.reader import decode_image

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("bundle", type=Path)
parser.add_argument("image", type=Path)
parser.add_argument("--out", type=Path, required=True)
parser.add_argument("--method", default="gradcam", help="see lungcls.explain.CAM_METHODS")
args = parser.parse_args()

pipe = Pipeline.load(args.bundle)
prediction = pipe.predict(args.image)[0]
explanation = pipe.explain(args.image, method=args.method)[0]
caption = f"{prediction.label} {prediction.probs[prediction.label]:.2f}"
picture = explanation_picture(decode_image(args.image).pixels, explanation, pipe.size, prediction.mask, caption)
cv2.imwrite(str(args.out), picture)
print(f"{args.image.name}: {prediction.label} " + ", ".join(f"{k} {v:.3f}" for k, v in prediction.probs.items()))
print(f"share of the {args.method} map inside the lungs: {explanation['in_lung_share']:.3f}; picture written to {args.out}")
