"""Every entry point against a zoo of bad and odd inputs: a documented result or one clear error naming the
file, and batches go on past the bad ones. The table in tests/README.md lists what each input gives."""

from __future__ import annotations

import csv
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lungcls import Pipeline
from lungcls.cli import app
from lungcls.config import ClassifierConfig, SegmenterConfig, TrainConfig
from lungcls.data.phantoms import make_phantom, write_phantom_set

UNREADABLE = {
    "zero-byte.png": "empty file",
    "truncated.png": "truncated or corrupt",
    "truncated.jpg": "truncated or corrupt",
    "corrupt.png": "not an image",
    "corrupt.jpg": "not an image",
    "text.png": "not an image",
    "page.png": "not an image",
    "bomb.png": "over the limit",
}
READABLE = ["deep16.png", "rgba.png", "palette.png", "cmyk.jpg", "black.png", "white.png", "photo.jpg", "mono1.dcm"]


def _dicom(path: Path, pixels: np.ndarray) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation = "DX", "MONOCHROME1"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True) if int(pydicom.__version__[0]) >= 3 else ds.save_as(
        path, write_like_original=False
    )


def make_zoo(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cxr, _ = make_phantom(np.random.default_rng(0), 0, 64)
    ok, png = cv2.imencode(".png", cxr)
    ok, jpg = cv2.imencode(".jpg", cxr)
    (folder / "zero-byte.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes(png.tobytes()[: len(png) // 2])
    (folder / "truncated.jpg").write_bytes(jpg.tobytes()[: len(jpg) // 2])
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)  # JPEG marker, then garbage
    (folder / "text.png").write_text("just some text\n")
    (folder / "page.png").write_text("<!doctype html><html><body>404</body></html>")
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))  # noqa: E731
    (folder / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 99)) + chunk(b"IEND", b"")
    )
    cv2.imwrite(str(folder / "deep16.png"), cxr.astype(np.uint16) * 16)
    Image.fromarray(np.dstack([cxr, cxr, cxr, np.full_like(cxr, 200)]), "RGBA").save(folder / "rgba.png")
    Image.fromarray(cxr).convert("P").save(folder / "palette.png")
    Image.fromarray(cxr).convert("CMYK").save(folder / "cmyk.jpg")
    cv2.imwrite(str(folder / "black.png"), np.zeros((64, 64), np.uint8))
    cv2.imwrite(str(folder / "white.png"), np.full((64, 64), 255, np.uint8))
    rng = np.random.default_rng(1)
    photo = cv2.resize(rng.integers(0, 255, (8, 8, 3), np.uint8), (96, 64), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(folder / "photo.jpg"), photo)  # a colourful non-CXR "photograph"
    _dicom(folder / "mono1.dcm", 4095 - cxr.astype(np.uint16) * 16)
    return folder


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    return make_zoo(tmp_path_factory.mktemp("zoo") / "inputs")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zoo-model")
    data = [write_phantom_set(root, per_class=10, size=64)]
    seg = SegmenterConfig(encoder_name="resnet18", encoder_depth=3, decoder_channels=[16, 8, 4], image_size=64)
    fast = TrainConfig(epochs=1, batch_size=8, device="cpu")
    Pipeline.train(
        data, root / "run", "masked", seg, fast, ClassifierConfig(arch="resnet18", image_size=32), fast, progress=False
    )
    return root / "run"  # segmenter/, classifier/, bundle/


def zoo_manifest(zoo: Path) -> Path:
    manifest = zoo.parent / "zoo.csv"
    manifest.write_text("image,label\n" + "".join(f"{zoo.name}/{p.name},Normal\n" for p in sorted(zoo.iterdir())))
    return manifest


def rows_of(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {Path(r["path"]).name: r for r in csv.DictReader(f)}


def test_inspect_lists_each_unreadable_file_with_its_reason(zoo):
    manifest = zoo_manifest(zoo)  # a loose folder of images is no dataset: a CSV manifest makes one
    result = CliRunner().invoke(app, ["data", "inspect", str(manifest), "--workers", "0"])
    assert result.exit_code == 1
    assert f"Unreadable images: {len(UNREADABLE)}" in result.output
    for name, reason in UNREADABLE.items():
        assert any(name in line and reason in line for line in result.output.splitlines()), name


def test_prepare_caches_the_readable_ones_and_lists_the_rest(zoo, tmp_path):
    manifest = zoo_manifest(zoo)
    result = CliRunner().invoke(app, ["prepare", str(manifest), "--out", str(tmp_path / "cache"), "--workers", "0"])
    assert result.exit_code == 1 and f"{len(READABLE)} images cached" in result.output
    for name in UNREADABLE:
        assert name in result.output


@pytest.mark.parametrize("command", ["segment", "classify", "predict"])
def test_batch_commands_go_on_past_bad_files(zoo, bundle, tmp_path, command):
    out = tmp_path / "out"
    args = {"segment": ["--model", str(bundle / "segmenter"), "--out", str(out)],
            "classify": ["--model", str(bundle / "bundle"), "--out", str(tmp_path / "c.csv")],
            "predict": ["--model", str(bundle / "bundle"), "--out", str(out)]}[command]  # fmt: skip
    before = {p.name: p.read_bytes() for p in zoo.iterdir()}
    result = CliRunner().invoke(app, [command, str(zoo), "--device", "cpu", *args])
    assert result.exit_code == 1, result.output
    table = rows_of(
        {"segment": out / "segment.csv", "classify": tmp_path / "c.csv", "predict": out / "predictions.csv"}[command]
    )
    assert set(table) == set(UNREADABLE) | set(READABLE)
    for name, reason in UNREADABLE.items():
        assert reason in table[name]["error"], (name, table[name])
    for name in READABLE:
        assert table[name]["error"] == "", (name, table[name])
    assert {p.name: p.read_bytes() for p in zoo.iterdir()} == before  # nothing the user gave was touched


def test_pipeline_methods_go_on_past_bad_files(zoo, bundle):
    pipe = Pipeline.load(bundle / "bundle", device="cpu")
    paths = sorted(zoo.iterdir())
    results = dict(zip((p.name for p in paths), pipe.predict(paths)))
    for name, reason in UNREADABLE.items():
        assert results[name].error and reason in results[name].error and name in results[name].error
    for name in READABLE:
        assert results[name].error is None and results[name].label in pipe.class_names
    probs = pipe.classify(paths)
    assert probs.shape == (len(paths), 3) and np.isnan(probs[[p.name in UNREADABLE for p in paths]]).all()
