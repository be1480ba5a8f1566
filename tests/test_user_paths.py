"""The paths new users take: nothing they give is dropped or overwritten, runs move and reload offline,
one split serves both stages, and every error says what was expected."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from lungcls import CheckpointError, Pipeline
from lungcls.cli import app
from lungcls.data.phantoms import write_phantom_set

from .conftest import phantom_scans, tiny_configs

runner = CliRunner()
TINY_SEG, TINY_CLS, ONE_EPOCH = tiny_configs()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A 1-epoch segmenter and a 1-epoch masked classifier on 45 SYNTHETIC phantoms, side by side."""
    from lungcls.cls.train import train_classifier
    from lungcls.seg.train import train_segmenter

    root = tmp_path_factory.mktemp("paths")
    data = [write_phantom_set(root / "data", per_class=15, size=64)]
    seg = train_segmenter(data, root / "runs" / "seg", TINY_SEG, ONE_EPOCH, cache_dir=root / "cache", progress=False)
    train_classifier([root / "cache"], root / "runs" / "cls", TINY_CLS, ONE_EPOCH, segmenter=seg.model, progress=False)
    return root


def scans(folder: Path, n: int = 2) -> Path:
    return phantom_scans(folder, n, seed=1)


@pytest.mark.parametrize("command", ["segment", "classify", "predict"])
def test_a_missing_input_or_an_empty_folder_exits_2_and_creates_nothing(runs, tmp_path, command):
    model = str(runs / "runs" / ("seg" if command == "segment" else "cls"))
    (tmp_path / "empty").mkdir()
    for inputs in ([str(tmp_path / "nowhere")], [str(tmp_path / "empty")]):
        out = tmp_path / "out" / (command + ".csv" if command == "classify" else command)
        result = runner.invoke(app, [command, *inputs, "--model", model, "--out", str(out), "--cpu"])
        assert result.exit_code == 2 and "nothing usable to work on" in result.output, result.output
        assert not (tmp_path / "out").exists()


def test_folders_read_extensionless_dicom_and_webp_and_list_what_is_skipped(runs, tmp_path):
    from .test_bad_inputs import _dicom  # the DICOM writer of the bad-input zoo

    folder = scans(tmp_path / "in", 1)
    image = cv2.imread(str(folder / "scan0.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(folder / "scan1.webp"), image, [cv2.IMWRITE_WEBP_QUALITY, 101])  # lossless WebP
    _dicom(folder / "IM000017", image.astype(np.uint16) * 16)  # a PACS export: no suffix, DICM at byte 128
    (folder / "notes.txt").write_text("not an image")
    result = runner.invoke(app, ["segment", str(folder), "--model", str(runs / "runs" / "seg"), "--out",
                                 str(tmp_path / "out"), "--cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3 images segmented" in result.output and "notes.txt: not an image file lungcls reads" in result.output
    names = sorted(p.name for p in (tmp_path / "out" / "masks").iterdir())
    assert names == ["IM000017.png", "scan0.png", "scan1.png"]


def test_pretrained_runs_train_from_local_files_and_load_offline(tmp_path):
    """Both stages start from a local weights file with TORCH_HOME/HF_HOME empty and the hub offline; the
    runs then load, classify and export without reading the initial weights again."""
    script = textwrap.dedent("""
        import torch, torchvision
        from safetensors.torch import save_file
        from lungcls.data.phantoms import write_phantom_set
        from lungcls.cli import app
        from typer.testing import CliRunner
        torch.manual_seed(0)
        save_file({k: v.contiguous() for k, v in torchvision.models.resnet18().state_dict().items()}, "r18.safetensors")
        data = str(write_phantom_set(".", per_class=8, size=64))
        r = CliRunner()
        common = ["--epochs", "1", "--batch-size", "8", "--cpu", "-q"]
        a = r.invoke(app, ["train-seg", data, "--out", "seg", "--encoder", "resnet18", "--encoder-depth", "3",
                           "--image-size", "32", "--encoder-weights", "r18.safetensors", *common])
        assert a.exit_code == 0, a.output
        b = r.invoke(app, ["train-cls", "seg/cache", "--out", "cls", "--mode", "masked", "--seg-model", "seg",
                           "--arch", "resnet18", "--image-size", "32", "--weights", "r18.safetensors", *common])
        assert b.exit_code == 0, b.output
        import json
        cfg = json.load(open("cls/config.json"))
        assert cfg["model"]["init_weights"].startswith("r18.safetensors sha256:"), cfg["model"]
        assert json.load(open("seg/config.json"))["model"]["encoder_weights"].startswith("r18.safetensors")
        import os; os.remove("r18.safetensors")  # loading must not need it
        c = r.invoke(app, ["classify", data, "--model", "cls", "--out", "c.csv", "--cpu", "-q"])
        assert c.exit_code == 0, c.output
        d = r.invoke(app, ["export", "cls", "--out", "onnx"])
        assert d.exit_code == 0, d.output
        print("OK")
    """)
    env = {**__import__("os").environ, "TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parent)}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
    assert not any((tmp_path / "torch").rglob("*.pth")) and not (tmp_path / "hf").exists()


def test_a_split_made_by_stage_1_is_kept_and_stage_2_never_tests_on_what_stage_1_saw(runs, tmp_path, caplog):
    """The README's old recipe: stage 1 on some sets, stage 2 on more sets, each splitting on its own. Now
    the classifier's split keeps every image the segmenter trained or validated on in Train."""
    from lungcls.cls.train import train_classifier
    from lungcls.seg.segmenter import Segmenter

    seg = Segmenter.load(runs / "runs" / "seg", device="cpu")
    more = write_phantom_set(tmp_path / "more", per_class=6, size=64, seed=9)
    labels = more / "labels.csv"
    labels.write_text(labels.read_text().replace("synthetic-", "other-"))  # other patients
    data = [runs / "data" / "SYNTHETIC-phantoms", more]
    run = train_classifier(data, tmp_path / "cls", TINY_CLS, ONE_EPOCH, segmenter=seg, progress=False)
    images = json.loads((tmp_path / "cls" / "images.json").read_text())
    assert seg.seen_images and seg.seen_images <= set(images["Train"])
    assert not seg.seen_images & (set(images["Val"]) | set(images["Test"]))
    assert (tmp_path / "cls" / "split.csv").is_file() and run.split and "pinned" in run.split


def test_a_stage_1_leak_into_val_or_test_is_loud_and_strict_refuses_it(runs, tmp_path, caplog):
    from lungcls.data import PackedCache

    cache = PackedCache.open(runs / "cache")
    swap = {"Train": "Test", "Test": "Train", "Val": "Val"}
    leaky = cache.manifest.with_splits([swap[s.split] for s in cache.samples])
    leaky.write_csv(tmp_path / "leaky.csv")  # the segmenter's Train images are the classifier's Test here
    args = ["train-cls", str(tmp_path / "leaky.csv"), "--out", str(tmp_path / "cls"), "--mode", "masked",
            "--seg-model", str(runs / "runs" / "seg"), "--arch", "resnet18", "--image-size", "32", "--epochs", "1",
            "--batch-size", "8", "--cpu", "-q"]  # fmt: skip
    strict = runner.invoke(app, [*args, "--strict"])
    assert strict.exit_code == 2 and "STAGE-1 LEAK" in strict.output
    shared = [a if a != str(tmp_path / "leaky.csv") else str(runs / "cache") for a in args]  # the segmenter's own split
    same_split = runner.invoke(app, [*shared[:3], str(tmp_path / "clean"), *shared[4:], "--strict"])
    assert same_split.exit_code == 0 and "STAGE-1 LEAK" not in same_split.output  # both stages chose on one Val
    loose = runner.invoke(app, args)
    assert loose.exit_code == 0 and "STAGE-1 LEAK" in loose.output
    evaluate = runner.invoke(app, ["evaluate-cls", str(tmp_path / "leaky.csv"), "--model", str(tmp_path / "cls"),
                                   "--split", "Test", "--cpu", "-q"])  # fmt: skip
    assert evaluate.exit_code == 0 and "STAGE-1 LEAK" in evaluate.output


def test_nothing_is_overwritten_without_being_asked(runs, tmp_path):
    data = str(runs / "cache")
    seg = ["train-seg", data, "--encoder", "resnet18", "--encoder-depth", "3", "--image-size", "32", "--epochs", "1",
           "--batch-size", "8", "--cpu", "-q"]  # fmt: skip
    first = runner.invoke(app, [*seg, "--out", str(tmp_path / "run")])
    assert first.exit_code == 0, first.output
    before = (tmp_path / "run" / "config.json").read_bytes()
    again = runner.invoke(app, [*seg, "--out", str(tmp_path / "run")])
    assert again.exit_code == 2 and "--resume" in again.output and "--overwrite" in again.output
    assert (tmp_path / "run" / "config.json").read_bytes() == before
    assert runner.invoke(app, [*seg, "--out", str(tmp_path / "run"), "--overwrite"]).exit_code == 0
    folder = scans(tmp_path / "in")
    cls = ["--model", str(runs / "runs" / "cls"), "--cpu", "-q"]
    inside = runner.invoke(app, ["classify", str(folder), *cls, "--out", str(folder / "c.csv")])
    assert inside.exit_code == 2 and "inside the input folder" in inside.output and not (folder / "c.csv").exists()
    assert runner.invoke(app, ["classify", str(folder), *cls, "--out", str(folder / "c.csv"), "--force"]).exit_code == 0
    (tmp_path / "keep.csv").write_text("mine")
    kept = runner.invoke(app, ["classify", str(folder), *cls, "--out", str(tmp_path / "keep.csv")])
    assert kept.exit_code == 2 and (tmp_path / "keep.csv").read_text() == "mine"
    assert runner.invoke(app, ["predict", str(folder), *cls, "--out", str(tmp_path / "p")]).exit_code == 0
    assert runner.invoke(app, ["predict", str(folder), *cls, "--out", str(tmp_path / "p")]).exit_code == 2


def test_runs_move_together_and_a_missing_segmenter_is_explained(runs, tmp_path):
    from lungcls.cls.train import train_classifier

    train_classifier([runs / "cache"], tmp_path / "a" / "cls", TINY_CLS, ONE_EPOCH, progress=False,
                     segmenter=shutil.copytree(runs / "runs" / "seg", tmp_path / "a" / "seg"))  # fmt: skip
    images = sorted(scans(tmp_path / "in").iterdir())
    before = Pipeline.load(tmp_path / "a" / "cls", device="cpu").classify(images)
    (tmp_path / "a").rename(tmp_path / "b")  # both runs moved together: the stored relative path still holds
    assert np.allclose(Pipeline.load(tmp_path / "b" / "cls", device="cpu").classify(images), before)
    shutil.rmtree(tmp_path / "b" / "seg")
    with pytest.raises(CheckpointError, match=r"not there any more: pass it with --seg-model RUN, or keep both"):
        Pipeline.load(tmp_path / "b" / "cls", device="cpu")
    bundle = runner.invoke(app, ["bundle", str(tmp_path / "b" / "cls"), "--seg-model", str(runs / "runs" / "seg"),
                                 "--out", str(tmp_path / "bundle")])  # fmt: skip
    assert bundle.exit_code == 0 and Pipeline.load(tmp_path / "bundle", device="cpu").segmenter is not None


def test_errors_say_what_was_expected(runs, tmp_path, caplog):
    image = scans(tmp_path / "in", 1) / "scan0.png"
    (tmp_path / "empty").mkdir()
    (tmp_path / "w.safetensors").write_bytes((runs / "runs" / "cls" / "model.safetensors").read_bytes())
    for model, found in ((image, "an image file"), (tmp_path / "w.safetensors", "a bare .safetensors file"),
                         (tmp_path / "empty", "an empty folder")):  # fmt: skip
        result = runner.invoke(app, ["classify", str(image), "--model", str(model), "--out", str(tmp_path / "c.csv")])
        assert result.exit_code == 2 and "expects a classifier run folder, a bundle" in result.output, result.output
        assert found in result.output
    resume = runner.invoke(app, ["train-seg", str(runs / "cache"), "--out", str(tmp_path / "new"), "--resume", "--cpu"])
    assert resume.exit_code == 2 and "nothing to resume (expects an interrupted run folder" in resume.output
    gpu = runner.invoke(app, ["segment", str(image), "--model", str(runs / "runs" / "seg"), "--out",
                              str(tmp_path / "o"), "--device", "gpu"])  # fmt: skip
    assert gpu.exit_code == 2 and "unknown device 'gpu'; use one of: auto, cpu, cuda, cuda:N" in gpu.output
    assert "--placement" in runner.invoke(app, ["train-cls", "--help"]).output
    big = runner.invoke(app, ["train-seg", str(runs / "cache"), "--out", str(tmp_path / "big"), "--encoder",
                              "resnet18", "--encoder-depth", "3", "--image-size", "320", "--epochs", "1",
                              "--batch-size", "8", "--cpu"])  # fmt: skip
    assert big.exit_code == 0 and "larger than the cached images (256 px): they are upsampled" in big.output
    blocked = textwrap.dedent(f"""
        import sys; sys.modules["onnx"] = None  # the export extra is not installed
        from typer.testing import CliRunner
        from lungcls.cli import app
        r = CliRunner().invoke(app, ["export", {str(runs / "runs" / "cls")!r}, "--out", "onnx"])
        print(r.exit_code, r.output)
    """)
    out = subprocess.run([sys.executable, "-c", blocked], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.stdout.startswith("2 ") and "pip install 'lungcls[export]'" in out.stdout, out.stdout + out.stderr
