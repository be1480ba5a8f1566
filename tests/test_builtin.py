"""The built-in lung segmenter: `lungcls segment scan.png --out DIR` right after install, offline, from a
wheel, an editable install or a zip; picked by name everywhere a segmenter is; its flags on non-CXRs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lungcls import builtin
from lungcls.cli import app
from lungcls.seg.segmenter import Segmenter

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
pytestmark = pytest.mark.skipif(builtin.DEFAULT not in builtin.names(), reason="the built-in model is not in this checkout")


def offline_env(tmp_path: Path, **extra: str) -> dict:
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    return env | extra


def test_the_builtin_model_is_small_and_described():
    folder = REPO / "src" / "lungcls" / "builtin" / builtin.DEFAULT
    assert (folder / "model.safetensors").stat().st_size <= 10 * 2**20
    card = builtin.card(builtin.DEFAULT)
    for part in ("Research use only", "CC BY-SA 4.0", "COVID-QU-Ex", "Dice", "HD95", "lateral views were not tested", "Children",
                 "scripts/builtin_segmenter.sh", "images.json"):  # fmt: skip
        assert part in card, part
    images = json.loads((folder / "images.json").read_text())
    assert len(images["Train"]) > 2000 and len(images["Val"]) > 800 and not set(images["Train"]) & set(images["Test"])
    seg = Segmenter.load(builtin.DEFAULT, device="cpu")
    assert all(p.dtype.is_floating_point and p.dtype == next(seg.model.parameters()).dtype for p in seg.model.parameters())
    assert next(seg.model.parameters()).dtype.itemsize == 4  # stored in float16, loaded as float32
    listing = runner.invoke(app, ["models"])
    assert listing.exit_code == 0 and f"{builtin.DEFAULT} (default)" in listing.output and "dice" in listing.output


def test_segment_with_no_model_uses_the_builtin_offline(tmp_path, radiologist100):
    scans = sorted((radiologist100 / "Lung Segmentation Data" / "All" / "COVID-19" / "images").iterdir())[:3]
    cmd = [sys.executable, "-m", "lungcls", "segment", *map(str, scans), "--out", str(tmp_path / "out"), "--cpu", "-q"]
    result = subprocess.run(cmd, env=offline_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "built-in model 'unet-r18-covidqu'" in result.stderr and "3 images segmented" in result.stdout
    truth = [cv2.imread(str(s.parents[1] / "lung masks" / s.name), cv2.IMREAD_GRAYSCALE) > 0 for s in scans]
    for scan, true in zip(scans, truth):
        mask = cv2.imread(str(tmp_path / "out" / "masks" / scan.name), cv2.IMREAD_GRAYSCALE) > 0
        dice = 2 * (mask & true).sum() / (mask.sum() + true.sum())
        assert dice > 0.8, (scan.name, dice)  # another mask convention (radiologist), still clearly the lungs
    assert not (tmp_path / "torch").exists() and not (tmp_path / "hf").exists()


@pytest.mark.slow
def test_the_builtin_model_is_found_from_a_wheel_and_from_a_zip(tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheel_dir), str(REPO)], check=True, capture_output=True, timeout=300)  # fmt: skip
    wheel = next(wheel_dir.glob("lungcls-*.whl"))
    assert any(n.endswith(f"builtin/{builtin.DEFAULT}/model.safetensors") for n in zipfile.ZipFile(wheel).namelist())
    probe = ("import lungcls, lungcls.builtin as b; from lungcls.seg.segmenter import Segmenter; "
             "s = Segmenter.load(device='cpu'); print(lungcls.__file__, b.names(), s.info['source']['sha256'][:12])")  # fmt: skip
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True, timeout=300)  # fmt: skip
    for path in (tmp_path / "site", wheel):  # an installed wheel, and the wheel itself as a zip on the path
        out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env=offline_env(tmp_path, PYTHONPATH=str(path)))  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert str(path) in out.stdout and builtin.DEFAULT in out.stdout, out.stdout


def test_non_cxr_images_are_flagged(tmp_path):
    rng = np.random.default_rng(0)
    photo = cv2.cvtColor(cv2.GaussianBlur(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), (0, 0), 6),
                         cv2.COLOR_BGR2GRAY)  # a blurry colour photograph of nothing  # fmt: skip
    cv2.rectangle(photo, (60, 80), (200, 180), 250, -1)
    blank = np.zeros((256, 256), np.uint8)
    white = np.full((256, 256), 255, np.uint8)
    results = Segmenter.load(device="cpu").segment(torch.from_numpy(np.stack([photo, blank, white]))[:, None])
    for name, r in zip(("photo", "blank", "white"), results):
        assert r.flags, name


def test_train_cls_masked_without_a_segmenter_uses_the_builtin_and_bundles_record_it(tmp_path, caplog):
    import logging

    from lungcls import Pipeline
    from lungcls.cls.train import train_classifier
    from lungcls.config import ClassifierConfig, TrainConfig
    from lungcls.data.phantoms import write_phantom_set

    data = [write_phantom_set(tmp_path / "data", per_class=8, size=64)]
    with caplog.at_level(logging.WARNING):
        run = train_classifier(data, tmp_path / "cls", ClassifierConfig(arch="resnet18", image_size=32, mode="masked"),
                               TrainConfig(epochs=1, batch_size=8, device="cpu"), progress=False)  # fmt: skip
    assert "using the built-in lung segmenter 'unet-r18-covidqu'" in caplog.text
    config = json.loads((tmp_path / "cls" / "config.json").read_text())
    assert config["segmenter"]["origin"] == "builtin" and config["segmenter"]["name"] == builtin.DEFAULT
    pipe = Pipeline.load(tmp_path / "cls", device="cpu")
    assert pipe.segmenter.info["source"]["name"] == builtin.DEFAULT
    pipe.save(tmp_path / "bundle")
    meta = json.loads((tmp_path / "bundle" / "pipeline.json").read_text())
    assert meta["segmenter"]["origin"] == "builtin" and meta["segmenter"]["name"] == builtin.DEFAULT
    assert meta["segmenter"]["source_sha256"] == Segmenter.load(device="cpu").info["source"]["sha256"]
    assert "built-in model `unet-r18-covidqu`" in (tmp_path / "bundle" / "MODEL_CARD.md").read_text()
    assert run.model.segmenter_spec() == builtin.DEFAULT
