"""Lung crop-and-mask: the classifier's input, made the same way in training and inference.

Four modes, batched on the device:

- ``raw``: the whole CXR, resized to the output size.
- ``masked``: pixels outside the lungs set to 0, same field of view, resized.
- ``cropped``: the bounding box of both lungs, grown by ``margin`` (a fraction of the box's
  width/height on each side, clipped to the image), resized to the output size (aspect not kept).
- ``masked-cropped``: masked, then cropped.

An image whose mask is empty falls back to ``raw`` and is flagged (``empty_mask``).
Resizing is bilinear sampling (``torchvision.ops.roi_align``, one box per image, ceil(box / output)
samples per output pixel: a 1:1 box is copied exactly, a shrinking one is averaged).
"""

from __future__ import annotations

import torch

from .config import INPUT_MODES as MODES


def check_mode(mode: str) -> str:
    """Return ``mode`` if valid.

    Raises:
        ValueError: unknown mode; the message lists the valid ones.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    return mode


def lung_boxes(masks: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding boxes of the lungs, grown by ``margin``.

    Args:
        masks: (N, 1, H, W), nonzero is lung.

    Returns:
        (boxes, empty): boxes float (N, 4) as x0, y0, x1, y1 in pixel edges (x1, y1 exclusive),
        the whole image where the mask is empty; empty bool (N,).
    """
    n, _, h, w = masks.shape
    m = masks[:, 0] != 0
    rows, cols = m.any(dim=2), m.any(dim=1)  # (N, H), (N, W)
    empty = ~rows.any(dim=1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ar_h, h).min(dim=1).values
    y1 = torch.where(rows, ar_h, -1).max(dim=1).values + 1
    x0 = torch.where(cols, ar_w, w).min(dim=1).values
    x1 = torch.where(cols, ar_w, -1).max(dim=1).values + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    grow = torch.stack([x1 - x0, y1 - y0], dim=1).float() * margin
    boxes[:, :2] -= grow
    boxes[:, 2:] += grow
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    full = torch.tensor([0.0, 0.0, w, h], device=masks.device)
    return torch.where(empty[:, None], full, boxes), empty


def crop_and_mask(
    images: torch.Tensor, masks: torch.Tensor | None, mode: str, size: int, margin: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Make the classifier input.

    Args:
        images: uint8 (N, 1, H, W).
        masks: (N, 1, H, W), nonzero is lung; may be None for ``raw``.
        mode: one of :data:`MODES`.
        size: output side in pixels.
        margin: crop margin, a fraction of the lung box's size on each side.

    Returns:
        (inputs, lungs, empty): inputs float32 (N, 1, size, size) in [0, 1]; lungs uint8 (N, 1, size,
        size) in {0, 1}, the lung mask carried through the same geometry (None without masks); empty
        bool (N,) where the mask was empty and ``raw`` was used instead (always False for ``raw``).
        In the masked modes every pixel outside ``lungs`` is exactly 0 (the classifier's training
        re-applies ``lungs`` after augmentation, so the background stays 0 there too).
    """
    check_mode(mode)
    if mode != "raw" and masks is None:
        raise ValueError(f"mode {mode!r} needs lung masks")
    n, _, h, w = images.shape
    x = images.float() / 255.0
    full = torch.tensor([0.0, 0.0, w, h], device=x.device).expand(n, 4)
    empty = torch.zeros(n, dtype=torch.bool, device=x.device)
    boxes = full
    m = (masks != 0).to(x.dtype) if masks is not None else None
    if mode != "raw":
        boxes, empty = lung_boxes(masks, margin)
        if mode in ("masked", "masked-cropped"):
            x = x * (m + empty[:, None, None, None].to(x.dtype)).clamp_(max=1)  # an empty mask keeps the raw image
        if mode == "masked":
            boxes = full
    whole = mode in ("raw", "masked")  # the whole field of view, no crop
    x = _resample(x, boxes, size, whole)
    lungs = (_resample(m, boxes, size, whole) > 0.5).to(torch.uint8) if m is not None else None
    if lungs is not None and mode in ("masked", "masked-cropped"):
        x = x * (lungs | empty[:, None, None, None]).to(x.dtype)
    return x, lungs, empty


def _resample(x: torch.Tensor, boxes: torch.Tensor, size: int, whole: bool) -> torch.Tensor:
    """Each image's box resampled to (size, size); ``whole`` images at their own size are returned as they are."""
    from torchvision.ops import roi_align  # torchvision takes a second or more to import: only where it is used

    n, _, h, w = x.shape
    if whole and (h, w) == (size, size):
        return x
    rois = torch.cat([torch.arange(n, device=x.device, dtype=x.dtype)[:, None], boxes.to(x.dtype)], dim=1)
    # adaptive sampling: ceil(box / output) samples per output pixel (1:1 is an exact copy; shrinking averages)
    return roi_align(x, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
