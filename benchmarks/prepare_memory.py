"""Peak memory of ``lungcls prepare`` for growing numbers of images: it must not grow with N.

Generates N synthetic 256 px CXR-like PNGs (two dark lung fields on noise, with masks) in a
temporary COVID-QU-Ex-style folder, runs ``python -m lungcls prepare`` on them in a subprocess,
and samples the resident memory (RSS) of that process and of its decoding workers every 20 ms.

    python benchmarks/prepare_memory.py [--counts 2000 20000] [--workers 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402


def make_images(root: Path, n: int, size: int = 256) -> None:
    images = root / "All" / "COVID-19" / "images"
    masks = root / "All" / "COVID-19" / "lung masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = np.zeros((size, size), np.uint8)
    for cx in (0.3, 0.7):
        cv2.ellipse(base, (int(cx * size), size // 2), (size // 7, size // 3), 0, 0, 360, 1, -1)
    for k in range(n):
        mask = np.roll(base, int(rng.integers(-8, 9)), axis=1)
        image = np.where(mask > 0, 70, 170).astype(np.int16) + rng.normal(0, 12, (size, size))
        cv2.imwrite(str(images / f"img ({k}).png"), np.clip(image, 0, 255).astype(np.uint8))
        cv2.imwrite(str(masks / f"img ({k}).png"), mask * 255)


def peak_rss(cmd: list[str]) -> tuple[float, float, float]:
    """Run ``cmd``; return (peak RSS of the main process, peak RSS of main + workers, seconds), MB."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ps = psutil.Process(proc.pid)
    main_peak = tree_peak = 0
    while proc.poll() is None:
        try:
            main = ps.memory_info().rss
            tree = main + sum(c.memory_info().rss for c in ps.children(recursive=True))
        except psutil.Error:
            continue
        main_peak, tree_peak = max(main_peak, main), max(tree_peak, tree)
        time.sleep(0.02)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}")
    return main_peak / 1e6, tree_peak / 1e6, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args()
    rows = []
    for n in args.counts:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            make_images(data, n)
            cmd = [
                sys.executable,
                "-m",
                "lungcls",
                "prepare",
                str(data),
                "--out",
                str(Path(tmp) / "cache"),
                "--workers",
                str(args.workers),
            ]
            main_mb, tree_mb, seconds = peak_rss(cmd)
            cache_mb = sum(f.stat().st_size for f in (Path(tmp) / "cache").rglob("*") if f.is_file()) / 1e6
        rows.append(
            {
                "images": n,
                "peak_rss_main_mb": main_mb,
                "peak_rss_with_workers_mb": tree_mb,
                "seconds": seconds,
                "images_per_s": n / seconds,
                "cache_mb": cache_mb,
            }
        )
        print(rows[-1], flush=True)
    table = "| images | cache size (MB) | peak RSS, main process (MB) | peak RSS, main + workers (MB) | time (s) | images/s |\n"
    table += "|---|---|---|---|---|---|\n"
    for r in rows:
        table += (
            f"| {r['images']:,} | {r['cache_mb']:,.0f} | {r['peak_rss_main_mb']:,.0f} | "
            f"{r['peak_rss_with_workers_mb']:,.0f} | {r['seconds']:.1f} | {r['images_per_s']:,.0f} |\n"
        )
    table += f"\nSynthetic 256 px PNGs with masks, {args.workers} decoding workers; RSS sampled every 20 ms."
    print(table)
    write_results("prepare_memory", {"workers": args.workers, "rows": rows}, table, args.out)


if __name__ == "__main__":
    main()
