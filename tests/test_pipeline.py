"""`from lungcls import Pipeline`: bundles, inputs of every kind, and the demo on a tiny setting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lungcls import Pipeline
from lungcls.cli import app
from lungcls.config import ClassifierConfig, SegmenterConfig, TrainConfig
from lungcls.data.phantoms import make_phantom, write_phantom_set
from lungcls.demo import DemoSettings, run_demo


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory):
    """A 4-epoch segmenter and a 1-epoch masked-cropped classifier trained on 60 SYNTHETIC phantoms at 64 px."""
    from lungcls.cls.train import train_classifier
    from lungcls.seg.train import train_segmenter

    root = tmp_path_factory.mktemp("pipe")
    data = [write_phantom_set(root / "data", per_class=20, size=64)]
    seg = SegmenterConfig(encoder_name="resnet18", encoder_depth=3, decoder_channels=[16, 8, 4], image_size=64)
    fast = TrainConfig(epochs=1, batch_size=8, device="cpu")
    seg_train = TrainConfig(epochs=4, batch_size=8, lr=3e-3, warmup_epochs=0.5, device="cpu")
    train_segmenter(data, root / "seg", seg, seg_train, cache_dir=root / "cache", progress=False)
    cfg = ClassifierConfig(arch="resnet18", image_size=32, mode="masked-cropped")
    train_classifier([root / "cache"], root / "cls", cfg, fast, seg_model=root / "seg", progress=False)
    return root


def phantoms(n: int = 4, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.stack([make_phantom(rng, k % 3, size)[0] for k in range(n)])


def test_save_then_load_bundle_gives_identical_predictions(masked_run, tmp_path):
    pipe = Pipeline.load(masked_run / "cls", device="cpu")
    assert pipe.mode == "masked-cropped" and pipe.class_names == ["COVID-19", "Non-COVID", "Normal"]
    bundle = pipe.save(tmp_path / "bundle", metrics={"test_accuracy": 0.5})
    assert {p.name for p in bundle.iterdir()} == {"pipeline.json", "MODEL_CARD.md", "segmenter", "classifier"}
    assert "not a diagnostic device" in (bundle / "MODEL_CARD.md").read_text().lower()
    again = Pipeline.load(bundle, device="cpu")
    images = phantoms()
    a, b = pipe.predict(images), again.predict(images)
    assert [p.label for p in a] == [p.label for p in b]
    assert all(np.array_equal(x.mask, y.mask) and x.probs == y.probs for x, y in zip(a, b))


def test_predict_on_paths_arrays_and_tensors_agrees(masked_run, tmp_path):
    import cv2

    pipe = Pipeline.load(masked_run / "cls", device="cpu")
    images = phantoms(3)
    paths = []
    for k, image in enumerate(images):
        cv2.imwrite(str(tmp_path / f"{k}.png"), image)
        paths.append(tmp_path / f"{k}.png")
    by_path = pipe.classify(paths)
    by_array = pipe.classify(images)
    by_list = pipe.classify(list(images))
    by_tensor = pipe.classify(torch.from_numpy(images)[:, None])
    by_float = pipe.classify(torch.from_numpy(images).float() / 255)
    assert by_path.shape == (3, 3) and np.allclose(by_path.sum(axis=1), 1, atol=1e-5)
    for other in (by_array, by_list, by_tensor, by_float):
        assert np.allclose(by_path, other, atol=1e-6)
    one = pipe.predict(str(paths[0]))
    assert len(one) == 1 and one[0].mask.shape == (64, 64) and one[0].box is not None
    assert len(pipe.segment(images)) == 3
    with pytest.raises(ValueError, match=r"float images must be in \[0, 1\]"):
        pipe.predict(images.astype(np.float32))


def test_demo_runs_end_to_end_on_a_tiny_setting(tmp_path):
    tiny = DemoSettings(working_size=64, per_class=12, seg_epochs=1, cls_epochs=1, cls_size=32, device="cpu")
    results = run_demo(None, tmp_path / "demo", tiny, progress=False)
    for name in ("report.md", "segmentation_test.png", "curves.png", "confusion_raw.png", "confusion_masked.png"):
        assert (tmp_path / "demo" / name).is_file(), name
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "SYNTHETIC" in report and "| raw |" in report and "| masked |" in report
    assert 0 <= results["raw_test"]["accuracy"] <= 1 and results["segmentation_test_dice"]["n"] > 0
    assert Pipeline.load(tmp_path / "demo" / "bundle", device="cpu").mode == "masked"


def test_demo_command_refuses_to_write_into_its_data(tmp_path):
    data = write_phantom_set(tmp_path, per_class=2, size=32)
    result = CliRunner().invoke(app, ["demo", "--data", str(data), "--out", str(data / "out")])
    assert result.exit_code == 2 and "inside the input folder" in result.output


def test_in_lung_share_is_one_inside_and_zero_outside():
    from lungcls.explain import in_lung_share

    lungs = np.zeros((2, 32, 32), np.uint8)
    lungs[:, 8:24, 4:14] = 1
    saliency = np.zeros((2, 32, 32), np.float32)
    saliency[0, 10:20, 6:12] = 1.0  # planted inside the mask
    saliency[1, 0:6, 20:30] = 0.7  # planted outside
    assert in_lung_share(saliency, lungs).tolist() == [1.0, 0.0]
    assert np.isnan(in_lung_share(np.zeros((1, 32, 32)), lungs[:1]))[0]


def test_predict_with_explanations_writes_gradcam_overlays(masked_run, tmp_path):
    import cv2

    folder = tmp_path / "in"
    folder.mkdir()
    for k, image in enumerate(phantoms(3)):
        cv2.imwrite(str(folder / f"phantom {k}.png"), image)
    (folder / "empty.png").write_bytes(b"")
    bundle = Pipeline.load(masked_run / "cls", device="cpu").save(tmp_path / "bundle")
    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(folder),
            "--model",
            str(bundle),
            "--out",
            str(tmp_path / "out"),
            "--explain",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 1 and "empty.png: empty file" in result.output and "3 images classified" in result.output
    assert len(list((tmp_path / "out" / "explain").glob("*.png"))) == 3
    import csv

    with open(tmp_path / "out" / "predictions.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if not r["error"]]
    # an all-zero Grad-CAM map (possible for a barely trained model) has no share and leaves the cell empty
    assert len(rows) == 3 and all(r["in_lung_saliency"] == "" or 0 <= float(r["in_lung_saliency"]) <= 1 for r in rows)
    assert all(0.05 < float(r["lung_fraction"]) < 0.7 for r in rows)  # the segmenter found lungs
    explained = Pipeline.load(bundle, device="cpu").explain(phantoms(2))
    assert explained[0]["cam"].shape == (32, 32) and explained[0]["lung"].shape == (32, 32)


def test_onnx_export_matches_pytorch(masked_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from lungcls.export import wrapped

    result = CliRunner().invoke(app, ["export", str(masked_run / "cls"), "--out", str(tmp_path / "onnx")])
    assert result.exit_code == 0, result.output
    pipe = Pipeline.load(masked_run / "cls", device="cpu")
    for name, (module, size) in wrapped(pipe).items():
        session = ort.InferenceSession(str(tmp_path / "onnx" / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        x = torch.rand(5, 1, size, size)  # another batch size than the export's example: the batch axis is dynamic
        with torch.no_grad():
            expected = module(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4, name
