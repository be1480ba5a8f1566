"""The image reader: every format lungcls accepts, and a clear error for every bad file."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from lungcls import ImageReadError
from lungcls.reader import decode_image, read_image, read_mask

from .conftest import real_pairs


def write_png(path: Path, array: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), array)
    return path


def test_real_cxr_reads_as_uint8_at_working_size(radiologist100):
    image_path, mask_path = real_pairs(radiologist100, 1)[0]
    image = read_image(image_path)
    mask = read_mask(mask_path)
    assert image.dtype == np.uint8 and image.shape == (256, 256)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert 0.1 < mask.mean() < 0.7  # lungs cover a plausible share of the image


def test_any_size_is_resized_without_keeping_aspect(tmp_path):
    big = write_png(tmp_path / "big.png", np.random.default_rng(0).integers(0, 255, (6000, 6000), np.uint8))
    wide = write_png(tmp_path / "wide.png", np.zeros((100, 300), np.uint8))
    assert read_image(big).shape == (256, 256)
    assert read_image(wide, size=(128, 64)).shape == (128, 64)
    assert read_image(wide, size=None).shape == (100, 300)


def test_16_bit_png_is_rescaled_from_its_own_range(tmp_path):
    ramp = np.linspace(1000, 4095, 256 * 256).reshape(256, 256).astype(np.uint16)  # 12-bit data in 16 bits
    image = read_image(write_png(tmp_path / "deep.png", ramp))
    assert image.min() == 0 and image.max() == 255
    assert np.all(np.diff(image.ravel().astype(int)) >= 0)  # monotone: order of intensities kept


def test_rgba_drops_alpha_and_matches_the_rgb_luminance(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    rgba = np.dstack([rgb, np.full((64, 64), 40, np.uint8)])  # a mostly transparent alpha is ignored
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgba.png", None), read_image(tmp_path / "rgb.png", None))


def test_palette_cmyk_bmp_tiff_jpeg_all_read_as_gray(tmp_path):
    gray = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    Image.fromarray(gray).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(gray).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(gray).save(tmp_path / "gray.bmp")
    Image.fromarray(gray).save(tmp_path / "gray.tif")
    for name in ("palette.png", "cmyk.jpg", "gray.bmp", "gray.tif"):
        image = read_image(tmp_path / name, None)
        assert image.shape == (64, 64) and image.dtype == np.uint8
        assert np.corrcoef(image.ravel(), gray.ravel())[0, 1] > 0.95, name


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"<html><body>not a picture</body></html>", "not an image"),
        (b"hello, I am a text file\n" * 10, "not an image"),
    ],
)
def test_non_images_raise_a_clear_error_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "scan (1).png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    assert str(path) in str(err.value) and reason in err.value.reason


def test_truncated_png_raises(tmp_path, radiologist100):
    data = real_pairs(radiologist100, 1)[0][0].read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated or corrupt") as err:
        read_image(path)
    assert err.value.path == str(path)


def _bomb_png(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    )
    return path


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    import psutil

    path = _bomb_png(tmp_path / "bomb.png", 100_000, 100_000)
    rss = psutil.Process().memory_info().rss
    with pytest.raises(ImageReadError, match="bomb|over the limit"):
        read_image(path)
    assert psutil.Process().memory_info().rss - rss < 50e6  # 10 G pixels were never allocated
    big_but_allowed = _bomb_png(tmp_path / "claims.png", 12_000, 12_000)
    with pytest.raises(ImageReadError, match="over the limit"):
        read_image(big_but_allowed, max_pixels=10_000_000)


def test_masks_any_nonzero_is_lung_and_resize_is_nearest(tmp_path):
    mask = np.zeros((100, 100), np.uint8)
    mask[20:80, 10:40] = 255
    mask[20:80, 60:90] = 7  # another convention: small label values
    out = read_mask(write_png(tmp_path / "m.png", mask), size=(50, 50))
    assert set(np.unique(out)) == {0, 1}
    assert out[10:40, 5:20].all() and out[10:40, 30:45].all() and not out[:5].any()


def test_content_hash_ignores_the_container(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 255, (32, 32), np.uint8)
    a = decode_image(write_png(tmp_path / "a.png", pixels))
    b = decode_image(write_png(tmp_path / "b.bmp", pixels))
    c = decode_image(write_png(tmp_path / "c.png", 255 - pixels))
    assert a.content_hash == b.content_hash != c.content_hash


def test_dicom_monochrome1_is_inverted_and_windowed(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    def write(path: Path, photometric: str, pixels: np.ndarray) -> Path:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PhotometricInterpretation = "DX", photometric
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
        ds.PixelData = pixels.astype(np.uint16).tobytes()
        ds.save_as(path, enforce_file_format=True) if int(pydicom.__version__[0]) >= 3 else ds.save_as(
            path, write_like_original=False
        )
        return path

    ramp = np.tile(np.linspace(0, 4000, 64), (64, 1))
    mono2 = read_image(write(tmp_path / "m2.dcm", "MONOCHROME2", ramp), None)
    mono1 = read_image(write(tmp_path / "m1.dcm", "MONOCHROME1", ramp), None)
    assert mono2[:, 0].mean() < 10 and mono2[:, -1].mean() > 245
    assert np.abs(mono1.astype(int) - (255 - mono2.astype(int))).max() <= 1
    assert decode_image(tmp_path / "m1.dcm").mode == "DICOM MONOCHROME1"


def test_an_image_over_the_size_limit_gets_one_message_whichever_library_notices(tmp_path):
    said = []
    for name, side in (("pil.png", 100_000), ("ours.png", 12_000)):  # PIL's own bomb check first; ours first
        with pytest.raises(ImageReadError) as err:
            read_image(_bomb_png(tmp_path / name, side, side))
        said.append(err.value.reason)
    pattern = r"image has [\d,]+ pixels( \(\d+x\d+\))?, over the limit of 100,000,000; refused before decoding"
    assert all(re.match(pattern, reason) for reason in said), said
