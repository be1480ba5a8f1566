"""DICOM decoding (optional extra ``lungcls[dicom]``, needs pydicom)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import ImageReadError


def decode_dicom(
    path: Path, check: Callable[[int, int], str | None] = lambda h, w: None, source: Path | BinaryIO | None = None
) -> tuple[np.ndarray, str]:
    """Decode a DICOM file to a float64 (H, W) array where higher means brighter (more attenuation).

    ``check(height, width)`` says why an image of that size is refused (None: accepted); it is asked before
    the pixel data is decoded. Applies the modality LUT (rescale slope/intercept), then the VOI LUT or window
    centre/width,
    then inverts MONOCHROME1 so that bone is bright as in any CXR. ``source``: the bytes to read instead of ``path``
    (which then only names the file in messages).

    Returns:
        (pixels, mode): pixels float64 (H, W); mode e.g. ``"DICOM MONOCHROME1"``.
    """
    try:
        import pydicom
    except ImportError:
        raise ImageReadError(path, "DICOM support needs pydicom: pip install 'lungcls[dicom]'") from None
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    try:
        ds = pydicom.dcmread(path if source is None else source)
        rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
        if rows and cols and (problem := check(rows, cols)):  # before the pixels are decoded
            raise ImageReadError(path, problem)
        raw = ds.pixel_array
    except ImageReadError:
        raise
    except Exception as e:  # pydicom raises many types for bad files
        raise ImageReadError(path, f"unreadable DICOM ({type(e).__name__}: {e})") from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if not photometric.startswith("MONOCHROME"):
        raise ImageReadError(path, f"DICOM with PhotometricInterpretation {photometric}; expected a grayscale CXR")
    if raw.ndim != 2:
        raise ImageReadError(path, f"DICOM pixel data has shape {raw.shape}; expected one 2-D frame")
    if problem := check(*raw.shape):
        raise ImageReadError(path, problem)
    pixels = np.asarray(apply_voi_lut(apply_modality_lut(raw, ds), ds), dtype=np.float64)
    if photometric == "MONOCHROME1":
        pixels = pixels.max() - pixels + pixels.min()
    return pixels, f"DICOM {photometric}"
