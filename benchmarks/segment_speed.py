"""Images/s of ``lungcls segment`` with the built-in model (files in, masks out), beside a naive baseline.

lungcls: :func:`lungcls.outputs.segment_files` (the ``lungcls segment`` command without its start-up):
decode each file once, batches of the working size, the U-Net channels_last, post-processing (largest
components, holes filled, quality flags), and ``segment.csv`` with the masks (``--masks-only``) or with
masks, outline overlays and lung crops (the default). Naive: a notebook loop over the same files with
the same weights: read, resize, one image per fp32 NCHW forward, threshold, write the mask (masks only).

    python benchmarks/segment_speed.py [--data DIR...] [--images 200] [--device cpu]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_root, write_results  # noqa: E402

from lungcls import builtin  # noqa: E402
from lungcls.data import open_dataset  # noqa: E402
from lungcls.outputs import segment_files  # noqa: E402
from lungcls.seg.segmenter import Segmenter  # noqa: E402


def naive(paths: list[Path], segmenter: Segmenter, out: Path) -> None:
    """The plain loop a notebook would write, with the same network (a float32 NCHW copy)."""
    import copy

    model = copy.deepcopy(segmenter.model).float().to(memory_format=torch.contiguous_format).eval()
    cfg = segmenter.cfg
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        for p in paths:
            image = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
            small = cv2.resize(image, (cfg.image_size, cfg.image_size), interpolation=cv2.INTER_AREA)
            x = (torch.from_numpy(small).float()[None, None] / 255 - cfg.mean) / cfg.std
            prob = torch.sigmoid(model(x))[0, 0].numpy()
            mask = cv2.resize(prob, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR) > 0.5
            cv2.imwrite(str(out / f"{p.stem}.png"), mask.astype(np.uint8) * 255)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", nargs="*", type=Path, help="sets to take images from (default: nih-cxr8, covid19-radiography)"
    )
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2, help="timed passes (the best is reported)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    roots = args.data or [data_root() / "nih-cxr8", data_root() / "covid19-radiography"]
    samples = open_dataset(roots).manifest.samples
    paths = [Path(s.image) for s in samples[:: max(1, len(samples) // args.images)][: args.images]]
    segmenter = Segmenter.load(builtin.DEFAULT, device=args.device)
    runs = {"lungcls": lambda o: segment_files(paths, segmenter, o, progress=False),
            "lungcls_masks_only": lambda o: segment_files(paths, segmenter, o, progress=False, masks_only=True),
            "naive": lambda o: naive(paths, segmenter, o)}  # fmt: skip
    rates = {k: [] for k in runs}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, run in runs.items():
                out = Path(tmp) / name
                t0 = time.perf_counter()
                run(out)
                rates[name].append(len(paths) / (time.perf_counter() - t0))
                shutil.rmtree(out)
    best = {k: max(v) for k, v in rates.items()}
    threads = torch.get_num_threads()
    table = (
        "| path | images/s | writes |\n|---|---|---|\n"
        f"| `lungcls segment` (built-in `{builtin.DEFAULT}`, batches of {segmenter.batch_size}) | {best['lungcls']:.1f} | "
        "masks, outline overlays, lung crops, segment.csv |\n"
        f"| `lungcls segment --masks-only` | {best['lungcls_masks_only']:.1f} | masks, segment.csv |\n"
        f"| naive loop (same weights, one image per fp32 NCHW forward, threshold only) | {best['naive']:.1f} | masks only |\n"
        f"| `--masks-only` / naive | {best['lungcls_masks_only'] / best['naive']:.2f}x | |\n\n"
        f"{len(paths)} real CXR files ({', '.join(r.name for r in roots)}), decoded from PNG each pass; "
        f"{args.device}, {threads} threads; best of {args.repeats} passes."
    )
    print(table)
    write_results(f"segment_{torch.device(args.device).type}", {"images": len(paths), "device": args.device,
                  "threads": threads, "img_s": best, "passes": rates, "model": builtin.DEFAULT}, table, args.out)  # fmt: skip


if __name__ == "__main__":
    main()
