"""Images/s of lungcls's training and inference paths, each beside a naive baseline in the same run.

lungcls path: packed uint8 cache -> device (resident) -> augmentation and normalisation on the
device -> model in bf16 + channels_last on CUDA (fp32 on CPU) -> the shared engine ``fit``.
Naive baseline: a DataLoader decoding the PNG files every epoch -> fp32 NCHW model -> a plain loop.
Both train the same architecture on the same images with the same batch size.

Stages: ``seg`` (smp U-Net, 256 px), ``cls`` (ResNet-50, raw mode, 224 px input from 256 px images) and
``pipeline`` (the whole ``Pipeline.predict``; the baseline decodes PNGs and runs both fp32 models, masking only).
Results go to benchmarks/results/throughput_<device>.{json,md}. ``--cls-epoch-images 21715`` trains the
classifier on that many rows per epoch (the size of COVID-QU-Ex's train split; rows repeat), so its
epoch time is the "one epoch of COVID-QU-Ex train" figure. ``--profile`` also writes a torch.profiler
table per lungcls stage (``profile_<stage>.txt``: top ops by device time, and how busy the device was).
A stage that fails is reported as failed; the others still run.

    python benchmarks/throughput.py [--stages seg cls] [--images 512] [--epochs 3] [--batch-size 32] [--device cuda]
    python benchmarks/throughput.py --device cuda --compile --batch-size 64 --cls-batch-size 256 --cls-epoch-images 21715 --profile
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_root, write_results  # noqa: E402

from lungcls.cls.task import ClassificationTask  # noqa: E402
from lungcls.config import ClassifierConfig, SegmenterConfig, TrainConfig  # noqa: E402
from lungcls.data import Manifest, PackedCache, open_dataset, prepare_cache  # noqa: E402
from lungcls.data.dataset import ImageDataset  # noqa: E402
from lungcls.data.augment import DeviceAugment  # noqa: E402
from lungcls.data.loader import CacheLoader  # noqa: E402
from lungcls.engine.trainer import fit, seed_everything  # noqa: E402
from lungcls.models import build_classifier, build_segmenter  # noqa: E402
from lungcls.seg.segmenter import Segmenter  # noqa: E402
from lungcls.seg.task import SegmentationTask  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def naive_epochs(loader: DataLoader, step, epochs: int, device: torch.device) -> dict:
    """Run ``step(batch) -> images`` over ``loader`` for ``epochs``; images/s of the best epoch after the first."""
    rates = []
    reset_peak(device)
    for _ in range(epochs):
        sync(device)
        t0, n = time.perf_counter(), 0
        for batch in loader:
            n += step(batch)
        sync(device)
        rates.append(n / (time.perf_counter() - t0))
    return {"img_s": max(rates[1:] or rates), "per_epoch_img_s": rates, "peak_gpu_mb": peak_mb(device)}


def gpu_batch(training_batch: int, device: torch.device) -> int | None:
    """lungcls's inference batch: 4x the training batch on a GPU; on CPU the library's default (None)."""
    return training_batch * 4 if device.type == "cuda" else None


def timed_runs(run, images: int, repeats: int, device: torch.device) -> dict:
    """Images/s of ``run()`` (which processes ``images`` images) over ``repeats`` calls after one warm-up."""
    run()
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        run()
    sync(device)
    return {"img_s": images * repeats / (time.perf_counter() - t0), "peak_gpu_mb": peak_mb(device)}


def profile(name: str, fn, device: torch.device, out: Path | None) -> dict:
    """Run ``fn()`` under torch.profiler; write the top ops by device time to ``profile_<name>.txt``.

    A profiler failure is returned as ``{"error": ...}``: it never costs the stage its timing.
    """
    try:
        return _profile(name, fn, device, out)
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {str(e)[:300]}"}


def kernel_time_us(prof) -> float:
    """Microseconds in which at least one device kernel ran: the union of the kernels' intervals. (Summing the
    "self device time" of every profiler row counts kernel time twice: once on the kernel, once on the CPU op
    that launched it.)"""
    from torch.autograd import DeviceType

    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type == DeviceType.CUDA)
    busy, end = 0.0, float("-inf")
    for a, b in spans:
        if b > end:
            busy += b - max(a, end)
            end = b
    return busy


def _profile(name: str, fn, device: torch.device, out: Path | None) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    t0 = time.perf_counter()
    with torch_profile(activities=activities) as prof:
        fn()
        sync(device)
    wall_us = (time.perf_counter() - t0) * 1e6
    events = prof.key_averages()
    on_device = device.type == "cuda"
    key = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    busy = kernel_time_us(prof) if on_device else float("nan")
    table = events.table(sort_by=key if on_device else "self_cpu_time_total", row_limit=25)
    summary = {"wall_ms": wall_us / 1e3, "device_busy_ms": busy / 1e3 if on_device else None,
               "device_busy_share": busy / wall_us if on_device else None}  # fmt: skip
    folder = out or Path(__file__).resolve().parent / "results"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"profile_{name}.txt").write_text(f"{name}: {summary}\n\n{table}\n")
    return summary


def seg_train_lungcls(cache: PackedCache, cfg: SegmenterConfig, args, device: torch.device, run: Path) -> dict:
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=str(device), compile=args.compile)
    seed_everything(0)
    task = SegmentationTask(build_segmenter(cfg), cfg, device, DeviceAugment(), channels_last=True)
    if args.compile:
        task.model = torch.compile(task.model)
    loader = CacheLoader(cache, cache.indices(), args.batch_size, device, shuffle=True, drop_last=True)
    return train_and_time(task, loader, cache, train, args, device, run, "seg_train")


def train_and_time(
    task, loader: CacheLoader, cache: PackedCache, train: TrainConfig, args, device: torch.device, run: Path, name: str
) -> dict:
    """``fit`` for ``train.epochs``; images/s and seconds of the best epoch after the first (the warm-up)."""
    reset_peak(device)
    result = fit(task, loader, None, train, run, {"kind": "benchmark"}, progress=False)
    rates = [r["train_img_s"] for r in result.history]
    best = max(range(len(rates)), key=lambda k: (k > 0 or len(rates) == 1, rates[k]))
    out = {"img_s": rates[best], "epoch_seconds": result.history[best]["seconds"], "epoch_images": len(loader) * loader.batch_size,
           "first_epoch_seconds": result.history[0]["seconds"], "per_epoch_img_s": rates, "peak_gpu_mb": peak_mb(device)}  # fmt: skip
    if args.profile:
        few = CacheLoader(cache, np.resize(cache.indices(), 8 * loader.batch_size), loader.batch_size, device,
                          shuffle=True, drop_last=True, with_masks=loader.masks is not None)  # fmt: skip
        one = TrainConfig(**{**vars(train), "epochs": 1})
        out["profile"] = profile(name, lambda: fit(task, few, None, one, run / "profile", {"kind": "benchmark"}, progress=False),
                                 device, args.out)  # fmt: skip
    return out


def seg_train_naive(manifest: Manifest, cfg: SegmenterConfig, args, device: torch.device) -> dict:
    import segmentation_models_pytorch as smp

    seed_everything(0)
    model = build_segmenter(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dice, bce = smp.losses.DiceLoss("binary"), torch.nn.BCEWithLogitsLoss()
    data = ImageDataset(manifest, size=(cfg.image_size, cfg.image_size))
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers,
                        pin_memory=device.type == "cuda")  # fmt: skip

    def step(batch) -> int:
        x = (batch["image"].to(device).float() / 255 - 0.5) / 0.25
        y = batch["mask"].to(device).float()
        logits = model(x)
        loss = dice(logits, y) + bce(logits, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return x.shape[0]

    return naive_epochs(loader, step, args.epochs, device)


def seg_infer(cache: PackedCache, cfg: SegmenterConfig, args, device: torch.device, naive: bool) -> dict:
    seed_everything(0)
    model = build_segmenter(cfg)
    n = min(len(cache), args.images)
    images = torch.from_numpy(cache.images[:n].copy())[:, None].to(device)
    if naive:  # fp32, NCHW, no autocast
        model = model.to(device).eval()

        def run() -> None:
            with torch.no_grad():
                for chunk in images.split(args.batch_size):
                    torch.sigmoid(model((chunk.float() / 255 - 0.5) / 0.25))
    else:
        bs = gpu_batch(args.batch_size, device)
        segmenter = Segmenter(model, cfg, device=device, batch_size=bs, compile=args.compile)

        def run() -> None:
            segmenter.probabilities(images)

    return timed(run, n, args, device, None if naive else "seg_infer")


def timed(run, n: int, args, device: torch.device, name: str | None) -> dict:
    """:func:`timed_runs`, then a profile of one more run when ``--profile`` (lungcls stages only)."""
    out = timed_runs(run, n, args.repeats, device)
    if args.profile and name:
        out["profile"] = profile(name, run, device, args.out)
    return out


def cls_train_lungcls(cache: PackedCache, cfg: ClassifierConfig, args, device: torch.device, run: Path) -> dict:
    train = TrainConfig(
        epochs=args.epochs,
        batch_size=args.cls_batch_size,
        device=str(device),
        compile=args.compile,
        label_smoothing=0.1,
    )
    seed_everything(0)
    task = ClassificationTask(
        build_classifier(cfg), cfg, device, DeviceAugment(), channels_last=True, label_smoothing=0.1
    )
    if args.compile:
        task.model = torch.compile(task.model)
    rows = np.resize(cache.indices(), args.cls_epoch_images or len(cache))  # repeated up to the epoch size asked
    loader = CacheLoader(cache, rows, args.cls_batch_size, device, shuffle=True, drop_last=True, with_masks=False)
    return train_and_time(task, loader, cache, train, args, device, run, "cls_train")


def cls_train_plain(cache: PackedCache, cfg: ClassifierConfig, args, device: torch.device) -> dict:
    """The fair baseline: a plain loop over the same rows, already in memory on the device as uint8, bf16 autocast +
    channels_last on CUDA, AdamW (fused there), the same batch and epoch size; no augmentation, no engine, no compile."""
    seed_everything(0)
    fmt = torch.channels_last
    model = build_classifier(cfg).to(device, memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    rows = np.resize(cache.indices(), args.cls_epoch_images or len(cache))
    images = torch.from_numpy(np.asarray(cache.images[np.unique(rows)]))[:, None].to(device)
    where = {r: k for k, r in enumerate(np.unique(rows))}
    index = torch.tensor([where[r] for r in rows], device=device)
    labels = torch.from_numpy(cache.labels_for(cache.class_names)).to(device)[torch.from_numpy(rows).to(device)]
    bs = args.cls_batch_size
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    rates = []
    reset_peak(device)
    for epoch in range(args.epochs):
        order = torch.randperm(len(rows), device=device, generator=None)
        sync(device)
        t0 = time.perf_counter()
        for k in range(len(rows) // bs):
            pick = order[k * bs : (k + 1) * bs]
            x = images[index[pick]].float().div_(255)
            x = torch.nn.functional.interpolate(x, size=(cfg.image_size, cfg.image_size), mode="bilinear")
            x = ((x - cfg.mean) / cfg.std).contiguous(memory_format=fmt)
            with autocast:
                loss = torch.nn.functional.cross_entropy(model(x), labels[pick], label_smoothing=0.1)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        sync(device)
        rates.append((len(rows) // bs) * bs / (time.perf_counter() - t0))
    return {"img_s": max(rates[1:] or rates), "per_epoch_img_s": rates, "peak_gpu_mb": peak_mb(device)}


def cls_train_naive(manifest: Manifest, cfg: ClassifierConfig, args, device: torch.device) -> dict:
    seed_everything(0)
    model = build_classifier(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = ImageDataset(manifest, size=(cfg.image_size, cfg.image_size))  # decoded and resized to 224 by the workers
    loader = DataLoader(data, batch_size=args.cls_batch_size, shuffle=True, drop_last=True, num_workers=args.workers,
                        pin_memory=device.type == "cuda")  # fmt: skip

    def step(batch) -> int:
        x = (batch["image"].to(device).float() / 255 - cfg.mean) / cfg.std
        loss = torch.nn.functional.cross_entropy(model(x), batch["label"].to(device), label_smoothing=0.1)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return x.shape[0]

    return naive_epochs(loader, step, args.epochs, device)


def cls_infer(cache: PackedCache, cfg: ClassifierConfig, args, device: torch.device, naive: bool) -> dict:
    from lungcls.cls.classifier import Classifier

    seed_everything(0)
    n = min(len(cache), args.images)
    images = torch.from_numpy(cache.images[:n].copy())[:, None].to(device)
    if naive:  # fp32 NCHW, resized to 224 px per batch with interpolate (the same work as lungcls's crop step)
        model = build_classifier(cfg).to(device).eval()
        size = (cfg.image_size, cfg.image_size)

        def run() -> None:
            with torch.no_grad():
                for chunk in images.split(args.cls_batch_size):
                    small = torch.nn.functional.interpolate(chunk.float(), size=size, mode="bilinear")
                    torch.softmax(model((small / 255 - cfg.mean) / cfg.std), dim=1)
    else:
        bs = gpu_batch(args.cls_batch_size, device)
        clf = Classifier(build_classifier(cfg), cfg, device=device, batch_size=bs, compile=args.compile)

        def run() -> None:
            clf.probabilities(images)

    return timed(run, n, args, device, None if naive else "cls_infer")


def pipeline_predict(
    manifest: Manifest, cache: PackedCache, scfg: SegmenterConfig, ccfg: ClassifierConfig, args, device, naive: bool
) -> dict:
    """Whole pipeline, uint8 images in -> lung mask -> masked-cropped input -> class probabilities."""
    from lungcls.cls.classifier import Classifier
    from lungcls.pipeline import Pipeline

    seed_everything(0)
    n = min(len(cache), args.images)
    if naive:  # decode PNGs in a DataLoader, fp32 NCHW models, mask and resize per batch
        seg, clf = build_segmenter(scfg).to(device).eval(), build_classifier(ccfg).to(device).eval()
        data = ImageDataset(Manifest(manifest.samples[:n]), size=(scfg.image_size, scfg.image_size))

        def run() -> None:
            loader = DataLoader(data, batch_size=args.cls_batch_size, num_workers=args.workers)
            with torch.no_grad():
                for batch in loader:
                    x = batch["image"].to(device).float() / 255
                    mask = (torch.sigmoid(seg((x - scfg.mean) / scfg.std)) > 0.5).float()
                    small = torch.nn.functional.interpolate(
                        x * mask, size=(ccfg.image_size, ccfg.image_size), mode="bilinear"
                    )
                    torch.softmax(clf((small - ccfg.mean) / ccfg.std), dim=1)
    else:
        images = torch.from_numpy(cache.images[:n].copy())[:, None]
        bs = gpu_batch(args.cls_batch_size, device)
        segmenter = Segmenter(build_segmenter(scfg), scfg, device=device, batch_size=bs, compile=args.compile)
        classifier = Classifier(build_classifier(ccfg), ccfg, device=device, batch_size=bs, compile=args.compile)
        pipe = Pipeline(segmenter, classifier)

        def run() -> None:
            pipe.predict(images, masks=False)  # as the baseline: classes, fractions, boxes and flags; masks stay

    return timed(run, n, args, device, None if naive else "pipeline_predict")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stages", nargs="+", default=["seg", "cls", "pipeline"], choices=["seg", "cls", "pipeline"])
    p.add_argument("--data", nargs="*", type=Path, help="dataset roots (default: the two ieee8023 sets)")
    p.add_argument("--images", type=int, default=512, help="images used (repeated if the data has fewer)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cls-batch-size", type=int, default=64)
    p.add_argument("--cls-arch", default="resnet50")
    p.add_argument("--cls-image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5, help="inference passes timed")
    p.add_argument("--encoder", default="resnet34")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--compile", action="store_true", help="torch.compile lungcls's models (training and inference)")
    p.add_argument(
        "--cls-epoch-images",
        type=int,
        default=0,
        help="classifier training rows per epoch (repeats the images; 21715 = COVID-QU-Ex train)",
    )
    p.add_argument("--profile", action="store_true", help="write a torch.profiler table per lungcls stage")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    roots = args.data or [data_root() / "ieee8023-radiologist100", data_root() / "ieee8023-v7labs427"]
    manifest = open_dataset(roots).manifest
    manifest = Manifest([s for s in manifest if s.mask][: args.images])
    while len(manifest) < args.images:  # repeat small sets up to the requested count
        manifest = Manifest((manifest.samples * 2)[: args.images])
    cfg = SegmenterConfig(encoder_name=args.encoder, image_size=args.image_size)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        prepare_cache(manifest, Path(tmp) / "cache", size=(args.image_size, args.image_size), progress=False)
        cache = PackedCache.open(Path(tmp) / "cache")
        ccfg = ClassifierConfig(arch=args.cls_arch, image_size=args.cls_image_size)
        pcfg = ClassifierConfig(
            arch=args.cls_arch, image_size=args.cls_image_size, mode="masked-cropped", mask_source="predicted"
        )
        stages = {
            "seg": {
                "seg_train_lungcls": lambda: seg_train_lungcls(cache, cfg, args, device, Path(tmp) / "run"),
                "seg_train_naive": lambda: seg_train_naive(manifest, cfg, args, device),
                "seg_infer_lungcls": lambda: seg_infer(cache, cfg, args, device, naive=False),
                "seg_infer_naive": lambda: seg_infer(cache, cfg, args, device, naive=True),
            },
            "cls": {
                "cls_train_lungcls": lambda: cls_train_lungcls(cache, ccfg, args, device, Path(tmp) / "cls"),
                "cls_train_naive": lambda: cls_train_naive(manifest, ccfg, args, device),
                "cls_train_plain": lambda: cls_train_plain(cache, ccfg, args, device),
                "cls_infer_lungcls": lambda: cls_infer(cache, ccfg, args, device, naive=False),
                "cls_infer_naive": lambda: cls_infer(cache, ccfg, args, device, naive=True),
            },
            "pipeline": {
                "pipeline_predict_lungcls": lambda: pipeline_predict(manifest, cache, cfg, pcfg, args, device, False),
                "pipeline_predict_naive": lambda: pipeline_predict(manifest, cache, cfg, pcfg, args, device, True),
            },
        }
        for stage in args.stages:
            for key, measure in stages[stage].items():
                results[key] = run_stage(key, measure, args)
                report(results, args, device, manifest, roots)  # after every stage: a cut run keeps what it measured
    report(results, args, device, manifest, roots, echo=True)


def run_stage(key: str, measure, args) -> dict:
    """One measurement; a compiled lungcls stage that fails to compile is measured again without compiling."""
    t0 = time.perf_counter()
    try:
        result = measure()
    except Exception as e:  # noqa: BLE001 - one failed measurement must not lose the others
        result = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        if args.compile and key.endswith("_lungcls"):
            args.compile = False
            try:
                result = measure() | {"compile_error": result["error"]}
            except Exception as e2:  # noqa: BLE001
                result = {"error": f"{type(e2).__name__}: {str(e2)[:300]}", "compile_error": result["error"]}
            finally:
                args.compile = True
    print(f"{key}: {result} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return result


def report(
    results: dict, args, device: torch.device, manifest: Manifest, roots: list[Path], echo: bool = False
) -> None:
    """Write the JSON and the Markdown table of what has been measured so far."""
    precision = "bf16 + channels_last" if device.type == "cuda" else "fp32 + channels_last (CPU)"
    rows = [
        (f"U-Net training, {args.encoder}, {args.image_size} px", "seg_train"),
        (f"U-Net inference, {args.encoder}, {args.image_size} px", "seg_infer"),
        (f"{args.cls_arch} training, {args.cls_image_size} px", "cls_train"),
        (f"{args.cls_arch} inference, {args.cls_image_size} px", "cls_infer"),
        ("whole Pipeline.predict (uint8 -> mask -> masked-cropped -> class; masks=False)", "pipeline_predict"),
    ]
    table = (
        "| measure | lungcls img/s | naive img/s | speedup | peak GPU MB (lungcls / naive) |\n|---|---|---|---|---|\n"
    )
    for label, key in rows:
        a, b = results.get(f"{key}_lungcls"), results.get(f"{key}_naive", {"error": "not measured yet"})
        if a is None:
            continue
        if "error" in a or "error" in b:
            table += f"| {label} | {a.get('error') or a['img_s']} | {b.get('error') or b['img_s']} | failed | |\n"
            continue
        mem = f"{a['peak_gpu_mb']:.0f} / {b['peak_gpu_mb']:.0f}" if a["peak_gpu_mb"] is not None else "n/a (CPU)"
        eager = " (compile failed: eager)" if "compile_error" in a else ""
        table += (
            f"| {label}{eager} | {a['img_s']:,.1f} | {b['img_s']:,.1f} | {a['img_s'] / b['img_s']:.2f}x | {mem} |\n"
        )
    cls_train = results.get("cls_train_lungcls", {})
    if "epoch_seconds" in cls_train:
        table += (f"\nOne classifier training epoch of {cls_train['epoch_images']:,} images: "
                  f"{cls_train['epoch_seconds']:.2f} s (lungcls, best epoch after the first); the first epoch, "
                  f"{'compilation and ' if args.compile else ''}warm-up included: {cls_train['first_epoch_seconds']:.2f} s.\n")  # fmt: skip
    plain = results.get("cls_train_plain", {})
    if "img_s" in plain and "img_s" in cls_train:
        table += (f"\nFair baseline for {args.cls_arch} training (a plain loop on the same rows in device memory, "
                  f"{precision}, AdamW (fused on CUDA), same batch and epoch size, no augmentation, no compile): "
                  f"{plain['img_s']:,.1f} img/s; lungcls {cls_train['img_s'] / plain['img_s']:.2f}x of it.\n")  # fmt: skip
    profiled = {k: v["profile"] for k, v in results.items() if isinstance(v, dict) and "profile" in v}
    for k, v in profiled.items():
        if v.get("device_busy_share") is not None:
            table += f"\nProfile {k}: device busy {v['device_busy_share']:.0%} of {v['wall_ms']:.0f} ms (profile_{k.removesuffix('_lungcls')}.txt)."
    table += (f"\nlungcls: packed cache on {device.type}, device augmentation, {precision}"
              f"{', torch.compile' if args.compile else ''}; naive: PNG DataLoader ({args.workers} workers), fp32 NCHW. "
              f"{len(manifest)} real CXRs, batch {args.batch_size} (U-Net) / {args.cls_batch_size} (classifier), "
              f"best epoch of {args.epochs} (the first is warm-up).")  # fmt: skip
    if echo:
        print(table)
    write_results(f"throughput_{device.type}", {"settings": vars(args) | {"data": [str(r) for r in roots], "out": str(args.out)},
                                                "results": results}, table, args.out)  # fmt: skip


if __name__ == "__main__":
    main()
