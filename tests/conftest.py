"""Shared fixtures: the real CXR sets (skipped when absent) and small synthetic images."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _leave_logging_as_found():
    """A CLI test configures the 'lungcls' logger and may turn progress bars off; undo it after every test,
    so library tests see warnings through pytest's caplog."""
    import logging

    from lungcls.progress import set_enabled

    yield
    logger = logging.getLogger("lungcls")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
    set_enabled(True)


def shared_data_root() -> Path:
    """``$LUNGCLS_DATA``, else ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("LUNGCLS_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if not (root / "ieee8023-radiologist100").is_dir():
        pytest.skip(
            f"real CXR sets not found at {root} (set LUNGCLS_DATA to the folder holding ieee8023-radiologist100 etc.)"
        )
    return root


@pytest.fixture(scope="session")
def radiologist100(shared_data: Path) -> Path:
    return shared_data / "ieee8023-radiologist100"


def real_pairs(root: Path, n: int) -> list[tuple[Path, Path]]:
    """The first ``n`` (image, lung mask) pairs of a shared set, sorted by name."""
    base = root / "Lung Segmentation Data" / "All" / "COVID-19"
    images = sorted((base / "images").iterdir())[:n]
    return [(p, base / "lung masks" / p.name) for p in images]


def synthetic_cxr(size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A crude CXR-like uint8 image (H, W) with two dark lung fields, and its {0, 1} lung mask."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 170, np.uint8)
    mask = np.zeros((size, size), np.uint8)
    for cx in (0.3, 0.7):
        center = (int(cx * size + rng.integers(-2, 3)), int(0.5 * size))
        axes = (int(0.15 * size), int(0.3 * size))
        cv2.ellipse(mask, center, axes, 0, 0, 360, 1, -1)
    img[mask > 0] = 60
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    return img, mask


def small_copy(src: Path, dst: Path, per_class: int) -> None:
    """The first ``per_class`` images of each split and class of a set (and their lung and infection masks, and its
    labels.csv)."""
    for images in sorted(src.rglob("images")):
        for img in sorted(p for p in images.iterdir() if p.suffix == ".png")[:per_class]:
            for f in (img, images.parent / "lung masks" / img.name, images.parent / "infection masks" / img.name):
                if f.is_file():
                    (dst / f.parent.relative_to(src)).mkdir(parents=True, exist_ok=True)
                    shutil.copy(f, dst / f.relative_to(src))
    kept = {str(p.relative_to(dst)) for p in dst.rglob("*.png")} | {p.name for p in dst.rglob("*.png")}
    with open(src / "labels.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r["filename"] in kept]
        with open(dst / "labels.csv", "w", newline="") as out:
            w = csv.DictWriter(out, fieldnames=reader.fieldnames)
            w.writeheader()
            w.writerows(rows)


def phantom_scans(folder: Path, n: int, seed: int) -> Path:
    """``n`` SYNTHETIC phantom CXRs (64 px) as ``scan<k>.png`` in ``folder``: inputs for the per-file commands."""
    from lungcls.data.phantoms import make_phantom

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(n):
        cv2.imwrite(str(folder / f"scan{k}.png"), make_phantom(rng, k % 3, 64)[0])
    return folder


def tiny_configs():
    """A tiny U-Net, a tiny masked classifier and one CPU epoch: models trained in seconds for the user-path tests."""
    from lungcls.config import ClassifierConfig, SegmenterConfig, TrainConfig

    return (SegmenterConfig(encoder_name="resnet18", encoder_depth=3, decoder_channels=[8, 8, 8], image_size=32),
            ClassifierConfig(arch="resnet18", image_size=32, mode="masked"), TrainConfig(epochs=1, batch_size=8, device="cpu"))


@pytest.fixture(scope="session")
def serve_bundle(tmp_path_factory) -> Path:
    """A bundle with the built-in lung segmenter, a masked and a raw classifier, both untrained (for the web
    server's tests: the numbers are not the point there, the plumbing is)."""
    import torch

    from lungcls import Pipeline
    from lungcls.cls.classifier import Classifier
    from lungcls.config import ClassifierConfig
    from lungcls.models.classifiers import build_classifier
    from lungcls.seg.segmenter import Segmenter

    def untrained(mode: str) -> Classifier:
        torch.manual_seed(0)
        cfg = ClassifierConfig(arch="resnet18", image_size=64, mode=mode)
        return Classifier(build_classifier(cfg), cfg, device="cpu")

    out = tmp_path_factory.mktemp("serve") / "bundle"
    Pipeline(Segmenter.load(device="cpu", target="lungs"), untrained("masked"), raw=untrained("raw")).save(out)
    return out
