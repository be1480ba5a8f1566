"""The input gate and the mask-quality estimate: real CXRs pass; a photograph, a scanned page, an inverted and a
turned CXR, a blank frame are refused with their reason; the estimate follows the true Dice."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from lungcls import builtin
from lungcls.gate import REASONS, GateConfig, InputGate, fit_distribution, mahalanobis
from lungcls.reader import decode_image, read_images
from lungcls.seg.segmenter import expected_dice

SKIMAGE = Path(skimage.data.__file__).parent


def needs_gate():
    if "gate-covidqu" not in builtin.names():
        pytest.skip("no built-in gate in this installation")


def test_the_colour_share_tells_a_photograph_from_a_grey_picture_saved_as_rgb(tmp_path):
    grey = cv2.imread(str(SKIMAGE / "camera.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(tmp_path / "grey_as_rgb.png"), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    assert decode_image(tmp_path / "grey_as_rgb.png").colour == 0.0
    assert decode_image(SKIMAGE / "camera.png").colour == 0.0
    assert decode_image(SKIMAGE / "astronaut.png").colour > 0.3


def test_mahalanobis_distance_on_a_hand_computed_case():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]], dtype=torch.float64)
    mean, precision = fit_distribution(x, shrinkage=0.0)
    # covariance diag(2/3, 8/3): the point (1, 2) lies sqrt(1.5 + 1.5) = sqrt(3) away
    d = mahalanobis(torch.tensor([[1.0, 2.0]], dtype=torch.float64), mean, precision)
    assert d.item() == pytest.approx(3**0.5)


def test_expected_dice_on_a_hand_computed_case():
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, 0, :2] = 1  # 8 pixels
    probs = mask * 0.75  # sum 6, overlap 6
    assert expected_dice(probs, mask).tolist() == pytest.approx([2 * 6 / (6 + 8), 1.0])


@pytest.fixture(scope="module")
def gate() -> InputGate:
    needs_gate()
    return InputGate.load(device="cpu")


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


def test_a_gate_refuses_to_work_with_another_segmenter(tmp_path, gate):
    from lungcls import CheckpointError
    from lungcls.config import SegmenterConfig
    from lungcls.models.unet import build_segmenter
    from lungcls.seg.segmenter import Segmenter

    cfg = SegmenterConfig(encoder_name="resnet18", encoder_depth=3, decoder_channels=[32, 16, 8], image_size=64)
    other = Segmenter(build_segmenter(cfg), cfg, device="cpu", info={"source": {"name": "x", "sha256": "0" * 64}})
    with pytest.raises(CheckpointError, match="fitted for segmenter"):
        InputGate.load(segmenter=other)
    assert GateConfig().aspect == [0.5, 2.0]


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
    image = cv2.imread(str(cxr), cv2.IMREAD_GRAYSCALE)
    crop = tmp_path / "one_lung.png"
    cv2.imwrite(str(crop), image[:, : image.shape[1] // 2])
    files = [cxr, SKIMAGE / "astronaut.png", crop, tmp_path / "missing.png"]
    masked, raw = tiny_classifier("masked"), tiny_classifier("raw")
    with pytest.raises(LungclsError, match="needs a raw classifier"):
        Pipeline(gate.segmenter, masked, gate=gate, policy=DecisionPolicy("raw"))
    pipe = Pipeline(gate.segmenter, masked, gate=gate, raw=raw, policy=DecisionPolicy("raw"))
    first, photo, one_lung, missing = pipe.predict(files)
    assert first.decision in ("answered", "flagged") and first.label and first.gate.accepted
    assert photo.decision == "refused" and photo.label == "" and "colour" in photo.reason and photo.probs == {}
    assert missing.decision == "unreadable" and missing.error
    if one_lung.decision != "refused":  # a crop of one lung is either refused, or its lungs are doubtful
        assert one_lung.decision == "raw-fallback" and one_lung.label
    rows = classify_to_csv(files, Pipeline(gate.segmenter, masked, gate=gate, policy=DecisionPolicy("abstain", 0.99)),
                           tmp_path / "out.csv", progress=False)  # fmt: skip
    header = open(tmp_path / "out.csv").readline().strip().split(",")
    assert {"decision", "decision_reason", "confidence", "gate_score", "mask_dice_estimate"} <= set(header)
    assert rows[0]["decision"] == "abstained" and rows[0]["predicted"] == "" and rows[1]["decision"] == "refused"
    assert rows[3]["error"]  # nothing dropped silently: the missing file has its row and its reason
