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
from lungcls.demo import run_demo


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
    train_classifier([root / "cache"], root / "cls", cfg, fast, segmenter=root / "seg", progress=False)
    return root


def phantoms(n: int = 4, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.stack([make_phantom(rng, k % 3, size)[0] for k in range(n)])


def test_save_then_load_bundle_gives_identical_predictions(masked_run, tmp_path):
    pipe = Pipeline.load(masked_run / "cls", device="cpu")
    assert pipe.mode == "masked-cropped" and pipe.class_names == ["COVID-19", "Non-COVID", "Normal"]
    bundle = pipe.save(tmp_path / "bundle", metrics={"test_accuracy": 0.5})
    assert {p.name for p in bundle.iterdir()} == {"pipeline.json", "MODEL_CARD.md", "segmenter", "classifier"}
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "not a diagnostic device" in card.lower() and "SYNTHETIC" in card and "smoke/demo model" in card
    assert str(masked_run) not in card  # never a local path
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(bundle / "classifier" / "model.safetensors") == mode(bundle / "classifier" / "config.json")
    again = Pipeline.load(bundle, device="cpu")
    images = phantoms()
    a, b = pipe.predict(images), again.predict(images)
    assert [p.label for p in a] == [p.label for p in b]
    assert all(np.array_equal(x.mask, y.mask) and x.probs == y.probs for x, y in zip(a, b))


def test_predict_without_masks_gives_the_same_results_and_leaves_the_masks_out(masked_run):
    pipe = Pipeline.load(masked_run / "cls", device="cpu")
    images = phantoms(5)
    full, light = pipe.predict(images), pipe.predict(images, masks=False)
    assert all(f.mask is not None for f in full) and all(p.mask is None for p in light)
    for f, p in zip(full, light):
        assert (f.label, f.probs, f.box, f.lung_fraction, f.flags) == (
            p.label,
            p.probs,
            p.box,
            p.lung_fraction,
            p.flags,
        )


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
    assert len(one) == 1 and one[0].mask.shape == (pipe.size, pipe.size) and one[0].box is not None
    assert len(pipe.segment(images)) == 3
    with pytest.raises(ValueError, match=r"float images must be in \[0, 1\]"):
        pipe.predict(images.astype(np.float32))


def test_a_pipeline_built_in_memory_saves_and_loads(tmp_path):
    from lungcls.cls.classifier import Classifier
    from lungcls.models import build_classifier, build_segmenter
    from lungcls.seg.segmenter import Segmenter

    seg_cfg = SegmenterConfig(encoder_name="resnet18", encoder_depth=3, image_size=64)
    cls_cfg = ClassifierConfig(arch="resnet18", image_size=32, mode="masked")
    pipe = Pipeline(Segmenter(build_segmenter(seg_cfg), seg_cfg, device="cpu"),
                    Classifier(build_classifier(cls_cfg), cls_cfg, device="cpu"))  # fmt: skip
    pipe.save(tmp_path / "bundle")
    again = Pipeline.load(tmp_path / "bundle", device="cpu")
    images = phantoms(2)
    assert np.allclose(pipe.classify(images), again.classify(images), atol=1e-6)


def test_demo_runs_end_to_end(tmp_path, monkeypatch):
    import lungcls.recipes as recipes

    # the demo recipes at their smallest, so the test takes seconds
    monkeypatch.setitem(recipes.SEGMENTER_RECIPES, "demo", (SegmenterConfig(encoder_name="resnet18", encoder_depth=3,
                        decoder_channels=[8, 8, 8], image_size=32), TrainConfig(epochs=1, batch_size=8)))  # fmt: skip
    monkeypatch.setitem(recipes.CLASSIFIER_RECIPES, "demo", (ClassifierConfig(arch="resnet18", image_size=32),
                        TrainConfig(epochs=1, batch_size=8)))  # fmt: skip
    result = run_demo(None, tmp_path / "demo", device="cpu", per_class=12, progress=False)
    for name in ("report.md", "report.html", "segmentation_test.png", "curves.png", "confusion_raw.png",
                 "confusion_masked.png"):  # fmt: skip
        assert (tmp_path / "demo" / name).is_file(), name
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "SYNTHETIC" in report and "| raw |" in report and "| masked |" in report
    assert 0 <= result.classification["raw"].accuracy <= 1 and result.segmentation.summary["dice"]["n"] > 0
    assert Pipeline.load(tmp_path / "demo" / "bundle", device="cpu").mode == "masked"
    assert "data:image/png;base64," in (tmp_path / "demo" / "report.html").read_text()


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
    picture = cv2.imread(str(tmp_path / "out" / "explain" / "phantom 0.png"))
    assert min(picture.shape[:2]) >= 512  # the 64 px phantom shown at a readable size, caption bar on top
    explained = Pipeline.load(bundle, device="cpu").explain(phantoms(2), method="gradcam++")
    assert explained[0]["cam"].shape == (32, 32) and explained[0]["lung"].shape == (32, 32)
    with pytest.raises(ValueError, match="unknown CAM method 'deep-magic'; choose one of gradcam"):
        Pipeline.load(bundle, device="cpu").explain(phantoms(1), method="deep-magic")


def test_segment_pipeline_and_train_cls_use_the_same_masks_and_the_csvs_agree(masked_run, tmp_path):
    import csv

    import cv2

    from lungcls.data import Manifest, PackedCache, Sample, prepare_cache

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(3)
    paths = []
    for k in range(4):  # at the working size, so the files' own size is the masks' size
        cv2.imwrite(str(folder / f"x{k}.png"), make_phantom(rng, k % 3, 256)[0])
        paths.append(folder / f"x{k}.png")
    pipe = Pipeline.load(masked_run / "cls", device="cpu")
    by_pipeline = pipe.segment(paths)
    seg_run = str(masked_run / "seg")
    assert CliRunner().invoke(app, ["segment", str(folder), "--model", seg_run, "--out", str(tmp_path / "seg"),
                                    "--cpu"]).exit_code == 0  # fmt: skip
    by_cli = [cv2.imread(str(tmp_path / "seg" / "masks" / f"x{k}.png"), cv2.IMREAD_GRAYSCALE) // 255 for k in range(4)]
    prepare_cache(Manifest([Sample(str(p), "Normal") for p in paths]), tmp_path / "cache", progress=False)
    by_training = pipe.segmenter.cache_masks(
        PackedCache.open(tmp_path / "cache"), progress=False
    )  # what train-cls uses
    for a, b, c in zip(by_pipeline, by_cli, by_training):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    assert CliRunner().invoke(app, ["classify", str(folder), "--model", str(masked_run / "cls"), "--out",
                                    str(tmp_path / "classify.csv"), "--cpu"]).exit_code == 0  # fmt: skip
    with open(tmp_path / "seg" / "segment.csv") as f1, open(tmp_path / "classify.csv") as f2:
        seg_rows, cls_rows = list(csv.DictReader(f1)), list(csv.DictReader(f2))
    shared = ["path", "width", "height", "lung_fraction", "box_x0", "box_y0", "box_x1", "box_y1", "flags"]
    assert [[r[k] for k in shared] for r in seg_rows] == [[r[k] for k in shared] for r in cls_rows]


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


def test_lungcls_train_is_the_comfortable_one_command_path(tmp_path):
    data = write_phantom_set(tmp_path / "data", per_class=8, size=64)
    result = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), "--recipe", "demo",
                                      "--epochs", "1", "--seg-epochs", "1", "--image-size", "32", "--seg-image-size",
                                      "32", "--batch-size", "8", "--arch", "resnet18", "--cpu", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    for part in ("== stage 1: lung U-Net", "== then stage 2: resnet18", "classifier test", "| weighted avg |"):
        assert part in result.output, part
    assert Pipeline.load(tmp_path / "run" / "bundle", device="cpu").mode == "masked"


def test_a_bundle_with_a_raw_classifier_falls_back_to_it_and_predict_says_what_it_decided(masked_run, tmp_path):
    import csv

    import cv2

    from lungcls.cls.train import train_classifier

    cfg = ClassifierConfig(arch="resnet18", image_size=32, mode="raw")
    train_classifier([masked_run / "cache"], tmp_path / "raw", cfg, TrainConfig(epochs=1, batch_size=8, device="cpu"),
                     progress=False)  # fmt: skip
    runner = CliRunner()
    made = runner.invoke(app, ["bundle", str(masked_run / "cls"), "--raw-model", str(tmp_path / "raw"), "--out",
                               str(tmp_path / "bundle"), "-q"])  # fmt: skip
    assert made.exit_code == 0, made.output
    assert (tmp_path / "bundle" / "raw-classifier" / "model.safetensors").is_file()
    pipe = Pipeline.load(tmp_path / "bundle", device="cpu")
    assert pipe.raw is not None and pipe.raw.cfg.mode == "raw"
    folder = tmp_path / "in"
    folder.mkdir()
    for k, image in enumerate(phantoms(4)):
        cv2.imwrite(str(folder / f"p{k}.png"), image)
    cv2.imwrite(str(folder / "blank.png"), np.zeros((64, 64), np.uint8))  # no lungs: doubtful in a masked mode
    result = runner.invoke(app, ["predict", str(folder), "--model", str(tmp_path / "bundle"), "--out", str(tmp_path / "out"),
                                 "--on-doubtful", "raw", "--abstain-below", "0.5", "--cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "--abstain-below 0.5: on the classifier's Val images it answers" in result.output
    assert "decisions:" in result.output
    with open(tmp_path / "out" / "predictions.csv", newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert {r["decision"] for r in rows.values()} <= {"answered", "flagged", "raw-fallback", "abstained"}
    blank = rows["blank"]
    assert blank["decision"] in ("raw-fallback", "abstained") and "doubtful lungs" in blank["decision_reason"]
    assert all(r["mask_dice_estimate"] != "" for r in rows.values())
    summary = (tmp_path / "out" / "decisions.md").read_text()
    assert "| raw-fallback |" in summary and "5 images." in summary
    reported = runner.invoke(app, ["report", str(tmp_path / "out"), "-q"])
    assert reported.exit_code == 0 and "raw-fallback" in (tmp_path / "out" / "report.html").read_text()
