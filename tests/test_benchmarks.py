"""The study script runs end to end on a tiny SYNTHETIC configuration and writes what it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import small_copy

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SETS = ("ieee8023-radiologist100", "nih-cxr8", "covid19-radiography")  # masks, Non-COVID, a source to hold out
EXTERNAL = "ieee8023-v7labs427"  # never trained on; shares pictures with ieee8023-radiologist100


@pytest.mark.slow
def test_masked_vs_raw_study_writes_every_statistic(tmp_path, shared_data):
    for name in (*SETS, EXTERNAL):  # ten real images per class of each set
        small_copy(shared_data / name, tmp_path / "data" / name, per_class=10)
    cmd = [sys.executable, str(BENCH / "masked_vs_raw.py"), *(str(tmp_path / "data" / s) for s in SETS), "--preset", "quick",
           "--epochs", "1", "--seg-epochs", "1", "--seeds", "2", "--working-size", "64", "--image-size", "32", "--n-boot", "20", "--modes", "raw", "masked-gt",
           "masked", "--hold-out", "covid19-radiography", "--external", str(tmp_path / "data" / EXTERNAL), "--device", "cpu", "--out", str(tmp_path / "study")]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    r = json.loads((tmp_path / "study" / "results.json").read_text())
    main = r["main"]
    assert set(main["modes"]) == {"raw", "masked-gt", "masked"}
    for m in main["modes"].values():
        assert m["clusters"] <= m["n_test"] and len(m["seed_accuracies"]) == 2  # clusters resampled, two seeds
        assert m["between_seeds"]["n"] == 2 and len(m["accuracy_both_ci"]) == 2 and 0 <= m["ece_after"] <= 1
        assert set(m["calibration"]) == {"ece", "classwise_ece", "brier", "nll"} and 0 <= m["calibration"]["brier"] <= 2
    for v in main["vs_raw"].values():  # Holm over the masked-mode contrasts only; McNemar per pair, secondary
        assert v["noninferiority_p_holm"] >= v["noninferiority_p"] and len(v["mcnemar"]) == 2
        assert v["seeds"] == [2, 2] and v["detectable_difference"] > 0
    assert set(r["primary"]["result"]) == {"masked-gt", "masked"} and r["primary"]["margin"] > 0
    assert r["external_data"]["images"] + r["external_data"]["removed_shared_pictures"] == 10
    per_source = r["external_data"]["by_source"]
    assert set(per_source) == {EXTERNAL} and set(per_source[EXTERNAL]["vs_raw"]) == {"masked-gt", "masked"}
    assert main["vs_raw"]["masked-gt"]["n_images"] <= main["modes"]["raw"]["n_test"]  # masked-gt: masked images only
    cams = main["gradcam_in_lung_share"]
    assert cams["masked@last block"]["seeds"] == 2 and "masked@layer3" in cams
    assert set(r["external"]["covid19-radiography"]["modes"]) == {"raw", "masked"}
    probe = r["shortcut_probe"]
    assert set(probe["class"]) == {"whole", "inside", "outside", "outline"} and probe["seeds"] == 3
    assert all(len(v["accuracy_ci"]) == 2 and v["balanced_accuracy"]["n"] == 3 for v in probe["class"].values())
    assert set(probe["source"]) == {"COVID-19", "Non-COVID", "Normal"}  # each probed, or skipped with the reason
    text = (tmp_path / "study" / "report.md").read_text()
    for part in (
        "Primary endpoint",
        "External data",
        "External validation",
        "Shortcut controls",
        "can and cannot support",
        "seeds and clusters resampled",
        "detectable",
    ):
        assert part in text, part
    assert (tmp_path / "study" / "report.html").is_file() and (tmp_path / "study" / "reliability_raw.png").is_file()
    from lungcls import builtin

    if builtin.INFECTION in builtin.names():  # COVID-19 from the classifier, from infection, and both: same Test images
        three = r["covid_three_ways"]
        assert set(three["modes"]) == {"raw", "masked-gt", "masked"} and three["n_test"] == main["modes"]["raw"]["n_test"]
        assert all(len(v["combined"]["auroc"]["seeds"]) == 2 for v in three["modes"].values())
        assert "COVID-19 three ways" in text
    assert r["decisions"]["test_images"] == main["modes"]["raw"]["n_test"] and "decision policy" in text
    (tmp_path / "study" / "report.md").unlink()  # the report is rewritten from results.json alone
    again = subprocess.run([*cmd, "--report-only"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and (tmp_path / "study" / "report.md").read_text() == text, again.stderr[-2000:]


def test_saliency_shares_of_a_hand_made_map():
    sys.path.insert(0, str(BENCH))
    from masked_vs_raw import map_shares

    lung = np.zeros((50, 50), np.uint8)
    lung[10:30, 10:30] = 1  # the lungs: 16% of the picture
    x = np.where(lung > 0, 0.5, 0.0)  # masked input: black outside the lungs
    uniform = map_shares(np.ones((50, 50)), lung, x)
    assert uniform["in_lung"] == pytest.approx(0.16) and uniform["in_lung_over_fraction"] == pytest.approx(1.0)
    assert uniform["background"] == pytest.approx(0.84)
    corner = np.zeros((50, 50))
    corner[45:, 45:] = 1.0  # all the saliency on the black background, far from the lungs
    assert map_shares(corner, lung, x) == {"in_lung": 0.0, "in_lung_over_fraction": 0.0, "edge": 0.0, "background": 1.0}
    assert map_shares(np.zeros((50, 50)), lung, x) is None


def test_calibration_intervals_are_shifted_by_the_bootstrap_bias():
    sys.path.insert(0, str(BENCH))
    from masked_vs_raw import calibration_intervals

    from lungcls.stats import calibration_scores, cluster_draws

    # 40 images, every one predicted class 0 with probability 0.75, and 30 of them truly class 0: perfectly
    # calibrated (ECE 0), Brier (30 x 0.125 + 10 x 1.125) / 40 = 0.375
    probs = np.tile([0.75, 0.25], (40, 1))
    labels = np.array([0] * 30 + [1] * 10)
    clusters = [str(i) for i in range(40)]
    full = calibration_scores(probs, labels)
    assert full["ece"] == pytest.approx(0.0) and full["brier"] == pytest.approx(0.375)
    ci = calibration_intervals(probs[None], labels, clusters, n_boot=200)
    # ECE of a resample is never below 0, so plain percentiles sit above the estimate; the shifted interval holds it
    assert ci["ece"][0] == 0.0 and ci["ece"][1] > 0.0
    draws = cluster_draws(clusters, 200, np.random.default_rng(0))
    brier = [calibration_scores(probs[i], labels[i])["brier"] for i in draws]
    bias = np.mean(brier) - 0.375
    expected = [np.percentile(brier, 2.5) - bias, np.percentile(brier, 97.5) - bias]
    assert ci["brier"] == pytest.approx(expected) and ci["brier"][0] < 0.375 < ci["brier"][1]
