"""Infection: reading COVID-QU-Ex's infection masks, training and evaluating an infection U-Net on the stage-1 engine,
and measuring the infection in each lung (shares, extent score, grade) in `segment` and `Pipeline`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lungcls import CheckpointError
from lungcls.cli import app
from lungcls.config import SegmenterConfig, TrainConfig
from lungcls.data import open_dataset
from lungcls.data.manifest import read_manifest_csv
from lungcls.errors import DataError
from lungcls.seg.infection import FLAG_LUNGS_DOUBTFUL, grade, measure, score, split_lungs
from lungcls.seg.segmenter import Segmenter
from lungcls.seg.train import train_segmenter

TINY = SegmenterConfig(
    target="infection", encoder_name="resnet18", encoder_depth=3, decoder_channels=[32, 16, 8], image_size=64
)


def two_lungs(h: int = 100, w: int = 100) -> torch.Tensor:
    """Lungs as two 60 x 30 rectangles either side of an empty middle, (1, 1, h, w)."""
    lungs = torch.zeros(1, 1, h, w, dtype=torch.uint8)
    lungs[..., 20:80, 10:40] = 1  # image left: the patient's right lung
    lungs[..., 20:80, 60:90] = 1
    return lungs


def test_infection_is_measured_per_lung_with_the_published_extent_score():
    lungs = two_lungs()
    infection = torch.zeros_like(lungs)
    infection[..., 20:38, 10:40] = 1  # 18 of 60 rows: 30% of the right lung
    infection[..., 20:80, 90:99] = 1  # outside the lungs: not counted
    (r,) = measure(infection, lungs)
    assert r.share_right == pytest.approx(0.3) and r.share_left == 0 and r.share == pytest.approx(0.15)
    assert (r.score_right, r.score_left, r.score, r.grade) == (2, 0, 2, "mild")
    assert r.mask.sum() == 18 * 30 and r.covid is None and r.flags == []
    assert split_lungs(lungs).item() in range(40, 60)


def test_score_and_grade_bounds():
    assert [score(s) for s in (0.0, 0.009, 0.01, 0.249, 0.25, 0.5, 0.75, 1.0)] == [0, 0, 1, 1, 2, 3, 4, 4]
    assert [grade(t) for t in (0, 1, 2, 3, 4, 5, 8)] == ["none", "mild", "mild", "moderate", "moderate", "severe", "severe"]


def test_no_lungs_or_no_infection_is_no_error_and_doubtful_lungs_are_flagged():
    empty = torch.zeros(2, 1, 64, 64, dtype=torch.uint8)
    infection = torch.ones_like(empty)
    no_lungs, doubtful = measure(infection, empty, [["no-lung"], []], threshold=0.05)
    assert (no_lungs.share, no_lungs.score, no_lungs.grade, no_lungs.covid) == (0.0, 0, "none", False)
    assert no_lungs.flags == [FLAG_LUNGS_DOUBTFUL] and doubtful.flags == []
    (clear,) = measure(torch.zeros(1, 1, 100, 100, dtype=torch.uint8), two_lungs(), threshold=0.05)
    assert (clear.share, clear.grade, clear.covid) == (0.0, "none", False)


def infection_subset(root: Path, out: Path, per_class: int = 16) -> Path:
    """A CSV of ``per_class`` COVID-QU-Ex images per class and split (Train, Val) with their infection masks."""
    found = open_dataset([root / "covidqu-infseg"], masks="infection").manifest
    picked, seen = [], {}
    for s in found:
        key = (s.split, s.label)
        if seen.get(key, 0) < per_class:
            seen[key] = seen.get(key, 0) + 1
            picked.append(s)
    found.samples = picked
    found.write_csv(out)
    return out


@pytest.fixture(scope="module")
def covidqu(shared_data) -> Path:
    if not (shared_data / "covidqu-infseg").is_dir():
        pytest.skip(f"covidqu-infseg not found under {shared_data}")
    return shared_data


def test_infection_masks_are_read_beside_the_lung_masks_and_survive_a_csv(tmp_path, covidqu):
    infection = open_dataset([covidqu / "covidqu-infseg"], masks="infection").manifest
    lungs = open_dataset([covidqu / "covidqu-infseg"]).manifest
    assert infection.masks == "infection" and len(infection) == len(lungs) == 4384
    assert all("infection masks" in s.mask for s in infection) and all("lung masks" in s.mask for s in lungs)
    csv_path = infection_subset(covidqu, tmp_path / "split.csv", per_class=2)
    assert open(csv_path).readline().startswith("image,label,infection_mask,")
    assert read_manifest_csv(csv_path, masks="infection").samples[0].mask.endswith(".png")
    assert read_manifest_csv(csv_path).samples[0].mask is None  # read as lungs: no lung masks in it


def test_an_infection_unet_trains_on_real_infection_masks_and_reports_what_a_mostly_empty_target_needs(
    tmp_path, covidqu
):
    data = infection_subset(covidqu, tmp_path / "split.csv")
    train = TrainConfig(epochs=2, batch_size=8, lr=3e-3, warmup_epochs=0.5, device="cpu")
    run = train_segmenter([data], tmp_path / "run", TINY, train, progress=False, evaluate=("Val",))
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    last = history[-1] if isinstance(history, list) else history["epochs"][-1]
    assert {"val_dice_infected", "val_fp_share"} <= set(last)
    report = run.reports["val"]
    assert report.target == "infection" and set(report.by_class) == {"COVID-19", "Non-COVID", "Normal"}
    assert report.by_class["COVID-19"]["dice"]["n"] == 16 and report.by_class["Normal"]["dice"]["n"] == 0
    assert report.by_class["Normal"]["fp_share"]["n"] == 16 and "FP share of lungs" in report.markdown()
    assert report.lungs_from == "unet-r18-covidqu"
    with pytest.raises(CheckpointError, match="segments infection, not lungs"):
        Segmenter.load(tmp_path / "run", device="cpu", target="lungs")
    lungs_cache = tmp_path / "run" / "cache-lungs"
    CliRunner().invoke(app, ["prepare", str(data), "--out", str(lungs_cache), "--size", "64", "-q"])
    with pytest.raises(DataError, match="holds lungs masks, not infection masks"):
        train_segmenter([lungs_cache], tmp_path / "again", TINY, train, progress=False)


def real_cxrs(root: Path, n: int = 3) -> list[Path]:
    base = root / "covidqu-infseg" / "COVID-QU-Ex Dataset" / "Infection Segmentation Data" / "Infection Segmentation Data"
    return sorted((base / "Val" / "COVID-19" / "images").iterdir())[:n] + sorted(
        (base / "Val" / "Normal" / "images").iterdir()
    )[:n]


def test_segment_with_infection_writes_masks_two_colour_overlays_and_the_infection_columns(tmp_path, covidqu):
    from lungcls import builtin

    if builtin.INFECTION not in builtin.names():
        pytest.skip("no built-in infection segmenter in this installation")
    images = real_cxrs(covidqu)
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.zeros((256, 256), np.uint8))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["segment", *map(str, images), str(blank), "--out", str(out), "--infection", "-q"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out / "segment.csv")))
    assert len(rows) == 7 and {"infection_share", "infection_grade", "covid_from_infection"} <= set(rows[0])
    by_name = {r["name"]: r for r in rows}
    assert by_name["blank"]["infection_grade"] == "none" and float(by_name["blank"]["infection_share"]) == 0
    assert FLAG_LUNGS_DOUBTFUL in by_name["blank"]["flags"]
    assert (out / "infection" / f"{images[0].stem}.png").is_file()
    overlay = cv2.imread(str(out / "overlays" / f"{images[0].stem}.png"))
    red = (overlay[..., 2] > 200) & (overlay[..., 1] < 80)
    green = (overlay[..., 1] > 200) & (overlay[..., 2] < 80)
    covid_rows = [by_name[p.stem] for p in images[:3]]
    if float(covid_rows[0]["infection_share"]) > 0:
        assert red.any()
    assert green.any()


def test_detector_statistics_on_a_hand_computed_case():
    from lungcls.seg.detector import auroc, choose_threshold, combine, detection, fit_combination

    scores = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1])
    positive = np.array([1, 1, 1, 0, 0, 0], bool)
    # pairs (pos, neg): 0.9 and 0.8 beat all 3 negatives; 0.3 beats 0.2 and 0.1 only: 8 of 9
    assert auroc(scores, positive) == pytest.approx(8 / 9)
    assert auroc(np.array([0.5, 0.5]), np.array([1, 0], bool)) == 0.5  # a tie counts half
    t = choose_threshold(scores, positive)
    assert t == pytest.approx(0.25)  # 3/3 + 2/3 at 0.25 ties 2/3 + 3/3 at 0.7: the lower one wins
    d = detection(scores, positive, t, n_boot=200)
    assert d["sensitivity"]["value"] == 1.0 and d["specificity"]["value"] == pytest.approx(2 / 3)
    assert d["auroc"]["ci95"][0] <= 8 / 9 <= d["auroc"]["ci95"][1] and d["n"] == 6 and d["positives"] == 3
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    y = x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=400) > 0
    w = fit_combination(x, y)
    assert w[1] > w[2] > 0 and auroc(combine(x, w), y) > max(auroc(x[:, 0], y), auroc(x[:, 1], y))


def needs_builtin_infection():
    from lungcls import builtin

    if builtin.INFECTION not in builtin.names():
        pytest.skip("no built-in infection segmenter in this installation")


def test_the_builtin_infection_segmenter_is_small_described_and_listed():
    from lungcls import builtin

    needs_builtin_infection()
    folder = Path(__file__).resolve().parents[1] / "src" / "lungcls" / "builtin" / builtin.INFECTION
    assert (folder / "model.safetensors").stat().st_size <= 10 * 2**20
    card = builtin.card(builtin.INFECTION)
    for part in ("Research use only", "CC BY-SA 4.0", "COVID-QU-Ex", "Dice", "COVID-19 from infection", "Threshold",
                 "scripts/builtin_infection.sh", "images.json", "Known failure modes", "Wong et al."):  # fmt: skip
        assert part in card, part
    config = json.loads((folder / "config.json").read_text())
    assert config["model"]["target"] == "infection" and 0 < config["detector"]["threshold"] < 1
    images = json.loads((folder / "images.json").read_text())
    lungs = json.loads((folder.parent / builtin.DEFAULT / "images.json").read_text())
    assert images["Test"] == lungs["Test"]  # one split for both built-in models: neither saw a Test image
    listing = CliRunner().invoke(app, ["models"])
    assert listing.exit_code == 0 and builtin.INFECTION in listing.output and "covid detection" in listing.output


def test_a_pipeline_with_the_builtin_infection_segmenter_carries_the_infection_per_lung(tmp_path, covidqu):
    from lungcls import Pipeline
    from lungcls.cls.classifier import Classifier
    from lungcls.config import ClassifierConfig
    from lungcls.models.classifiers import build_classifier

    needs_builtin_infection()
    cfg = ClassifierConfig(arch="resnet18", image_size=64, mode="masked")
    classifier = Classifier(build_classifier(cfg), cfg, device="cpu")
    pipe = Pipeline(Segmenter.load(device="cpu"), classifier, Segmenter.load(device="cpu", target="infection"))
    results = pipe.predict(real_cxrs(covidqu, 2))
    assert all(r.infection is not None and r.infection.mask.shape == r.mask.shape for r in results)
    assert all(r.infection.grade in ("none", "mild", "moderate", "severe") for r in results)
    assert all((r.infection.mask <= r.mask).all() for r in results)  # infection inside the lungs
    assert results[0].infection.covid is not None
    with pytest.raises(CheckpointError, match="segments infection, not lungs"):
        Segmenter.load("unet-r18-infection", device="cpu", target="lungs")


def test_the_infection_loss_counts_each_infected_image_alike_and_ignores_empty_ones_in_the_dice():
    from lungcls.seg.task import infected_dice_loss

    target = torch.zeros(3, 1, 8, 8)
    target[0, 0, :4] = 1  # a large infection
    target[1, 0, 0, 0] = 1  # a one-pixel infection; image 2 has none
    perfect = (target * 2 - 1) * 50  # logits that agree everywhere
    assert infected_dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-3)
    missed_small = perfect.clone()
    missed_small[1, 0, 0, 0] = -50  # the small infection missed: half the Dice term, whatever its size
    assert infected_dice_loss(missed_small, target).item() == pytest.approx(0.5 * (1 - 1 / 2), abs=0.02)
    assert infected_dice_loss(perfect[2:], target[2:]).item() == 0.0
