"""Segment and classify every image in a folder with a saved bundle; write masks, overlays and a CSV.

    python examples/02_segment_and_classify_folder.py lungcls-demo/bundle scans/ --out results/

Unreadable files are listed in the CSV with the reason; the rest go on. Research use only.
"""

import argparse
from pathlib import Path

from lungcls import Pipeline
from lungcls.files import predict_files, write_rows_csv
from lungcls.inputs import expand_inputs
from lungcls.seg.outputs import segment_files

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("bundle", type=Path)
parser.add_argument("folder", type=Path)
parser.add_argument("--out", type=Path, required=True)
args = parser.parse_args()

pipe = Pipeline.load(args.bundle)
paths, problems = expand_inputs([args.folder])
segment_files(paths, pipe.segmenter, args.out / "segmentation")  # masks/, overlays/, crops/, segment.csv
rows = predict_files(paths, pipe)
write_rows_csv(args.out / "predictions.csv", rows, pipe.class_names)
for r in rows:
    print(f"{Path(r['path']).name}: {r['error'] or r['predicted']}")
print(f"written to {args.out}")
