"""Train both stages on a dataset (a COVID-QU-Ex root, or any set lungcls reads) and save a bundle.

    python examples/01_train_pipeline.py "COVID-QU-Ex Dataset" --out runs/pipeline
    python examples/01_train_pipeline.py ../shared/data/ieee8023-radiologist100 --out runs/tiny --recipe cpu --epochs 2

Both stages use one split (made once, by patient, when the data has none). Research use only.
"""

import argparse
from pathlib import Path

from lungcls import Pipeline
from lungcls.recipes import classifier_recipe, segmenter_recipe

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("data", nargs="+", type=Path)
parser.add_argument("--out", type=Path, required=True)
parser.add_argument("--mode", default="masked", choices=["raw", "masked", "cropped", "masked-cropped"])
parser.add_argument("--recipe", default="default", choices=["default", "cpu", "demo"], help="see lungcls.recipes")
parser.add_argument("--epochs", type=int, default=None, help="epochs for both stages (default: the recipe's)")
args = parser.parse_args()

seg, seg_train = segmenter_recipe(args.recipe, epochs=args.epochs)
clf, cls_train = classifier_recipe(args.recipe, epochs=args.epochs)
pipe = Pipeline.train(args.data, args.out, args.mode, seg, seg_train, clf, cls_train)
print(f"saved {args.out / 'bundle'}: {pipe.mode} classifier, classes {pipe.class_names}")
test = pipe.reports.get("classifier_test") or pipe.reports["classifier_val"]
print(test.markdown())
