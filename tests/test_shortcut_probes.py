"""The study's shortcut probes tell the class from the part of the picture that carries it, and not from the others."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import shortcut_probes  # noqa: E402


def pictures(n: int, seed: int = 0):
    """Noise pictures with the same central 'lungs' mask; the class (0/1) is a bright patch in a corner, outside."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(60, 120, (n, 64, 64)).astype(np.uint8)
    images[labels == 1, :10, :10] = 250
    masks = np.zeros((n, 64, 64), np.uint8)
    masks[:, 16:48, 12:52] = 1
    return images, masks, labels


def test_a_class_told_by_a_mark_outside_the_lungs_is_seen_outside_and_not_inside():
    images, masks, labels = pictures(120)
    train, test = np.arange(80), np.arange(80, 120)
    clusters = [str(i) for i in range(120)]
    r = shortcut_probes.class_probes(images, masks, labels, train, test, clusters, 2, seeds=2, n_boot=50)
    assert r["outside"]["balanced_accuracy"]["mean"] == 1.0 and r["whole"]["balanced_accuracy"]["mean"] == 1.0
    assert r["inside"]["balanced_accuracy"]["mean"] < 0.75  # noise only: near chance (0.5)
    assert r["outline"]["balanced_accuracy"]["mean"] == 0.5  # every mask the same: nothing to tell
    assert r["outside"]["chance_majority"] == 0.5 and len(r["outside"]["accuracy_ci"]) == 2


def test_a_class_told_by_the_mask_shape_is_seen_in_the_outline_alone():
    images, masks, labels = pictures(120, seed=1)
    images[:, :10, :10] = 90  # no mark any more
    masks[labels == 1, 16:48, 40:52] = 0  # class 1: a narrower lung field
    train, test = np.arange(80), np.arange(80, 120)
    r = shortcut_probes.class_probes(images, masks, labels, train, test, [str(i) for i in range(120)], 2, seeds=1,
                                     n_boot=50)  # fmt: skip
    assert r["outline"]["balanced_accuracy"]["mean"] == 1.0


def test_the_source_probe_runs_only_within_classes_with_two_sources():
    images, masks, labels = pictures(160, seed=2)
    sources = np.where(np.arange(160) % 4 < 2, "a", "b")  # class 0 and 1 each from a and b
    images[sources == "b"] = np.clip(images[sources == "b"].astype(int) + 60, 0, 255).astype(np.uint8)  # b brighter
    train, test = np.arange(100), np.arange(100, 160)
    r = shortcut_probes.source_probes(images, masks, labels, sources, train, test, [str(i) for i in range(160)],
                                      ["x", "y"], seeds=1, n_boot=50)  # fmt: skip
    assert r["x"]["sources"] == ["a", "b"] and r["x"]["whole"]["balanced_accuracy"]["mean"] == 1.0
    one = shortcut_probes.source_probes(images, masks, labels, np.full(160, "a"), train, test,
                                        [str(i) for i in range(160)], ["x", "y"], seeds=1)  # fmt: skip
    assert "skipped" in one["x"]
