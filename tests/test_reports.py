"""What people look at: one-page HTML reports (checked in a real headless browser where one is installed),
TensorBoard logs, curves of several runs, CAM methods and targets, and stage-1 runs that smp loads."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lungcls.cli import app
from lungcls.data.phantoms import make_phantom, write_phantom_set

runner = CliRunner()
TINY = ["--recipe", "demo", "--encoder-depth", "3", "--decoder-channels", "8,8,8", "--image-size", "32", "--epochs", "2",
        "--batch-size", "8", "--cpu", "-q"]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reports")
    data = str(write_phantom_set(root / "data", per_class=10, size=64))
    seg = runner.invoke(app, ["train-seg", data, "--out", str(root / "seg"), *TINY, "--tensorboard"])
    assert seg.exit_code == 0, seg.output
    cls = runner.invoke(app, ["train-cls", str(root / "seg" / "cache"), "--out", str(root / "cls"), "--mode", "masked",
                              "--seg-model", str(root / "seg"), "--recipe", "demo", "--image-size", "32", "--epochs", "2",
                              "--batch-size", "8", "--cpu", "-q", "--tensorboard"])  # fmt: skip
    assert cls.exit_code == 0, cls.output
    return root


def test_tensorboard_gets_scalars_per_epoch_and_sample_images(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for stage, images in (("seg", {"samples/ground truth (red)", "samples/predicted (green)"}),
                          ("cls", {"samples/ground truth (red)"})):  # fmt: skip
        events = EventAccumulator(str(runs / stage / "tensorboard"))
        events.Reload()
        tags = events.Tags()
        assert {"train/train_loss", "validation/val_loss", "train/lr"} <= set(tags["scalars"]), stage
        assert [e.step for e in events.Scalars("train/train_loss")] == [1, 2]
        assert images <= set(tags["images"]), stage
    assert (runs / "seg" / "history.csv").is_file()  # the CSV/JSON history stays


def test_plot_draws_the_curves_of_several_runs(runs, tmp_path):
    result = runner.invoke(app, ["plot", str(runs / "seg"), str(runs / "cls"), "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 0 and "2 run(s)" in result.output
    picture = cv2.imread(str(tmp_path / "c.png"))
    assert picture.shape[1] > picture.shape[0]  # one column per run
    again = runner.invoke(app, ["plot", str(runs / "seg"), "--out", str(tmp_path / "c.png")])
    assert again.exit_code == 2  # never overwritten without --force


def test_the_html_report_is_one_self_contained_page(runs, tmp_path):
    result = runner.invoke(app, ["report", str(runs / "cls"), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r.html").read_text()
    assert "<script" not in html and not re.search(r"(src|href)=['\"]https?:", html)  # nothing fetched, no JS
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(pngs) >= 3 and all(base64.b64decode(p)[:4] == b"\x89PNG" for p in pngs)
    for part in ("| weighted avg |".replace("|", ""), "Confusion matrices", "Calibration", "eval_test", "WARNING"):
        assert part.strip() in html, part
    assert "<table>" in html and "macro avg" in html


def test_the_html_report_renders_in_a_headless_browser(runs, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium); the page is checked for embedded figures "
                    "and no scripts by test_the_html_report_is_one_self_contained_page")  # fmt: skip
    page = tmp_path / "r.html"
    assert runner.invoke(app, ["report", str(runs / "cls"), "--out", str(page)]).exit_code == 0
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2400",
                    page.as_uri()], capture_output=True, timeout=120)  # fmt: skip
    picture = cv2.imread(str(shot))
    assert picture is not None and picture.shape[:2] == (2400, 1200)
    assert picture.std() > 20  # text, tables and figures drawn, not a blank page
    shutil.copy(shot, Path(__file__).resolve().parents[1] / ".pytest_cache" / "report_screenshot.png") if (
        Path(__file__).resolve().parents[1] / ".pytest_cache").is_dir() else None


def test_smp_loads_a_stage_1_run(runs):
    import segmentation_models_pytorch as smp

    from lungcls.seg.segmenter import Segmenter

    seg = Segmenter.load(runs / "seg", device="cpu")
    net = smp.from_pretrained(str(runs / "seg"), strict=False).eval()  # depth 3: the unused stages are not stored
    x = seg.task.inputs(torch.zeros(2, 1, 64, 64, dtype=torch.uint8) + 90).float().contiguous()
    with torch.no_grad():
        assert torch.allclose(net(x), seg.model(x), atol=1e-5)


@pytest.mark.parametrize("method", ["gradcam++", "eigencam"])
def test_predict_explains_with_any_cam_method_and_target(runs, tmp_path, method):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), make_phantom(np.random.default_rng(0), 1, 64)[0])
    args = ["predict", str(folder), "--model", str(runs / "cls"), "--out", str(tmp_path / "out"), "--explain",
            "--cam-method", method, "--cam-target", "Normal", "--cpu", "-q"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "explain" / "a.png").is_file()
    bad = runner.invoke(app, [*args[:-4], "--cam-target", "Flu", "--cpu", "--force"])
    assert bad.exit_code == 2 and "'Flu' is not a class of this model" in bad.output
