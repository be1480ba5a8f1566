"""Segment and classify every image in a folder with a saved bundle; write masks, overlays, crops and a CSV.

    python examples/02_segment_and_classify_folder.py lungcls-demo/bundle scans/ --out results/

Each file is read and segmented once. Unreadable files are listed in the CSV with the reason; the
rest go on. Research use only.
"""

import argparse
from pathlib import Path

from lungcls import Pipeline
from lungcls.input_paths import expand_inputs
from lungcls.outputs import predict_files, prediction_fields, write_csv

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("bundle", type=Path)
parser.add_argument("folder", type=Path)
parser.add_argument("--out", type=Path, required=True)
args = parser.parse_args()

pipe = Pipeline.load(args.bundle)
found = expand_inputs([args.folder])
rows = predict_files(found.paths, pipe, segment_dir=args.out / "segmentation")  # masks/, overlays/, crops/
write_csv(args.out / "predictions.csv", rows, prediction_fields(pipe.class_names))
for r in rows:
    print(f"{Path(r['path']).name}: {r['error'] or r['predicted']} {r.get('flags') or ''}".rstrip())
for s in found.skipped:
    print(f"skipped {s['path']}: {s['reason']}")
print(f"written to {args.out}")
