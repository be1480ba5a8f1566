"""Each script in examples/ runs, as a user would run it, on a tiny SYNTHETIC setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lungcls.data.phantoms import make_phantom, write_phantom_set

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("examples")
    data = write_phantom_set(root / "data", per_class=12, size=64)
    out = run("01_train_pipeline.py", str(data), "--out", str(root / "run"), "--recipe", "demo", "--epochs", "1")
    assert "saved" in out and "| weighted avg |" in out
    return root


def test_segment_and_classify_a_folder(trained, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for k in range(2):
        cv2.imwrite(str(folder / f"scan {k}.png"), make_phantom(rng, k, 64)[0])
    (folder / "broken.png").write_text("not an image")
    out = run(
        "02_segment_and_classify_folder.py",
        str(trained / "run" / "bundle"),
        str(folder),
        "--out",
        str(tmp_path / "out"),
    )
    assert "broken.png: not an image" in out
    assert (tmp_path / "out" / "predictions.csv").is_file() and len(
        list((tmp_path / "out" / "segmentation" / "masks").glob("*.png"))
    ) == 2


def test_explain_one_image(trained, tmp_path):
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), make_phantom(np.random.default_rng(4), 0, 64)[0])
    out = run(
        "03_explain_one_image.py", str(trained / "run" / "bundle"), str(image), "--out", str(tmp_path / "cam.png")
    )
    assert "inside the lungs" in out and (tmp_path / "cam.png").is_file()
