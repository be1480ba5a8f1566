"""How long the command line takes before it does anything: ``lungcls --help``, the start-up of ``lungcls segment``
(a new process until the built-in segmenter is loaded and ready), and one image through ``lungcls segment`` end to
end (start-up, the image, the files, and the interpreter's exit), each the median of several fresh processes.

    python benchmarks/startup.py [--repeats 5]

Targets (issue 21, on 2 idle cores): ``--help`` under 1 s, ``segment`` start-up under 5 s. The load average at
the start is recorded: on a busy machine the figures mean little.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

READY = """
import time
from lungcls.cli import app
from lungcls.outputs import segment_files
from lungcls.seg.segmenter import Segmenter
Segmenter.load(device="cpu")
print("ready", flush=True)
"""


def lungcls_command() -> list[str]:
    """The ``lungcls`` console script beside this Python, else ``python -m lungcls``."""
    script = Path(sys.executable).parent / "lungcls"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "lungcls"]


def wall(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, timeout=300)
    return time.perf_counter() - t0


def until_ready(cwd: Path) -> float:
    """Seconds from launching a fresh interpreter until it has imported the command line and loaded the segmenter."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", READY], cwd=cwd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    ready = time.perf_counter() - t0
    proc.wait(timeout=300)
    if line.strip() != "ready":
        raise SystemExit(f"the probe did not get ready: {line!r}")
    return ready


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args()
    import cv2
    import numpy as np

    from lungcls.data.phantoms import make_phantom

    load = os.getloadavg()[0]
    lungcls = lungcls_command()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cv2.imwrite(str(tmp / "scan.png"), make_phantom(np.random.default_rng(0), 0, 256)[0])
        wall(lungcls + ["--help"], tmp)  # warm the file cache once
        times = {
            "help_s": [wall(lungcls + ["--help"], tmp) for _ in range(args.repeats)],
            "segment_startup_s": [until_ready(tmp) for _ in range(args.repeats)],
            "segment_one_image_s": [
                wall(lungcls + ["segment", "scan.png", "--out", f"o{k}", "--cpu", "-q"], tmp)
                for k in range(args.repeats)
            ],  # fmt: skip
        }
    medians = {k: statistics.median(v) for k, v in times.items()}
    table = "\n".join([
        "| what | median of %d fresh processes | each run | target |" % args.repeats, "|---|---|---|---|",
        f"| `lungcls --help` | {medians['help_s']:.2f} s | {', '.join(f'{t:.2f}' for t in times['help_s'])} | < 1 s |",
        f"| `lungcls segment` start-up (launch to a loaded built-in segmenter) | {medians['segment_startup_s']:.2f} s | "
        f"{', '.join(f'{t:.2f}' for t in times['segment_startup_s'])} | < 5 s |",
        f"| `lungcls segment scan.png` end to end (start-up, one image, files, exit) | "
        f"{medians['segment_one_image_s']:.2f} s | {', '.join(f'{t:.2f}' for t in times['segment_one_image_s'])} | - |",
        "", f"Load average (1 min) at the start: {load:.2f} on {os.cpu_count()} cores.",
    ])  # fmt: skip
    write_results("startup_cpu", {"times": times, "medians": medians, "load_average": load}, table, args.out)
    print(table)


if __name__ == "__main__":
    main()
