"""Stage 2: crop-and-mask pixels, the 1-channel stem, metrics against a hand count, and the CLI."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torchvision.models import resnet18
from typer.testing import CliRunner

from lungcls.cli import app
from lungcls.cls.report import classification_report, format_markdown
from lungcls.cls.task import weighted_cross_entropy
from lungcls.cls.train import MAX_CLASS_WEIGHT, class_weights
from lungcls.config import ClassifierConfig, SegmenterConfig, TrainConfig
from lungcls.data import CLASS_NAMES, discover, make_split, prepare_cache
from lungcls.masking import crop_and_mask, lung_boxes
from lungcls.models.classifiers import gray_stem
from lungcls.seg.train import train_segmenter


def ramp(h: int = 64, w: int = 64) -> torch.Tensor:
    """uint8 (1, 1, H, W) with value 2*x + y, so every pixel is identifiable."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (2 * x + y).to(torch.uint8)[None, None]


def planted_mask() -> torch.Tensor:
    m = torch.zeros(1, 1, 64, 64, dtype=torch.uint8)
    m[..., 16:48, 8:24] = 1  # left lung: rows 16-47, columns 8-23
    m[..., 20:44, 40:56] = 1  # right lung: rows 20-43, columns 40-55
    return m


def test_each_mode_yields_the_documented_pixels():
    image, mask = ramp(), planted_mask()
    raw, lungs, _ = crop_and_mask(image, mask, "raw", 64)
    assert torch.equal(raw * 255, image.float())  # the whole CXR, untouched at the same size
    assert torch.equal(lungs, mask)  # the lungs in the input's geometry
    masked, _, _ = crop_and_mask(image, mask, "masked", 64)
    assert torch.equal(masked * 255, (image * mask).float())  # zero outside the lungs, same field of view
    boxes, empty = lung_boxes(mask, margin=0.0)
    assert boxes.tolist() == [[8.0, 16.0, 56.0, 48.0]] and not empty.any()
    cropped, _, _ = crop_and_mask(image, mask, "cropped", 32, margin=0.0)  # box 48 x 32 px -> 32 x 32
    expected = torch.nn.functional.interpolate(
        image[..., 16:48, 8:56].float(), size=(32, 32), mode="bilinear", align_corners=False
    )
    assert (cropped * 255 - expected).abs().max() < 1.0  # bilinear resampling of exactly the lung box
    both, lungs, _ = crop_and_mask(image, mask, "masked-cropped", 32, margin=0.0)
    assert both[0, 0, :, 12:20].max() == 0  # the gap between the lungs (columns 24-39 of 8-55) stays black
    assert both.max() > 0 and both[lungs == 0].max() == 0  # exactly 0 outside the lungs
    wide, _ = lung_boxes(mask, margin=0.25)
    assert wide.tolist() == [[0.0, 8.0, 64.0, 56.0]]  # grown by 25% of 48 x 32 on each side, clipped to the image


def test_empty_mask_falls_back_to_raw_and_is_flagged():
    images = torch.cat([ramp(), ramp()])
    masks = torch.cat([planted_mask(), torch.zeros(1, 1, 64, 64, dtype=torch.uint8)])
    for size in (64, 48):
        raw, _, _ = crop_and_mask(images, masks, "raw", size)
        for mode in ("masked", "cropped", "masked-cropped"):
            out, _, empty = crop_and_mask(images, masks, mode, size)
            assert empty.tolist() == [False, True]
            assert torch.equal(out[1], raw[1]), (mode, size)
    with pytest.raises(ValueError, match="expected one of raw, masked, cropped, masked-cropped"):
        crop_and_mask(images, masks, "lungs-only", 64)


def test_one_channel_stem_from_summed_rgb_filters_matches_the_rgb_model_on_gray():
    torch.manual_seed(0)
    rgb = resnet18(num_classes=3).eval()
    gray = resnet18(num_classes=3).eval()
    gray.load_state_dict(rgb.state_dict())
    gray.conv1 = gray_stem(rgb.conv1)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(gray(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-5)


def test_metrics_agree_with_a_hand_computed_confusion_matrix():
    # true \ predicted: COVID [3, 1, 0], Non-COVID [1, 2, 1], Normal [0, 0, 4]
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    preds = torch.tensor([0, 0, 0, 1, 0, 1, 1, 2, 2, 2, 2, 2])
    probs = torch.nn.functional.one_hot(preds, 3).float() * 0.8 + 0.2 / 3
    r = classification_report(probs, labels, ["COVID-19", "Non-COVID", "Normal"], n_boot=50)
    assert r.confusion == [[3, 1, 0], [1, 2, 1], [0, 0, 4]]
    assert r.accuracy == pytest.approx(9 / 12)
    covid, non, normal = (r.per_class[n] for n in ("COVID-19", "Non-COVID", "Normal"))
    assert (covid["precision"], covid["recall"], covid["support"]) == (pytest.approx(3 / 4), pytest.approx(3 / 4), 4)
    assert non["precision"] == pytest.approx(2 / 3) and non["recall"] == pytest.approx(2 / 4)
    assert normal["precision"] == pytest.approx(4 / 5) and normal["recall"] == pytest.approx(1.0)
    assert covid["specificity"] == pytest.approx(7 / 8)  # 8 non-COVID images, 1 called COVID
    f1 = [2 * p * q / (p + q) for p, q in ((3 / 4, 3 / 4), (2 / 3, 1 / 2), (4 / 5, 1.0))]
    assert r.macro_avg["f1"] == pytest.approx(sum(f1) / 3)
    assert r.weighted_avg["f1"] == pytest.approx(sum(f1) / 3)  # equal supports
    lo, hi = r.ci95["accuracy"]
    assert lo <= r.accuracy <= hi and r.ci95["unit"] == "image"
    table = format_markdown(r)
    assert "| accuracy | | | 0.75 | 12 |" in table and "| macro avg |" in table and "| weighted avg |" in table


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, shared_data):
    """A 1-epoch segmenter and a 1-epoch masked ResNet-18 on 60 real CXRs of three classes at 32 px."""
    root = tmp_path_factory.mktemp("cls")
    manifest = discover(shared_data / "ieee8023-radiologist100").manifest + discover(shared_data / "nih-cxr8").manifest
    by_class = {c: [] for c in CLASS_NAMES}
    for s in manifest:
        if len(by_class[s.label]) < 20:
            by_class[s.label].append(s)
    manifest.samples = [s for v in by_class.values() for s in v]
    prepare_cache(
        make_split(manifest, val=0.25, test=0.25, seed=0), root / "cache", size=(64, 64), workers=0, progress=False
    )
    seg = SegmenterConfig(encoder_name="resnet18", encoder_depth=3, decoder_channels=[16, 8, 4], image_size=64)
    train_segmenter([root / "cache"], root / "seg", seg, TrainConfig(epochs=1, batch_size=8, device="cpu"), progress=False)
    result = CliRunner().invoke(app, [
        "train-cls", str(root / "cache"), "--out", str(root / "cls"), "--mode", "masked-cropped", "--seg-model", str(root / "seg"),
        "--arch", "resnet18", "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--device", "cpu",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return root


def test_train_cls_writes_the_reference_table_and_figures(tiny_runs):
    run = tiny_runs / "cls"
    for name in (
        "model.safetensors",
        "config.json",
        "eval_val.json",
        "eval_test.md",
        "confusion_test.png",
        "reliability_test.png",
        "images.json",
        "history.csv",
    ):
        assert (run / name).is_file(), name
    text = (run / "eval_test.md").read_text()
    for row in (
        "| COVID-19 |",
        "| Non-COVID |",
        "| Normal |",
        "| accuracy |",
        "| macro avg |",
        "| weighted avg |",
        "AUROC",
    ):
        assert row in text
    result = CliRunner().invoke(app, ["evaluate-cls", str(tiny_runs / "cache"), "--model", str(run), "--split", "Test",
                                      "--out", str(tiny_runs / "ev"), "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| weighted avg |" in result.output and (tiny_runs / "ev" / "confusion_test.png").is_file()


def test_classify_a_folder_with_one_corrupt_file(tiny_runs, radiologist100, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    real = sorted((radiologist100 / "Lung Segmentation Data" / "All" / "COVID-19" / "images").iterdir())[:3]
    for p in real:
        shutil.copy(p, folder / p.name)
    (folder / "broken.png").write_bytes(real[0].read_bytes()[:1500])
    out = tmp_path / "classify.csv"
    result = CliRunner().invoke(
        app, ["classify", str(folder), "--model", str(tiny_runs / "cls"), "--out", str(out), "--device", "cpu"]
    )
    assert result.exit_code == 1 and "broken.png" in result.output and "3 images classified" in result.output
    lines = out.read_text().splitlines()
    assert lines[0] == ("path,name,width,height,predicted,decision,decision_reason,confidence,p_COVID-19,p_Non-COVID,"
                        "p_Normal,gate_score,lung_fraction,box_x0,box_y0,box_x1,box_y1,flags,mask_dice_estimate,error,"
                        "model_warnings")  # fmt: skip
    import csv

    good = [r for r in csv.DictReader(lines) if "broken" not in r["path"]]
    assert len(good) == 3 and all(r["predicted"] in ("COVID-19", "Non-COVID", "Normal") for r in good)
    probs = [sum(float(r[f"p_{c}"]) for c in ("COVID-19", "Non-COVID", "Normal")) for r in good]
    assert all(abs(p - 1) < 1e-3 for p in probs) and all(r["decision"] in ("answered", "flagged") for r in good)
    assert "truncated or corrupt" in next(line for line in lines if "broken" in line)


def test_masked_input_stays_exactly_zero_outside_the_lungs_under_augmentation():
    from lungcls.cls.task import ClassificationTask
    from lungcls.config import AugmentConfig
    from lungcls.data.augment import DeviceAugment
    from lungcls.data.loader import Batch

    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(x.detach().clone())
            return x.mean(dim=(2, 3)).repeat(1, 3) * self.w

        w = torch.nn.Parameter(torch.ones(1))

    images = torch.full((4, 1, 64, 64), 180, dtype=torch.uint8)
    masks = planted_mask().repeat(4, 1, 1, 1)
    strong = DeviceAugment(AugmentConfig(brightness=0.3, contrast=0.3))
    for mode in ("masked", "masked-cropped"):
        cfg = ClassifierConfig(mode=mode, image_size=48)
        task = ClassificationTask(Spy(), cfg, torch.device("cpu"), strong)
        batch = Batch(images, masks, torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.bool), torch.arange(4))
        task.training_loss(batch, torch.Generator().manual_seed(0))
        background = (0 - cfg.mean) / cfg.std  # a normalised 0
        x, lungs, _ = task.prepare(images, masks)
        strong_bg = seen[-1]
        _, lungs_aug = strong(x, lungs, torch.Generator().manual_seed(0))
        assert torch.all(strong_bg[lungs_aug == 0] == background), mode  # exactly 0 before normalising
        assert (strong_bg[lungs_aug == 1] != background).any()  # the lungs are there


def test_temperature_scaling_recovers_a_known_temperature_and_lowers_the_ece():
    from lungcls.cls.calibration import calibration_summary, fit_temperature

    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 3, generator=g) * 3
    labels = torch.multinomial(torch.softmax(z / 2.5, dim=1), 1, generator=g)[:, 0]  # true temperature 2.5
    t = fit_temperature(z, labels)
    assert t == pytest.approx(2.5, rel=0.1)
    s = calibration_summary(z, labels, t)
    assert s["ece_after"] < s["ece_before"] and s["ece_after"] < 0.03
    assert fit_temperature(z, labels) == t  # deterministic


def test_the_library_and_the_cli_train_the_same_recipe_and_the_cpu_never_starts_the_gpu_recipe(monkeypatch, tmp_path):
    import lungcls.cls.train as train_module
    from lungcls.recipes import classifier_recipe

    captured = {}

    def fake(data, out, model=None, train=None, **kw):
        captured.update(model=model, train=train)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train_classifier", fake)
    (tmp_path / "data").mkdir()
    result = CliRunner().invoke(app, ["train-cls", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--cpu"])
    assert result.exit_code == 130 and "--resume" in result.output
    assert "no GPU: training with the 'cpu' recipe" in result.output  # said, not silent
    model, train = classifier_recipe("cpu", device="cpu")
    assert (captured["model"], captured["train"]) == (model, train) == classifier_recipe(device="cpu")
    asked = CliRunner().invoke(app, ["train-cls", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--cpu",
                                     "--recipe", "default"])  # fmt: skip
    assert asked.exit_code == 130 and (captured["model"], captured["train"]) == classifier_recipe("default", device="cpu")
    assert captured["train"].epochs == 80 and captured["train"].label_smoothing == 0.1 and captured["train"].class_weighting


def test_imagenet_style_weights_file_is_loaded_and_its_stem_summed(tmp_path):
    from safetensors.torch import save_file

    from lungcls import CheckpointError
    from lungcls.models import build_classifier

    torch.manual_seed(1)
    source = resnet18()  # stands in for downloaded ImageNet weights (3-channel stem, 1000 classes)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "imagenet.safetensors")
    model = build_classifier(ClassifierConfig(arch="resnet18"), weights=tmp_path / "imagenet.safetensors")
    assert model.conv1.weight.shape[1] == 1 and model.fc.out_features == 3
    assert torch.allclose(model.conv1.weight, source.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    with pytest.raises(CheckpointError, match="no such weights file"):
        build_classifier(ClassifierConfig(arch="resnet18"), weights=tmp_path / "missing.safetensors")


def test_any_class_set_flows_through_training_reports_and_csvs(tmp_path):
    """A Tuberculosis / Normal data set trains a two-class classifier; reports and CSVs follow its classes."""
    import csv

    from lungcls.data.phantoms import write_phantom_set

    data = write_phantom_set(tmp_path / "raw", per_class=10, size=64)
    images = data / "Lung Segmentation Data" / "All"
    shutil.rmtree(images / "Non-COVID")
    (images / "COVID-19").rename(images / "Tuberculosis")
    (data / "labels.csv").unlink()
    result = CliRunner().invoke(app, ["train-cls", str(data), "--out", str(tmp_path / "run"), "--recipe", "demo",
                                      "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--cpu", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| Tuberculosis |" in result.output and "| COVID-19 |" not in result.output
    out = tmp_path / "tb.csv"
    scan = next((images / "Tuberculosis" / "images").iterdir())
    assert CliRunner().invoke(app, ["classify", str(scan), "--model", str(tmp_path / "run"), "--out", str(out),
                                    "--cpu"]).exit_code == 0  # fmt: skip
    with open(out, newline="") as f:
        row = next(csv.DictReader(f))
    assert {"p_Normal", "p_Tuberculosis"} <= set(row) and "p_COVID-19" not in row
    assert row["predicted"] in ("Normal", "Tuberculosis")


def test_a_table_by_source_names_an_unnamed_source():
    labels = torch.tensor([0, 1, 2])
    report = classification_report(torch.eye(3), labels, ["COVID-19", "Non-COVID", "Normal"], sources=["", "", ""], n_boot=5)
    assert "| (unnamed) | 3 | 1.000 |" in report.markdown()


def test_one_rare_class_cannot_pull_every_image_towards_it():
    # masked-gt on the shared sets: Train held 427 COVID-19, 25 Non-COVID and 1 Normal image
    labels = np.array([0] * 427 + [1] * 25 + [2])
    w = class_weights(labels, 3)
    assert w[2] == MAX_CLASS_WEIGHT and w[0] < 1 < w[1] < MAX_CLASS_WEIGHT
    logits = torch.tensor([[4.0, 0.0, 0.0]] * 8)  # confident and right
    covid = torch.zeros(8, dtype=torch.long)
    plain = weighted_cross_entropy(logits, covid, None, label_smoothing=0.1)
    assert torch.isclose(weighted_cross_entropy(logits, covid, w, label_smoothing=0.1), plain)
    assert torch.nn.functional.cross_entropy(logits, covid, weight=w, label_smoothing=0.1) > 3 * plain  # torch's way
