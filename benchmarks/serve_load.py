"""A bounded load test of ``lungcls serve`` on 127.0.0.1: many concurrent clients for a fixed time, a mix of good and
bad files; every good answer is checked against the same bundle run in this process, every bad one for its 4xx.

    python benchmarks/serve_load.py ../shared/data --out benchmarks/results/serve_load [--model BUNDLE]
        [--clients 50] [--seconds 60] [--device cpu]

Without ``--model`` it serves a bundle made here from the built-in lung segmenter and an untrained ResNet-18 (masked
and raw): the figures measure the server and the models' cost, not any accuracy. Reports requests/s, images/s,
latency p50 / p99 of the good requests, answers by kind of file and status, the server's batches, and whether the
server was still up at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine

from lungcls.atomic import write_json, write_text


def make_bundle(out: Path) -> Path:
    """The built-in lung segmenter with untrained ResNet-18 classifiers (masked, and raw beside it)."""
    import torch

    from lungcls import Pipeline
    from lungcls.cls.classifier import Classifier
    from lungcls.config import ClassifierConfig
    from lungcls.models.classifiers import build_classifier
    from lungcls.seg.segmenter import Segmenter

    def untrained(mode: str) -> Classifier:
        torch.manual_seed(0)
        cfg = ClassifierConfig(arch="resnet18", image_size=224, mode=mode)
        return Classifier(build_classifier(cfg), cfg, device="cpu")

    Pipeline(Segmenter.load(device="cpu", target="lungs"), untrained("masked"), raw=untrained("raw")).save(out)
    return out


def bad_files(good: bytes) -> dict[str, tuple[bytes, int]]:
    """{kind: (bytes, the status it must get)}."""
    from PIL import Image

    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, format="PNG")
    return {"empty": (b"", 422), "not an image": (b"plain text, no pixels\n" * 50, 422),
            "truncated": (good[: len(good) // 3], 422), "decompression bomb": (bomb.getvalue(), 422),
            "over the size limit": (b"\0" * (3 * 2**20), 413)}  # fmt: skip


async def client(url: str, until: float, good: list[tuple[str, bytes]], bad: dict, expected: dict, log: list, rng):
    import httpx

    async with httpx.AsyncClient(timeout=300) as http:
        while time.monotonic() < until:
            if rng.random() < 0.8:
                name, data = good[rng.randrange(len(good))]
                kind, want = "good CXR", 200
            else:
                kind = rng.choice(sorted(bad))
                name, (data, want) = f"{kind}.png", bad[kind]
            t0 = time.monotonic()
            try:
                r = await http.post(url + "/v1/predict", files=[("files", (name, data, "image/png"))])
                status, body = (
                    r.status_code,
                    (r.json() if r.headers.get("content-type", "").startswith("application/json") else {}),
                )
            except Exception as e:  # a dropped connection counts, by its type
                status, body = type(e).__name__, {}
            took = time.monotonic() - t0
            right = status == want
            if right and kind == "good CXR":
                got = body["results"][0]
                ref = expected[name]
                right = got["predicted"] == ref["predicted"] and abs(got["p_Normal"] - ref["p_Normal"]) < 1e-3
            log.append((kind, status, took, right))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import tempfile

    from lungcls import Pipeline

    work = Path(tempfile.mkdtemp())
    bundle = args.model or make_bundle(work / "bundle")
    base = (
        args.data
        / "covidqu-infseg"
        / "COVID-QU-Ex Dataset"
        / "Infection Segmentation Data"
        / "Infection Segmentation Data"
    )
    files = [
        p for c in ("COVID-19", "Non-COVID", "Normal") for p in sorted((base / "Val" / c / "images").iterdir())[:8]
    ]
    good = [(p.name, p.read_bytes()) for p in files]
    pipe = Pipeline.load(bundle, device=args.device)
    expected = {p.name: {"predicted": r.label, "p_Normal": r.probs.get("Normal", float("nan"))}
                for p, r in zip(files, pipe.predict(files))}  # fmt: skip
    del pipe
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "lungcls", "serve", "--model", str(bundle), "--port", str(port), "--device",
           args.device, "--max-upload-mb", "2"]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(600):
        try:
            if httpx.get(url + "/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    log: list = []
    rng = random.Random(0)
    t0 = time.monotonic()

    async def run():
        until = time.monotonic() + args.seconds
        bad = bad_files(good[0][1])
        await asyncio.gather(*[client(url, until, good, bad, expected, log, random.Random(rng.random()))
                               for _ in range(args.clients)])  # fmt: skip

    asyncio.run(run())
    wall = time.monotonic() - t0
    alive = server.poll() is None and httpx.get(url + "/healthz").status_code == 200
    server.terminate()
    server.wait(30)
    summary = summarise(log, wall, args, alive, cmd)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", summary)
    text = report(summary)
    write_text(args.out / "report.md", text)
    print(text)


def summarise(log: list, wall: float, args, alive: bool, cmd: list[str]) -> dict:
    good = [x for x in log if x[0] == "good CXR"]
    lat = np.array([x[2] for x in good if x[1] == 200]) if good else np.array([np.nan])
    by_kind = {}
    for kind in sorted({x[0] for x in log}):
        rows = [x for x in log if x[0] == kind]
        by_kind[kind] = {"requests": len(rows), "statuses": dict(Counter(str(x[1]) for x in rows)),
                         "as_expected": sum(x[3] for x in rows)}  # fmt: skip
    return {"clients": args.clients, "seconds": round(wall, 1), "requests": len(log),
            "requests_per_s": round(len(log) / wall, 2), "good_images_per_s": round(len(lat) / wall, 2),
            "latency_good_s": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                               "max": float(lat.max())},
            "all_as_expected": all(x[3] for x in log), "by_kind": by_kind, "server_up_at_end": alive,
            "device": args.device, "machine": machine(), "server_command": " ".join(cmd[1:]),
            "command": " ".join(sys.argv)}  # fmt: skip


def report(s: dict) -> str:
    lines = ["# lungcls serve under load", "",
             f"{s['clients']} concurrent clients for {s['seconds']} s on 127.0.0.1, 80% good CXRs (24 covidqu-infseg "
             f"Val images), 20% bad files; device {s['device']}.", "",
             f"- {s['requests']} requests, **{s['requests_per_s']} requests/s**, {s['good_images_per_s']} good "
             f"images/s; latency of good requests p50 **{s['latency_good_s']['p50']:.2f} s**, p99 "
             f"**{s['latency_good_s']['p99']:.2f} s** (max {s['latency_good_s']['max']:.2f} s).",
             f"- Every answer as expected (good: same class and probabilities as the bundle run alone; bad: its 4xx): "
             f"**{s['all_as_expected']}**; server up at the end: **{s['server_up_at_end']}**.", "",
             "| kind of file | requests | statuses | as expected |", "|---|---|---|---|"]  # fmt: skip
    for kind, r in s["by_kind"].items():
        lines.append(f"| {kind} | {r['requests']} | {r['statuses']} | {r['as_expected']} |")
    lines += ["", f"Command: `{s['command']}` (server: `lungcls {s['server_command'].split('lungcls ', 1)[-1]}`) on "
              f"{s['machine']['cpu']}, {s['machine']['cpu_count']} cores (GPU: {s['machine']['gpu'] or 'none'}); the "
              "clients ran on the same cores."]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
