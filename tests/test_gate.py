"""The input gate and the mask-quality estimate: real CXRs pass; a photograph, a scanned page, an inverted and a
turned CXR, a blank frame are refused with their reason; the estimate follows the true Dice."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from lungcls.gate import REASONS, GateConfig, InputGate, calibrate, feature_distance
from lungcls.reader import decode_image, read_images
from lungcls.seg.segmenter import expected_dice

SKIMAGE = Path(skimage.data.__file__).parent


def test_the_colour_share_tells_a_photograph_from_a_grey_picture_saved_as_rgb(tmp_path):
    grey = cv2.imread(str(SKIMAGE / "camera.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(tmp_path / "grey_as_rgb.png"), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    assert decode_image(tmp_path / "grey_as_rgb.png").colour == 0.0
    assert decode_image(SKIMAGE / "camera.png").colour == 0.0
    assert decode_image(SKIMAGE / "astronaut.png").colour > 0.3


def tiny_segmenter(**info):
    from lungcls.config import SegmenterConfig
    from lungcls.models.unet import build_segmenter
    from lungcls.seg.segmenter import Segmenter

    torch.manual_seed(0)
    cfg = SegmenterConfig(encoder_name="resnet18", encoder_depth=3, decoder_channels=[32, 16, 8], image_size=64)
    return Segmenter(build_segmenter(cfg).eval(), cfg, device="cpu", info={"source": {"name": "tiny"}, **info})


def test_the_feature_distance_on_a_hand_computed_case():
    seg = tiny_segmenter()
    layers = [m for n, m in seg.model.named_modules() if n.startswith("decoder") and isinstance(m, torch.nn.BatchNorm2d)]
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, i[0].detach().clone()))) for m in layers]
    images = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8)
    distance = feature_distance(seg, images)  # its own hooks are gone afterwards: only ours saw this second pass
    seg.model(seg.task.inputs(images))
    for h in hooks:
        h.remove()
    by_hand = []
    for layer, x in seen[len(layers):]:
        var = layer.running_var + layer.eps
        shift = ((x.mean((2, 3)) - layer.running_mean) ** 2 / var).mean(1)
        spread = (torch.log((x.var((2, 3)) + layer.eps) / var) ** 2).mean(1)
        by_hand.append(shift + spread)
    assert len(seen) == 2 * len(layers) and distance.shape == (2,)
    assert distance.tolist() == pytest.approx(torch.stack(by_hand).mean(0).tolist(), rel=1e-4)


def test_a_lung_segmenter_carries_its_gate_threshold_from_its_val_images():
    seg = tiny_segmenter()
    val = torch.randint(0, 256, (200, 1, 64, 64), dtype=torch.uint8)
    section = calibrate(seg, val)
    distances = feature_distance(seg, val).numpy()
    assert section["threshold"] == pytest.approx(float(np.percentile(distances, 99.5)))
    assert section["fitted"]["val_images"] == 200 and section["threshold"] < distances.max()
    assert calibrate(seg, val[:199]) is None  # too few to estimate a 99.5th percentile: no gate
    gate = InputGate.for_segmenter(tiny_segmenter(gate=section))
    assert gate.cfg.threshold == section["threshold"] and gate.cfg.aspect == [0.5, 2.0]


def test_expected_dice_on_a_hand_computed_case():
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, 0, :2] = 1  # 8 pixels
    probs = mask * 0.75  # sum 6, overlap 6
    assert expected_dice(probs, mask).tolist() == pytest.approx([2 * 6 / (6 + 8), 1.0])


@pytest.fixture(scope="module")
def gate() -> InputGate:
    return InputGate.load(device="cpu")  # the built-in lung segmenter's gate


def real_cxrs(root: Path, n: int = 4) -> list[Path]:
    base = root / "covidqu-infseg" / "COVID-QU-Ex Dataset" / "Infection Segmentation Data" / "Infection Segmentation Data"
    return sorted((base / "Val" / "Normal" / "images").iterdir())[:n] + sorted(
        (root / "nih-cxr8" / "Lung Segmentation Data").rglob("*.png")
    )[:n]


def verdicts(gate: InputGate, files: list[Path]):
    read = read_images(files)
    return gate.check(torch.from_numpy(read.images)[:, None], read.colours, read.sizes)


def test_real_cxrs_pass_and_non_cxrs_are_refused_with_their_reason(tmp_path, gate, shared_data):
    cxrs = real_cxrs(shared_data)
    assert all(v.accepted and v.score <= 1 for v in verdicts(gate, cxrs)), [v.why() for v in verdicts(gate, cxrs)]
    image = cv2.imread(str(cxrs[0]), cv2.IMREAD_GRAYSCALE)
    made = {"inverted": 255 - image, "rotated-90": cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE),
            "rotated-180": cv2.rotate(image, cv2.ROTATE_180), "blank": np.zeros((300, 300), np.uint8)}  # fmt: skip
    for name, picture in made.items():
        cv2.imwrite(str(tmp_path / f"{name}.png"), picture)
    files = [tmp_path / f"{n}.png" for n in made] + [SKIMAGE / "astronaut.png", SKIMAGE / "page.png"]
    found = verdicts(gate, files)
    for name, v in zip(made, found):
        assert not v.accepted and v.reasons == [name], (name, v.reasons)
    photo, page = found[-2:]
    assert not photo.accepted and "colour" in photo.reasons
    assert not page.accepted and page.score > 1 and page.why()
    assert all(r in REASONS for v in found for r in v.reasons)


def test_a_segmenter_without_a_calibrated_gate_says_so(gate):
    from lungcls import CheckpointError

    with pytest.raises(CheckpointError, match="tiny: carries no calibrated input gate"):
        InputGate.for_segmenter(tiny_segmenter())
    assert gate.cfg.threshold > 0 and GateConfig().aspect == [0.5, 2.0]


def test_the_decision_policy_in_each_case():
    from lungcls.decisions import DecisionPolicy, decide, doubtful_lungs

    flag, abstain, raw = DecisionPolicy(), DecisionPolicy("abstain", 0.6), DecisionPolicy("raw")
    assert decide(flag, 0.9, "a colour picture", None, True) == ("refused", "input gate: a colour picture")
    doubtful = doubtful_lungs(["one-lung-field"], 0.95, 0.93)
    assert doubtful == "one-lung-field" and doubtful_lungs([], 0.91, 0.93) == "estimated Dice 0.910 < 0.93"
    assert doubtful_lungs([], float("nan"), 0.93) is None
    assert decide(flag, 0.9, None, doubtful, True)[0] == "flagged"
    assert decide(flag, 0.9, None, doubtful, False) == ("answered", "")  # raw inputs do not depend on the lungs
    assert decide(abstain, 0.9, None, doubtful, True)[0] == "abstained"
    assert decide(raw, 0.9, None, doubtful, True)[0] == "raw-fallback"
    assert decide(abstain, 0.55, None, None, True) == ("abstained", "confidence 0.550 < 0.60")
    with pytest.raises(Exception, match="doubtful"):
        DecisionPolicy("ignore")


def tiny_classifier(mode: str):
    from lungcls.cls.classifier import Classifier
    from lungcls.config import ClassifierConfig
    from lungcls.models.classifiers import build_classifier

    torch.manual_seed(0)
    cfg = ClassifierConfig(arch="resnet18", image_size=64, mode=mode)
    return Classifier(build_classifier(cfg), cfg, device="cpu")


def test_a_pipeline_refuses_gated_images_and_follows_its_policy_for_doubtful_lungs(tmp_path, gate, shared_data):
    from lungcls import LungclsError, Pipeline
    from lungcls.decisions import DecisionPolicy
    from lungcls.outputs import classify_to_csv

    cxr = real_cxrs(shared_data, 1)[0]
    files = [cxr, SKIMAGE / "astronaut.png", tmp_path / "missing.png"]
    masked, raw = tiny_classifier("masked"), tiny_classifier("raw")
    with pytest.raises(LungclsError, match="needs a raw classifier"):
        Pipeline(gate.segmenter, masked, gate=gate, policy=DecisionPolicy("raw"))
    first, photo, missing = Pipeline(gate.segmenter, masked, gate=gate).predict(files)
    assert first.decision == "answered" and first.label and first.gate.accepted and first.reason == ""
    assert photo.decision == "refused" and photo.label == "" and "colour" in photo.reason and photo.probs == {}
    assert missing.decision == "unreadable" and missing.error
    strict = DecisionPolicy("raw", min_dice_estimate=0.999)  # every mask is doubtful: the raw classifier answers
    fallback = Pipeline(gate.segmenter, masked, gate=gate, raw=raw, policy=strict).predict(cxr)[0]
    assert fallback.decision == "raw-fallback" and fallback.label and "estimated Dice" in fallback.reason
    rows = classify_to_csv(files, Pipeline(gate.segmenter, masked, gate=gate, policy=DecisionPolicy("abstain", 0.99)),
                           tmp_path / "out.csv", progress=False)  # fmt: skip
    header = open(tmp_path / "out.csv").readline().strip().split(",")
    assert {"decision", "decision_reason", "confidence", "gate_score", "mask_dice_estimate"} <= set(header)
    assert rows[0]["decision"] == "abstained" and rows[0]["predicted"] == "" and rows[1]["decision"] == "refused"
    assert rows[2]["error"]  # nothing dropped silently: the missing file has its row and its reason
