"""A new user's second round (issue 21), replayed: one output policy, bundles checked before they are trusted,
interrupts that resume, the model cards' warnings said where the model is used, odd inputs named, every
command taking --cpu -q -v. Each test failed on the version before it."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lungcls import CheckpointError, Pipeline
from lungcls.cli import app
from lungcls.config import TrainConfig
from lungcls.data.phantoms import write_phantom_set

from .conftest import phantom_scans, tiny_configs

runner = CliRunner()
TINY_SEG, TINY_CLS, ONE_EPOCH = tiny_configs()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A bundle of a 1-epoch segmenter and a 1-epoch masked classifier on 45 SYNTHETIC phantoms."""
    from lungcls.cls.train import train_classifier
    from lungcls.seg.train import train_segmenter

    root = tmp_path_factory.mktemp("round2")
    data = [write_phantom_set(root / "data", per_class=15, size=64)]
    seg = train_segmenter(data, root / "seg", TINY_SEG, ONE_EPOCH, cache_dir=root / "cache", progress=False)
    clf = train_classifier([root / "cache"], root / "cls", TINY_CLS, ONE_EPOCH, segmenter=seg.model, progress=False)
    return Pipeline(seg.model, clf.model).save(root / "bundle")


def scans(folder: Path, n: int = 3) -> Path:
    return phantom_scans(folder, n, seed=2)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1, 2: one output policy -------------------------------------------------------------------------------------


def test_segment_never_replaces_an_earlier_result_unasked_and_force_replaces_it_whole(bundle, tmp_path):
    folder, out = scans(tmp_path / "in"), tmp_path / "out"
    model = ["--model", str(bundle), "--cpu", "-q"]
    assert runner.invoke(app, ["segment", str(folder), "--out", str(out), *model]).exit_code == 0
    (out / "notes.txt").write_text("mine")
    before = files(out)
    again = runner.invoke(app, ["segment", str(folder), "--out", str(out), *model])
    assert again.exit_code == 2 and "is not empty" in again.output and "--force" in again.output
    assert files(out) == before  # nothing touched
    one = scans(tmp_path / "one", n=1)
    forced = runner.invoke(app, ["segment", str(one), "--out", str(out), "--masks-only", "--force", *model])
    assert forced.exit_code == 0, forced.output
    rows = list(csv.DictReader(open(out / "segment.csv")))
    assert [r["name"] for r in rows] == ["scan0"] and sorted(p.name for p in (out / "masks").iterdir()) == ["scan0.png"]
    assert not (out / "overlays").exists() and not (out / "crops").exists()  # the old outputs went with the old CSV
    assert (out / "notes.txt").read_text() == "mine" and not list(tmp_path.glob(".out.*"))  # no staging left behind


def test_export_and_bundle_refuse_an_existing_output_and_replace_it_with_force(bundle, tmp_path):
    pytest.importorskip("onnx")
    out = tmp_path / "onnx"
    assert runner.invoke(app, ["export", str(bundle), "--out", str(out), "-q"]).exit_code == 0
    before = files(out)
    again = runner.invoke(app, ["export", str(bundle), "--out", str(out), "-q"])
    assert again.exit_code == 2 and "is not empty" in again.output and files(out) == before
    assert runner.invoke(app, ["export", str(bundle), "--out", str(out), "--force", "-q"]).exit_code == 0
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("mine")
    refused = runner.invoke(app, ["bundle", str(bundle), "--out", str(tmp_path / "b")])
    assert refused.exit_code == 2 and (tmp_path / "b" / "x").read_text() == "mine"


@pytest.mark.parametrize("command", ["segment", "predict", "bundle", "export", "evaluate-seg"])
def test_an_existing_file_as_output_folder_is_a_one_line_usage_error(bundle, tmp_path, command):
    (tmp_path / "taken").write_text("mine")
    folder = scans(tmp_path / "in", 1)
    args = {
        "segment": ["segment", str(folder), "--model", str(bundle)],
        "predict": ["predict", str(folder), "--model", str(bundle)],
        "bundle": ["bundle", str(bundle)],
        "export": ["export", str(bundle)],
        "evaluate-seg": ["evaluate-seg", str(folder), "--model", str(bundle)],
    }[command]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "taken"), "--cpu"])
    assert result.exit_code == 2 and "is a file; give a folder" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    assert (tmp_path / "taken").read_text() == "mine"


# -- 3, 8: bundles checked before they are trusted; card warnings where the model is used -----------------------------


@pytest.mark.parametrize(("field", "value", "said"), [
    ("temperature", -1, "model.temperature"), ("temperature", 0, "model.temperature"),
    ("image_size", 100000, "model.image_size"), ("margin", 7.5, "model.margin"),
])  # fmt: skip
def test_a_tampered_config_is_refused_naming_the_file_and_the_field(bundle, tmp_path, field, value, said):
    copy = shutil.copytree(bundle, tmp_path / "copy")
    config = json.loads((copy / "classifier" / "config.json").read_text())
    config["model"][field] = value
    (copy / "classifier" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=rf"classifier/config.json: config field '{said}'"):
        Pipeline.load(copy, device="cpu")
    result = runner.invoke(app, ["classify", str(scans(tmp_path / "in", 1)), "--model", str(copy), "--out",
                                 str(tmp_path / "c.csv"), "--cpu"])  # fmt: skip
    assert result.exit_code == 2 and said in result.output and not (tmp_path / "c.csv").exists()


@pytest.mark.parametrize("stage", ["classifier", "segmenter"])
def test_one_byte_changed_in_the_weights_is_refused(bundle, tmp_path, stage):
    copy = shutil.copytree(bundle, tmp_path / "copy")
    weights = copy / stage / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{stage}/model.safetensors: its SHA-256 .* is not the one recorded"):
        Pipeline.load(copy, device="cpu")


def test_the_model_cards_warnings_are_said_and_written_wherever_the_model_is_used(bundle, tmp_path):
    folder = scans(tmp_path / "in", 2)
    result = runner.invoke(app, ["classify", str(folder), "--model", str(bundle), "--out", str(tmp_path / "c.csv"),
                                 "--cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "WARNING classifier" in result.output and "SYNTHETIC phantoms" in result.output
    assert result.output.count("trained on SYNTHETIC phantoms") == 2  # once per model, not once per image
    rows = list(csv.DictReader(open(tmp_path / "c.csv")))
    assert all("SYNTHETIC" in r["model_warnings"] and "smoke/demo model" in r["model_warnings"] for r in rows)
    assert json.loads((bundle / "pipeline.json").read_text())["warnings"]  # and in the bundle's metadata
    seg = runner.invoke(app, ["segment", str(folder), "--model", str(bundle), "--out", str(tmp_path / "s"), "--cpu"])
    assert seg.exit_code == 0 and "WARNING segmenter" in seg.output


def test_a_classifier_near_chance_or_with_a_temperature_at_its_bound_is_flagged():
    from lungcls.model_card import warnings_for

    chance = {"evaluation": {"test": {"accuracy": 0.34, "macro_f1": 0.2, "per_class": {"a": {}, "b": {}, "c": {}}}}}
    assert any("near chance" in w for w in warnings_for(chance, "classifier"))
    bound = {"evaluation": {"val": {"accuracy": 0.9, "macro_f1": 0.9, "temperature": 19.999}}}
    assert any("temperature reached its bound" in w for w in warnings_for(bound, "classifier"))
    assert warnings_for({"evaluation": {"val": {"accuracy": 0.9, "macro_f1": 0.9, "temperature": 1.3}},
                         "data": {"train_images": 5000}, "train": {"epochs": 40}}, "classifier") == []  # fmt: skip


# -- 4: interrupts that resume ------------------------------------------------------------------------------------


def test_ctrl_c_in_the_first_epoch_saves_where_training_is_and_resume_reaches_the_same_weights(tmp_path, monkeypatch):
    from lungcls.seg.task import SegmentationTask
    from lungcls.seg.train import train_segmenter
    from lungcls.store import load_tensors

    data = [write_phantom_set(tmp_path / "data", per_class=12, size=64)]
    cfg = TrainConfig(epochs=2, batch_size=4, device="cpu", seed=3)
    whole = train_segmenter(data, tmp_path / "whole", TINY_SEG, cfg, cache_dir=tmp_path / "cache", progress=False)
    real, calls = SegmentationTask.training_loss, []

    def interrupted(self, batch, generator):
        calls.append(1)
        if len(calls) == 3:  # Ctrl-C during the third step of the first epoch
            raise KeyboardInterrupt
        return real(self, batch, generator)

    monkeypatch.setattr(SegmentationTask, "training_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_segmenter([tmp_path / "cache"], tmp_path / "cut", TINY_SEG, cfg, progress=False)
    state = json.loads((tmp_path / "cut" / "last.json").read_text())
    assert state["epoch"] == -1 and state["inside_epoch"]["step"] == 2 and state["interrupted"]
    monkeypatch.setattr(SegmentationTask, "training_loss", real)
    resumed = train_segmenter([tmp_path / "cache"], tmp_path / "cut", TINY_SEG, cfg, resume=True, progress=False)
    a, b = load_tensors(tmp_path / "whole" / "last.safetensors"), load_tensors(tmp_path / "cut" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))
    assert [r["train_loss"] for r in resumed.fit.history] == pytest.approx([r["train_loss"] for r in whole.fit.history])


def test_lungcls_train_interrupted_says_the_exact_command_and_resume_continues_both_stages(tmp_path, monkeypatch):
    from lungcls.cls.task import ClassificationTask

    data = write_phantom_set(tmp_path / "data", per_class=10, size=64)
    cmd = ["train", str(data), "--out", str(tmp_path / "t"), "--recipe", "demo", "--seg-epochs", "1", "--epochs", "1",
           "--image-size", "32", "--seg-image-size", "32", "--cpu", "-q"]  # fmt: skip
    real = ClassificationTask.training_loss

    def ctrl_c(self, batch, generator):
        raise KeyboardInterrupt

    monkeypatch.setattr(ClassificationTask, "training_loss", ctrl_c)  # Ctrl-C in stage 2's first step
    cut = runner.invoke(app, cmd)
    assert cut.exit_code == 130 and "continue it with:" in cut.output and "--resume" in cut.output
    assert json.loads((tmp_path / "t" / "segmenter" / "config.json").read_text())["status"] == "complete"
    monkeypatch.setattr(ClassificationTask, "training_loss", real)
    resumed = runner.invoke(app, [*cmd, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert Pipeline.load(tmp_path / "t" / "bundle", device="cpu").mode == "masked"


def test_an_interrupted_run_moved_with_its_segmenter_resumes_from_where_it_now_is(tmp_path, monkeypatch):
    from lungcls.cls.task import ClassificationTask
    from lungcls.cls.train import train_classifier
    from lungcls.seg.train import train_segmenter

    data = [write_phantom_set(tmp_path / "data", per_class=8, size=64)]
    seg = train_segmenter(data, tmp_path / "a" / "seg", TINY_SEG, ONE_EPOCH, cache_dir=tmp_path / "cache", progress=False)

    def ctrl_c(self, batch, generator):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(ClassificationTask, "training_loss", ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            train_classifier([tmp_path / "cache"], tmp_path / "a" / "cls", TINY_CLS, ONE_EPOCH, segmenter=seg.model,
                             progress=False)  # fmt: skip
    (tmp_path / "a").rename(tmp_path / "b")  # both runs moved: only the stored relative path still leads to stage 1
    run = train_classifier([tmp_path / "cache"], tmp_path / "b" / "cls", resume=True, progress=False)
    assert run.model.segmenter_spec() == tmp_path / "b" / "seg"
    assert Pipeline.load(tmp_path / "b" / "cls", device="cpu").segmenter.info["source"]["name"] == str(tmp_path / "b" / "seg")


# -- 5, 6, 9: inputs and models named for what they are ---------------------------------------------------------------


def test_segment_on_a_dataset_folder_skips_its_mask_folders_and_says_so(tmp_path):
    data = write_phantom_set(tmp_path / "data", per_class=2, size=64)  # COVID-QU-Ex's layout: images/, lung and infection masks/
    result = runner.invoke(app, ["segment", str(data), "--out", str(tmp_path / "out"), "--cpu", "-q"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "out" / "segment.csv")))
    assert len(rows) == 6 and all("/images/" in r["path"] for r in rows)
    assert "skipped 6 mask folders of known layouts" in result.output


def test_a_builtin_segmenter_given_as_a_classifier_is_named_for_what_it_is(tmp_path):
    image = scans(tmp_path / "in", 1) / "scan0.png"
    result = runner.invoke(app, ["classify", str(image), "--model", "unet-r18-covidqu", "--out", str(tmp_path / "c.csv")])
    assert result.exit_code == 2
    assert "'unet-r18-covidqu' is a built-in segmenter, not a classifier" in result.output
    assert "lungcls ships no built-in classifiers" in result.output


def test_tiny_images_are_refused_by_name_and_the_batch_goes_on(tmp_path):
    folder = scans(tmp_path / "in", 1)
    cv2.imwrite(str(folder / "dot.png"), np.full((1, 1), 128, np.uint8))
    result = runner.invoke(app, ["segment", str(folder), "--out", str(tmp_path / "out"), "--cpu", "-q"])
    assert result.exit_code == 1 and "dot.png" in result.output
    assert "image is 1x1 pixels, smaller than the minimum of 32x32" in result.output
    assert len(list((tmp_path / "out" / "masks").iterdir())) == 1


def test_one_file_listed_twice_with_two_labels_is_a_label_conflict(tmp_path):
    folder = scans(tmp_path / "in", 2)
    (tmp_path / "m.csv").write_text(f"image,label\n{folder / 'scan0.png'},Normal\n{folder / 'scan1.png'},Normal\n"
                                    f"{folder / 'scan0.png'},COVID-19\n")  # fmt: skip
    result = runner.invoke(app, ["data", "inspect", str(tmp_path / "m.csv")])
    assert result.exit_code == 2 and "label conflict" in result.output and "scan0.png" in result.output
    assert "Normal" in result.output and "COVID-19" in result.output


# -- 7, 10, 11: options everywhere, honest defaults, the src layout ----------------------------------------------------


def all_commands() -> list[list[str]]:
    import typer.main

    group = typer.main.get_command(app)
    out = []
    for name, command in group.commands.items():
        subs = getattr(command, "commands", None)
        out += [[name, sub] for sub in subs] if subs else [[name]]
    return out


@pytest.mark.parametrize("command", all_commands(), ids=" ".join)
def test_every_command_takes_cpu_q_v_before_and_after_its_name(command):
    after = runner.invoke(app, [*command, "--cpu", "-q", "-v", "--help"])
    assert after.exit_code == 0, after.output
    assert "--cpu" in after.output and "-q, --quiet" in after.output and "-v, --verbose" in after.output
    assert runner.invoke(app, ["--cpu", "-q", "-v", *command, "--help"]).exit_code == 0


def test_the_models_command_runs_with_every_common_flag():
    result = runner.invoke(app, ["--cpu", "models", "-q", "-v"])
    assert result.exit_code == 0 and "unet-r18-covidqu (default)" in result.output


def test_a_clone_folder_beside_the_working_directory_does_not_shadow_the_installed_package(tmp_path):
    clone = tmp_path / "lungcls"  # what `git clone` leaves: a folder named lungcls without an __init__.py
    (clone / "src").mkdir(parents=True)
    (clone / "README.md").write_text("a clone")
    out = subprocess.run([sys.executable, "-c", "from lungcls import Pipeline; import lungcls; print(lungcls.__file__)"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert str(clone) not in out.stdout
