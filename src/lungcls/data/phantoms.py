"""SYNTHETIC chest-radiograph phantoms for the built-in demo and for tests. Not real patients.

Each phantom has a body outline, two lung fields (the lung mask), ribs, a heart shadow and
diaphragm domes, and, by class, opacities of different patterns:

- ``COVID-19``: bilateral, peripheral, lower-zone ground-glass haze (several soft patches);
- ``Non-COVID``: one dense focal (lobar) consolidation in one lung;
- ``Normal``: none.

Geometry, contrast and noise vary per image. They teach the pipeline's mechanics in minutes on a
CPU; they say nothing about real CXRs.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from .manifest import CLASS_NAMES

SET_NAME = "SYNTHETIC-phantoms"


def make_phantom(rng: np.random.Generator, label: int, size: int = 128, infection: bool = False) -> tuple:
    """One phantom: (image uint8 (size, size), lung mask uint8 (size, size) in {0, 1}); with ``infection`` also the
    infection mask (the COVID-19 haze inside the lungs; empty for the other classes, as in COVID-QU-Ex)."""
    s = size
    img = np.zeros((s, s), np.float32)
    cv2.ellipse(
        img, (s // 2, int(s * 0.58)), (int(s * rng.uniform(0.40, 0.47)), int(s * 0.52)), 0, 0, 360, 0.55, -1
    )  # body
    mask = np.zeros((s, s), np.uint8)
    cy = int(s * rng.uniform(0.46, 0.52))
    for side in (-1, 1):
        cx = s // 2 + side * int(s * rng.uniform(0.17, 0.21))
        axes = (int(s * rng.uniform(0.11, 0.14)), int(s * rng.uniform(0.26, 0.31)))
        cv2.ellipse(mask, (cx, cy), axes, side * rng.uniform(3, 9), 0, 360, 1, -1)
    img[mask > 0] = 0.18
    for k in range(9):  # ribs: bright arcs across both lungs
        y = int(s * (0.22 + 0.07 * k + rng.uniform(-0.01, 0.01)))
        for side in (-1, 1):
            cv2.ellipse(
                img,
                (s // 2, y - int(s * 0.08)),
                (int(s * 0.36), int(s * 0.1)),
                0,
                20 if side > 0 else 100,
                80 if side > 0 else 160,
                0.34,
                max(1, s // 64),
            )
    heart = (s // 2 + int(s * rng.uniform(0.02, 0.06)), int(s * rng.uniform(0.62, 0.66)))
    cv2.ellipse(img, heart, (int(s * rng.uniform(0.12, 0.16)), int(s * 0.12)), -20, 0, 360, 0.6, -1)  # heart shadow
    for side in (-1, 1):  # diaphragm domes under the lungs
        cv2.ellipse(
            img, (s // 2 + side * int(s * 0.19), int(s * 0.86)), (int(s * 0.17), int(s * 0.1)), 0, 180, 360, 0.62, -1
        )
    mask[img > 0.5] = 0  # heart and diaphragm cut the lung fields, as lung masks do
    opacity = _opacity(rng, label, s)
    img += opacity * mask
    img = cv2.GaussianBlur(img, (0, 0), s / 180) * rng.uniform(0.85, 1.15) + rng.uniform(-0.05, 0.05)
    img += rng.normal(0, 0.025, img.shape).astype(np.float32)
    picture = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    if infection:
        return picture, mask, ((opacity > 0.08) & (mask > 0) & (label == 0)).astype(np.uint8)
    return picture, mask


def _opacity(rng: np.random.Generator, label: int, s: int) -> np.ndarray:
    """The class's opacities, float (s, s): COVID-19 ground glass, a Non-COVID consolidation, or none."""
    opacity = np.zeros((s, s), np.float32)
    if label == 0:  # COVID-19: bilateral peripheral ground glass, lower zones
        for _ in range(rng.integers(3, 6)):
            side = rng.choice([-1, 1])
            c = (s // 2 + side * int(s * rng.uniform(0.22, 0.29)), int(s * rng.uniform(0.5, 0.7)))
            cv2.circle(opacity, c, int(s * rng.uniform(0.05, 0.09)), 0.22, -1)
        opacity = cv2.GaussianBlur(opacity, (0, 0), s / 30)
    elif label == 1:  # Non-COVID: one dense focal consolidation
        side = rng.choice([-1, 1])
        c = (s // 2 + side * int(s * rng.uniform(0.14, 0.22)), int(s * rng.uniform(0.35, 0.65)))
        cv2.ellipse(
            opacity,
            c,
            (int(s * rng.uniform(0.05, 0.08)), int(s * rng.uniform(0.06, 0.1))),
            rng.uniform(0, 180),
            0,
            360,
            0.42,
            -1,
        )
        opacity = cv2.GaussianBlur(opacity, (0, 0), s / 90)
    return opacity


def write_phantom_set(root: str | Path, per_class: int = 100, size: int = 128, seed: int = 0) -> Path:
    """Write ``per_class`` phantoms of each class in the COVID-QU-Ex layout under ``root/SYNTHETIC-phantoms``, with
    lung masks and infection masks (see :func:`make_phantom`).

    Returns:
        The set's folder (discoverable with :func:`lungcls.data.discover`). File names start with
        ``SYNTHETIC``; a ``labels.csv`` says what they are.
    """
    base = Path(root) / SET_NAME
    rng = np.random.default_rng(seed)
    rows = []
    for label, name in enumerate(CLASS_NAMES):
        images = base / "Lung Segmentation Data" / "All" / name / "images"
        masks, infected = images.parent / "lung masks", images.parent / "infection masks"
        for folder in (images, masks, infected):
            folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            image, mask, infection = make_phantom(rng, label, size, infection=True)
            file = f"SYNTHETIC_{name}_{k:04d}.png"
            cv2.imwrite(str(images / file), image)
            cv2.imwrite(str(masks / file), mask * 255)
            cv2.imwrite(str(infected / file), infection * 255)
            rows.append(
                {
                    "filename": file,
                    "class": name,
                    "patient_id": f"synthetic-{label}-{k}",
                    "note": "SYNTHETIC phantom, not a patient",
                }
            )
    with open(base / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return base
