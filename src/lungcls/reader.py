"""The one image reader: every file lungcls takes in goes through :func:`read_image` or :func:`read_mask`.

Formats: PNG, JPEG, BMP, TIFF, WebP (8 or 16 bit; grayscale, RGB, RGBA, palette, CMYK; any size) and,
with the ``lungcls[dicom]`` extra, DICOM (by suffix, or by the ``DICM`` marker at byte 128 for files
without a suffix, as PACS exports often are). Output is always a uint8 grayscale array (H, W).

Documented conversions:

- 8-bit grayscale is kept as is; colour (RGB, RGBA, palette, CMYK) becomes luminance
  (ITU-R 601, PIL's ``convert("L")``); an alpha channel is dropped.
- 16-bit and float images are rescaled linearly from the image's own [min, max] to [0, 255]
  (a constant image maps to ``value / 257``).
- DICOM: modality LUT, then VOI LUT / window, then MONOCHROME1 is inverted, then min-max to uint8.
- JPEG EXIF orientation is applied.
- Images are resized to the working size without keeping the aspect ratio (as COVID-QU-Ex):
  area interpolation when shrinking, bilinear when enlarging. Masks: any nonzero pixel is lung,
  nearest-neighbour resize, values {0, 1}.

Files that are empty, truncated, corrupt, not images, smaller than :data:`~lungcls.defaults.MIN_IMAGE_SIDE`
pixels on a side, or that claim more than ``max_pixels`` pixels (a decompression bomb, refused before
decoding with one message whichever library notices) raise :class:`~lungcls.errors.ImageReadError`
naming the file.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .defaults import MAX_PIXELS, MIN_IMAGE_SIDE, WORKING_SIZE
from .errors import ImageReadError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom")
DEFAULT_SIZE = (WORKING_SIZE, WORKING_SIZE)

Size = tuple[int, int]
#: a pixel is coloured when its channels differ by more than this many grey levels (JPEG noise stays under it)
COLOUR_DELTA = 24


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image before resizing.

    Attributes:
        pixels: uint8 (H, W) grayscale at the native size.
        mode: the source mode, e.g. ``"L"``, ``"RGBA"``, ``"I;16"``, ``"DICOM MONOCHROME1"``.
        format: the source format, e.g. ``"PNG"``.
        content_hash: SHA-1 of the decoded native pixels (dtype, shape and values), so the same
            picture saved twice, or re-encoded losslessly, hashes the same.
        colour: share of the pixels whose colour channels differ by more than :data:`COLOUR_DELTA` grey levels
            (0 for grayscale files and for grey pictures saved as RGB; a photograph scores well above 0.05).
    """

    pixels: np.ndarray
    mode: str
    format: str
    content_hash: str
    colour: float = 0.0

    @property
    def size(self) -> Size:
        """(height, width) at the native size."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])


@dataclass(frozen=True)
class InMemoryFile:
    """A file's bytes that never touched the disk (an upload): ``name`` names it in messages, nothing else."""

    name: str
    data: bytes


def decode_image(path: str | Path | InMemoryFile, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Decode ``path`` (or an :class:`InMemoryFile`'s bytes) to uint8 grayscale at its native size.

    Raises:
        ImageReadError: the file is missing, empty, truncated, not an image, or too large.
    """
    if isinstance(path, InMemoryFile):
        source, path = io.BytesIO(path.data), Path(path.name)
        if not source.getbuffer().nbytes:
            raise ImageReadError(path, "empty file (0 bytes)")
        dicom = path.suffix.lower() in (".dcm", ".dicom") or source.getbuffer()[128:132] == b"DICM"
    else:
        source = path = Path(path)
        if not path.is_file():
            raise ImageReadError(path, "no such file" if not path.exists() else "not a regular file")
        if path.stat().st_size == 0:
            raise ImageReadError(path, "empty file (0 bytes)")
        dicom = _is_dicom(path)
    if dicom:
        from .dicom import decode_dicom  # optional extra, imported only when needed

        native, mode = decode_dicom(path, lambda h, w: check_side(h, w, max_pixels), source)
        return DecodedImage(_to_uint8(native, path), mode, "DICOM", _hash(native))
    native, mode, fmt, colour = _decode_pil(path, max_pixels, source)
    return DecodedImage(_to_uint8(native, path), mode, fmt, _hash(native), colour)


def check_side(height: int, width: int, max_pixels: int = MAX_PIXELS) -> str | None:
    """Why an image of ``height`` x ``width`` pixels is refused (too small, or over the size limit), else None."""
    if min(height, width) < MIN_IMAGE_SIDE:
        return (
            f"image is {width}x{height} pixels, smaller than the minimum of {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} "
            "(too small to hold lung fields)"
        )
    if height * width > max_pixels:
        return over_limit(height * width, max_pixels, f"{width}x{height}")
    return None


def over_limit(pixels: int, max_pixels: int, dims: str = "") -> str:
    """The one message for an image over the size limit (whichever library noticed it)."""
    return (
        f"image has {pixels:,} pixels{f' ({dims})' if dims else ''}, over the limit of {max_pixels:,}; "
        "refused before decoding (a possible decompression bomb)"
    )


def read_image(path: str | Path, size: Size | None = DEFAULT_SIZE, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a CXR as uint8 grayscale (H, W) at ``size`` (height, width); ``None`` keeps the native size."""
    pixels = decode_image(path, max_pixels).pixels
    return resize_image(pixels, size) if size is not None else pixels


def read_mask(path: str | Path, size: Size | None = DEFAULT_SIZE, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a lung mask as uint8 (H, W) in {0, 1}: any nonzero pixel is lung; nearest-neighbour resize."""
    mask = (decode_image(path, max_pixels).pixels > 0).astype(np.uint8)
    return resize_mask(mask, size) if size is not None else mask


def resize_image(image: np.ndarray, size: Size) -> np.ndarray:
    """Resize uint8 (H, W) to ``size`` = (height, width): area when shrinking, bilinear when enlarging."""
    h, w = size
    if image.shape == (h, w):
        return image
    shrinking = image.shape[0] * image.shape[1] > h * w
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: Size) -> np.ndarray:
    """Resize a {0, 1} uint8 mask to ``size`` = (height, width) by nearest neighbour."""
    h, w = size
    if mask.shape == (h, w):
        return mask
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)


def is_image_file(path: str | Path) -> bool:
    """True when the suffix is one lungcls reads (the content is checked only on reading)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def readable_kind(path: str | Path) -> str | None:
    """Why lungcls would read ``path``: ``"image"`` (a known suffix), ``"dicom"`` (the DICOM marker in a
    file without a known suffix), or None (neither; the file would be skipped)."""
    path = Path(path)
    if is_image_file(path):
        return "image"
    try:
        return "dicom" if path.is_file() and _has_dicom_marker(path) else None
    except OSError:
        return None


def _decode_pil(path: Path, max_pixels: int, source=None) -> tuple[np.ndarray, str, str, float]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(path if source is None else source) as img:
                w, h = img.size
                if w == 0 or h == 0:
                    raise ImageReadError(path, f"image has no pixels ({w}x{h})")
                if problem := check_side(h, w, max_pixels):
                    raise ImageReadError(path, problem)
                fmt, mode = img.format or "unknown", img.mode
                img = ImageOps.exif_transpose(img) if fmt == "JPEG" else img
                native, colour = _pil_to_array(img), _colour_share(img)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as e:  # PIL noticed first: "Image size (N pixels) exceeds limit of ..."
        found = re.search(r"\((\d+) pixels\)", str(e))
        raise ImageReadError(path, over_limit(int(found.group(1)) if found else max_pixels + 1, max_pixels)) from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image (format not recognised)") from None
    except (OSError, ValueError, SyntaxError) as e:  # PIL reports truncation and bad chunks this way
        raise ImageReadError(path, f"truncated or corrupt image data ({e})") from None
    return native, mode, fmt, colour


def _colour_share(img: Image.Image) -> float:
    """Share of coloured pixels (see :attr:`DecodedImage.colour`), on every 4th pixel of every 4th row."""
    if img.mode in ("1", "L", "LA", "I", "F") or img.mode.startswith("I;16"):
        return 0.0
    rgb = np.asarray(img.convert("RGB"))[::4, ::4].astype(np.int16)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return float((spread > COLOUR_DELTA).mean()) if spread.size else 0.0


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """Native pixels: uint8 (H, W) for 8-bit modes, uint16/int32/float32 (H, W) for deep ones."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.array(img, dtype=np.uint16)
    if img.mode in ("I", "F"):
        return np.array(img)
    if img.mode == "L":
        return np.array(img, dtype=np.uint8)
    if img.mode == "LA":
        return np.array(img.getchannel("L"), dtype=np.uint8)
    if img.mode == "RGBA":
        img = img.convert("RGB")  # drop alpha, then luminance
    return np.array(img.convert("L"), dtype=np.uint8)


def _to_uint8(native: np.ndarray, path: Path) -> np.ndarray:
    if native.ndim != 2:
        raise ImageReadError(path, f"expected a 2-D image, got shape {native.shape}")
    if native.dtype == np.uint8:
        return np.ascontiguousarray(native)
    arr = native.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ImageReadError(path, "image contains NaN or infinite values")
    if hi == lo:
        return np.full(arr.shape, np.clip(round(lo / 257.0), 0, 255), dtype=np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _hash(native: np.ndarray) -> str:
    h = hashlib.sha1()
    h.update(f"{native.dtype.str}{native.shape}".encode())
    h.update(np.ascontiguousarray(native).tobytes())
    return h.hexdigest()


def _is_dicom(path: Path) -> bool:
    return path.suffix.lower() in (".dcm", ".dicom") or _has_dicom_marker(path)


def _has_dicom_marker(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


@dataclass
class ReadBatch:
    """Several files read at once, going on past the unreadable ones.

    Attributes:
        images: uint8 (M, S, S), the readable files at the working size, in order.
        slots: one per file: its row in ``images``, or the :class:`ImageReadError` that stopped it.
        sizes: native (height, width) of each readable file.
        natives: native uint8 pixels of each readable file (only when asked for).
        colours: share of coloured pixels of each readable file (:attr:`DecodedImage.colour`).
    """

    images: np.ndarray
    slots: list[int | ImageReadError]
    sizes: list[Size]
    natives: list[np.ndarray] | None = None
    colours: list[float] | None = None


def read_images(
    paths: Sequence[str | Path | InMemoryFile], size: Size = DEFAULT_SIZE, keep_native: bool = False
) -> ReadBatch:
    """Decode each file (or :class:`InMemoryFile`) once (:func:`decode_image`) and resize it to ``size``; errors are
    kept per file."""
    images, slots, sizes, natives, colours = [], [], [], [], []
    for path in paths:
        try:
            decoded = decode_image(path)
        except ImageReadError as e:
            slots.append(e)
            continue
        slots.append(len(images))
        images.append(resize_image(decoded.pixels, size))
        sizes.append(decoded.size)
        colours.append(decoded.colour)
        if keep_native:
            natives.append(decoded.pixels)
    stacked = np.stack(images) if images else np.zeros((0, *size), np.uint8)
    return ReadBatch(stacked, slots, sizes, natives if keep_native else None, colours)
