"""Both study scripts run end to end on a tiny SYNTHETIC configuration and write what they promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lungcls.data.phantoms import write_phantom_set

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    return write_phantom_set(tmp_path_factory.mktemp("bench"), per_class=12, size=64)


def run(*args: str) -> None:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


def test_masked_vs_raw_tiny(phantoms, tmp_path):
    run(str(BENCH / "masked_vs_raw.py"), str(phantoms), "--quick", "--epochs", "1", "--seg-epochs", "1",
        "--n-boot", "10", "--device", "cpu", "--out", str(tmp_path / "study"))  # fmt: skip
    results = json.loads((tmp_path / "study" / "results.json").read_text())
    assert set(results["per_mode"]) == {"raw", "masked-gt", "masked", "masked-cropped"}
    assert set(results["bootstrap"]["vs_raw"]) == {"masked-gt", "masked", "masked-cropped"}
    assert all(len(v) == 1 for v in results["mcnemar_vs_raw"].values()) and results["manifest_digest"]
    for name in ("report.md", "curves.png", "stage1_outlines.png", "confusion_raw.png", "test_grid_masked.png"):
        assert (tmp_path / "study" / name).is_file(), name
    assert "| masked-cropped |" in (tmp_path / "study" / "report.md").read_text()


def test_throughput_tiny(phantoms, tmp_path):
    run(str(BENCH / "throughput.py"), "--data", str(phantoms), "--images", "8", "--epochs", "1", "--batch-size", "4",
        "--cls-batch-size", "4", "--encoder", "resnet18", "--image-size", "64", "--cls-arch", "resnet18",
        "--cls-image-size", "32", "--repeats", "1", "--workers", "0", "--device", "cpu", "--out", str(tmp_path))  # fmt: skip
    results = json.loads((tmp_path / "throughput_cpu.json").read_text())["results"]
    for key in ("seg_train", "seg_infer", "cls_train", "cls_infer", "pipeline_predict"):
        assert results[f"{key}_lungcls"]["img_s"] > 0 and results[f"{key}_naive"]["img_s"] > 0, key
    assert "whole Pipeline.predict" in (tmp_path / "throughput_cpu.md").read_text()
