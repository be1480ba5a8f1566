"""The input gate as a detector: real CXRs from every shared set against pictures that are not frontal CXRs.

CXRs: covidqu-infseg's Test images (the built-in models never saw them) and every image of the other shared sets
(ieee8023-originals as its original files: JPEG and PNG, colour modes, 255-4095 px). Not CXRs: scikit-image's
sample pictures (photographs, a scanned page, text, a CT-like phantom, micrographs...), synthetic documents, noise,
gradients and blank frames, and CXRs made wrong: inverted, turned by 90 / 180 / 270 degrees, and crops of a single
lung. Reports the AUROC of the gate's score (not-a-CXR as positive), the false-rejection rate on each CXR set, the
refusal rate on each kind of non-CXR, and the reasons given.

    python benchmarks/input_gate.py ../shared/data --out benchmarks/results/input_gate
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402

from lungcls.atomic import write_json, write_text  # noqa: E402
from lungcls.data import open_dataset  # noqa: E402
from lungcls.gate import InputGate, as_numpy  # noqa: E402
from lungcls.plots import save_figure  # noqa: E402
from lungcls.reader import read_images  # noqa: E402
from lungcls.seg.detector import auroc  # noqa: E402

SHARED = ("nih-cxr8", "covid19-radiography", "ieee8023-radiologist100", "ieee8023-v7labs427", "ieee8023-originals")
ROTATIONS = {"rotated-90": cv2.ROTATE_90_CLOCKWISE, "rotated-180": cv2.ROTATE_180, "rotated-270": cv2.ROTATE_90_COUNTERCLOCKWISE}


def cxr_sets(root: Path, gate: InputGate) -> dict[str, list[Path]]:
    """{set: image files}: covidqu-infseg's images the gate's segmenter never saw, and every shared set's."""
    seen = gate.segmenter.seen_images
    out = {}
    infseg = open_dataset([root / "covidqu-infseg"]).manifest
    from lungcls.reader import decode_image

    out["covidqu-infseg (unseen)"] = [Path(s.image) for s in infseg if decode_image(s.image).content_hash not in seen]
    for name in SHARED:
        if (root / name).is_dir():
            out[name] = [Path(s.image) for s in open_dataset([root / name]).manifest]
    return out


def non_cxrs(folder: Path, cxrs: list[Path], rng: np.random.Generator, n_made: int = 40) -> dict[str, list[Path]]:
    """{kind: picture files} written into ``folder`` (the skimage pictures are read where they are)."""
    import skimage.data

    shipped = sorted(p for p in Path(skimage.data.__file__).parent.iterdir() if p.suffix in (".png", ".jpg", ".gif"))
    kinds: dict[str, list[Path]] = {"skimage pictures": shipped}

    def put(kind: str, k: int, image: np.ndarray) -> None:
        path = folder / kind / f"{k:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
        kinds.setdefault(kind, []).append(path)

    for k in range(n_made):
        page = np.full((1100, 850), 245, np.uint8)
        for line in range(int(rng.integers(15, 35))):
            words = " ".join("".join(chr(int(c)) for c in rng.integers(97, 123, rng.integers(2, 9))) for _ in range(8))
            cv2.putText(page, words, (60, 80 + 28 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.7, 20, 1, cv2.LINE_AA)
        put("documents", k, page)
        put("noise", k, rng.integers(0, 256, (256, 256), dtype=np.uint8) if k % 2 else
            np.clip(rng.normal(128, 40, (256, 256)), 0, 255).astype(np.uint8))  # fmt: skip
        ramp = np.linspace(0, 255, 256)
        put("gradients", k, (np.add.outer(ramp * np.cos(k), ramp * np.sin(k)) % 256).astype(np.uint8))
    for k, v in enumerate((0, 255, 128)):
        put("blank frames", k, np.full((256, 256), v, np.uint8))
    picked = [cxrs[i] for i in rng.choice(len(cxrs), size=min(n_made, len(cxrs)), replace=False)]
    for k, p in enumerate(picked):
        image = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        put("inverted CXRs", k, 255 - image)
        for name, code in ROTATIONS.items():
            put(name.replace("rotated", "CXRs rotated"), k, cv2.rotate(image, code))
        mask = cv2.imread(str(p.parents[1] / "lung masks" / p.name), cv2.IMREAD_GRAYSCALE)
        half = slice(0, image.shape[1] // 2) if k % 2 else slice(image.shape[1] // 2, None)
        ys, xs = np.nonzero(mask[:, half])
        if len(xs):
            x0 = xs.min() + (0 if k % 2 else image.shape[1] // 2)
            put("single-lung crops", k, image[max(0, ys.min() - 8) : ys.max() + 8, max(0, x0 - 8) : x0 + int(np.ptp(xs)) + 8])
    return kinds


def run_gate(gate: InputGate, files: list[Path], batch: int = 64) -> list:
    """The gate's verdicts on files, read as every command reads them (colour share and native size kept)."""
    verdicts = []
    for start in range(0, len(files), batch):
        read = read_images(files[start : start + batch])
        verdicts += gate.check(torch.from_numpy(read.images)[:, None], read.colours, read.sizes)
    return verdicts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--segmenter", default="unet-r18-covidqu", help="the lung segmenter whose gate is evaluated")
    args = ap.parse_args()
    t0 = time.perf_counter()
    gate = InputGate.load(args.segmenter, device="cpu")
    cxr = cxr_sets(args.data, gate)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        made = non_cxrs(Path(tmp), cxr["covidqu-infseg (unseen)"], rng)
        results = {f"CXR: {k}": run_gate(gate, v) for k, v in cxr.items()}
        results |= {f"not a CXR: {k}": run_gate(gate, v) for k, v in made.items()}
        examples = {k: [(p.name, v.why()) for p, v in zip(made[k], results[f"not a CXR: {k}"])][:3] for k in made}
    rows, scores, truth = [], [], []
    for name, verdicts in results.items():
        a = as_numpy(verdicts)
        reasons = Counter(r for v in verdicts for r in v.reasons)
        rows.append({"set": name, "images": len(verdicts), "refused": float(1 - a["accepted"].mean()),
                     "reasons": dict(reasons.most_common())})  # fmt: skip
        scores += list(a["score"])
        truth += [name.startswith("not")] * len(verdicts)
    scores, truth = np.array(scores), np.array(truth)
    cxr_refused = 1 - np.mean([v.accepted for k, vs in results.items() if k.startswith("CXR") for v in vs])
    summary = {"auroc": auroc(scores, truth), "false_rejection_all_cxrs": float(cxr_refused),
               "refusal_all_non_cxrs": float(np.mean(~np.array([v.accepted for k, vs in results.items() if k.startswith("not") for v in vs]))),
               "threshold": gate.cfg.threshold, "rows": rows, "examples": examples, "machine": machine(),
               "command": " ".join(sys.argv), "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", summary)
    save_figure(score_figure(results, gate.cfg.threshold), args.out / "scores.png")
    text = report(summary)
    write_text(args.out / "report.md", text)
    with open(args.out / "rates.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["set", "images", "refused"])
        w.writerows([[r["set"], r["images"], round(r["refused"], 4)] for r in rows])
    print(text)


def report(s: dict) -> str:
    lines = ["# The input gate as a detector", "",
             f"AUROC of the gate's score, not-a-CXR against CXR: **{s['auroc']:.4f}**. False rejections over all "
             f"real CXRs: **{s['false_rejection_all_cxrs']:.2%}** (target <= 1%). Refused non-CXRs: "
             f"{s['refusal_all_non_cxrs']:.2%}. Threshold on the distance: {s['threshold']:.2f}.", "",
             "| set | images | refused | reasons (count) |", "|---|---|---|---|"]  # fmt: skip
    for r in s["rows"]:
        reasons = ", ".join(f"{k} {v}" for k, v in r["reasons"].items()) or "-"
        lines.append(f"| {r['set']} | {r['images']} | {r['refused']:.2%} | {reasons} |")
    lines += ["", "Examples of what the gate says:", ""]
    for kind, ex in s["examples"].items():
        lines += [f"- {kind}: " + "; ".join(f"`{n}`: {why or 'accepted'}" for n, why in ex)]
    lines += ["", f"Command: `{s['command']}`; {s['seconds']} s on {s['machine']['cpu']} (GPU: "
              f"{s['machine']['gpu'] or 'none'}).", "",
              "No lateral views and no children are in the data: the gate's behaviour on them is not known."]  # fmt: skip
    return "\n".join(lines) + "\n"


def score_figure(results: dict, threshold: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 0.35 * len(results) + 1.5))
    ax = fig.subplots()
    names = list(results)
    for k, name in enumerate(names):
        v = np.clip([x.score for x in results[name]], 0, 6)
        ax.scatter(v, np.full(len(v), k) + np.random.default_rng(k).uniform(-0.25, 0.25, len(v)), s=4,
                   color="tab:green" if name.startswith("CXR") else "tab:red")  # fmt: skip
    ax.axvline(1.0, color="k", lw=1)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("gate score (distance / threshold + one per other reason; capped at 6); refused above 1")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
