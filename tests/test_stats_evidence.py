"""The study's evidence, each statistic pinned against a case computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lungcls.stats import (
    balanced_accuracy,
    calibration_scores,
    cluster_draws,
    cluster_interval,
    detectable_difference,
    hierarchical_difference,
    noninferiority_p,
)


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(pred == labels))


def test_balanced_accuracy_is_the_mean_recall_of_the_classes_present():
    # class 0: 2 of 3 right; class 1: 1 of 1; class 2 absent -> (2/3 + 1) / 2
    assert balanced_accuracy(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]), k=3) == pytest.approx(5 / 6)


def test_when_seeds_disagree_the_interval_spans_what_the_seeds_allow():
    labels = np.zeros(10, dtype=int)
    a = np.ones((2, 10), dtype=int)
    a[0, :5] = 0  # seed 0 of A right on 5 of 10, seed 1 on 7
    a[1, :7] = 0
    b = np.ones((2, 10), dtype=int)
    b[:, :6] = 0  # both seeds of B right on 6
    one_cluster = ["all"] * 10  # the test set fixed: only the seeds vary
    r = hierarchical_difference(a, b, labels, one_cluster, metric=accuracy, n_boot=4000)
    assert r["difference"] == pytest.approx(0.0)
    # A's seed mean is 0.5, 0.6 or 0.7 (each extreme with probability 1/4): B - A from -0.1 to +0.1
    assert r["ci95"] == pytest.approx([-0.1, 0.1])
    agreeing = hierarchical_difference(b, b, labels, one_cluster, metric=accuracy, n_boot=200)
    assert agreeing["ci95"] == pytest.approx([0.0, 0.0])


def test_the_paired_difference_resamples_the_same_images_for_both():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    a = np.stack([labels, labels])  # A always right
    b = a.copy()
    r = hierarchical_difference(a, b, labels, list(range(200)), n_boot=300)
    assert r["ci95"] == [0.0, 0.0] and r["seeds"] == (2, 2) and r["clusters"] == 200  # identical: no test noise


def test_clusters_are_drawn_whole():
    clusters = ["x", "x", "y", "z"]  # images 0 and 1 are one picture twice (or one patient)
    for idx in cluster_draws(clusters, 200, np.random.default_rng(1)):
        assert np.sum(idx == 0) == np.sum(idx == 1)
    constant = cluster_interval(lambda idx: 1.0, clusters, n_boot=50)
    assert constant == [1.0, 1.0]


def test_noninferiority_p_counts_draws_at_or_below_the_margin():
    assert noninferiority_p(np.array([-0.1, 0.0, 0.1]), margin=0.05) == pytest.approx(2 / 4)
    assert noninferiority_p(np.array([0.0, 0.01, 0.02]), margin=0.05) == pytest.approx(1 / 4)


def test_the_detectable_difference_of_658_images_at_discordance_019_is_about_47_points():
    # (1.959964 + 0.841621) * sqrt(0.19 / 658) = 0.047606
    assert detectable_difference(658, 0.19) == pytest.approx(0.047606, abs=1e-5)
    assert math.isnan(detectable_difference(0, 0.19))


def test_calibration_scores_of_two_images():
    probs = np.array([[0.8, 0.2], [0.6, 0.4]])
    labels = np.array([0, 1])
    s = calibration_scores(probs, labels)
    # ECE: half the images at confidence 0.8 (right), half at 0.6 (wrong): 0.5 * 0.2 + 0.5 * 0.6
    assert s["ece"] == pytest.approx(0.4)
    assert s["classwise_ece"] == pytest.approx(0.4)
    assert s["brier"] == pytest.approx((0.08 + 0.72) / 2)
    assert s["nll"] == pytest.approx(-(math.log(0.8) + math.log(0.4)) / 2)
