"""Train both stages on a dataset (a COVID-QU-Ex root, or any set lungcls reads) and save a bundle.

    python examples/01_train_pipeline.py "COVID-QU-Ex Dataset" --out runs/pipeline
    python examples/01_train_pipeline.py ../shared/data/ieee8023-radiologist100 --out runs/tiny --small --epochs 2

Data without a Train/Val split is split by patient (seeded). Research use only.
"""

import argparse
from pathlib import Path

from lungcls import Pipeline
from lungcls.config import ClassifierConfig, SegmenterConfig, TrainConfig

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("data", nargs="+", type=Path)
parser.add_argument("--out", type=Path, required=True)
parser.add_argument("--mode", default="masked", choices=["raw", "masked", "cropped", "masked-cropped"])
parser.add_argument("--epochs", type=int, default=None, help="epochs for both stages (default: 40 / 80)")
parser.add_argument("--small", action="store_true", help="ResNet-18 models at 64 px: minutes on a CPU")
args = parser.parse_args()

if args.small:
    seg = SegmenterConfig(encoder_name="resnet18", encoder_depth=3, decoder_channels=[32, 16, 8], image_size=64)
    clf = ClassifierConfig(arch="resnet18", image_size=64)
else:
    seg, clf = SegmenterConfig(), ClassifierConfig()
seg_train = TrainConfig(epochs=args.epochs or 40, batch_size=16)
cls_train = TrainConfig(epochs=args.epochs or 80, batch_size=32, label_smoothing=0.1, class_weighting=True)

pipe = Pipeline.train(args.data, args.out, args.mode, seg, seg_train, clf, cls_train)
print(f"saved {args.out / 'bundle'}: {pipe.mode} classifier, classes {pipe.class_names}")
print((args.out / "classifier" / "eval_test.md").read_text())
