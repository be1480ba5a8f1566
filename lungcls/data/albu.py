"""The plain CPU path: a torch ``Dataset`` with an optional albumentations transform.

For CPU work and for users who want albumentations' transform catalogue. Items are uint8, as in
the cache path, so the same device-side normalisation applies. Reads from a packed cache
(memory-map, no decoding) or straight from files (decoded on every access, the slow way).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..io import Size, read_image, read_mask
from .cache import PackedCache
from .manifest import Manifest


def default_albumentations(
    rotation: float = 10.0, scale: tuple[float, float] = (0.9, 1.1), translate: float = 0.06
) -> Any:
    """An albumentations pipeline equivalent to :class:`lungcls.data.augment.DeviceAugment`'s defaults."""
    import albumentations as A

    return A.Compose(
        [
            A.Affine(rotate=(-rotation, rotation), scale=scale, translate_percent=(-translate, translate), p=1.0),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=1.0),
        ]
    )


class ImageDataset(Dataset):
    """Samples as dicts of uint8 tensors: ``image`` (1, H, W), ``mask`` (1, H, W) {0, 1}, ``label``, ``has_mask``.

    Args:
        source: a :class:`PackedCache` (fast) or a :class:`Manifest` (decodes files on each access).
        indices: rows to use (default all).
        transform: an albumentations transform called as ``transform(image=..., mask=...)``.
        size: working size when reading from files.
    """

    def __init__(
        self, source: PackedCache | Manifest, indices: Any = None, transform: Any = None, size: Size = (256, 256)
    ) -> None:
        self.source, self.transform, self.size = source, transform, size
        self.indices = np.arange(len(source)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = int(self.indices[i])
        if isinstance(self.source, PackedCache):
            image = np.array(self.source.images[row])  # a copy: memory-maps are read-only
            mask = np.array(self.source.masks[row])
            label, has_mask = int(self.source.labels[row]), bool(self.source.has_mask[row])
        else:
            s = self.source.samples[row]
            image = read_image(s.image, self.size)
            has_mask = s.mask is not None
            mask = read_mask(s.mask, self.size) if has_mask else np.zeros(self.size, np.uint8)
            label = s.label
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image))[None],
            "mask": torch.from_numpy(np.ascontiguousarray(mask))[None],
            "label": torch.tensor(label),
            "has_mask": torch.tensor(has_mask),
        }
