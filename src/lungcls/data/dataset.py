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

from ..config import AugmentConfig
from ..reader import Size, read_image, read_mask
from .cache import PackedCache
from .manifest import Manifest


def default_albumentations(cfg: AugmentConfig | None = None) -> Any:
    """The albumentations equivalent of :class:`lungcls.data.augment.DeviceAugment` with ``cfg`` (default
    :class:`~lungcls.config.AugmentConfig`): the same rotation, zoom, shift, brightness and contrast."""
    import albumentations as A

    c = cfg or AugmentConfig()
    return A.Compose(
        [
            A.Affine(
                rotate=(-c.rotation, c.rotation),
                scale=tuple(c.scale),
                translate_percent=(-c.translate, c.translate),
                p=c.p,
            ),
            A.RandomBrightnessContrast(brightness_limit=c.brightness, contrast_limit=c.contrast, p=c.p),
            A.HorizontalFlip(p=c.hflip),
        ]
    )


class ImageDataset(Dataset):
    """Samples as dicts of uint8 tensors: ``image`` (1, H, W), ``mask`` (1, H, W) {0, 1}, ``label``, ``has_mask``.

    Args:
        source: a :class:`PackedCache` (fast) or a :class:`Manifest` (decodes files on each access).
        indices: rows to use (default all).
        transform: an albumentations transform called as ``transform(image=..., mask=...)``.
        size: working size when reading from files.
        class_names: the class set ``label`` indexes into (default: the source's own).
    """

    def __init__(
        self,
        source: PackedCache | Manifest,
        indices: Any = None,
        transform: Any = None,
        size: Size = (256, 256),
        class_names: list[str] | None = None,
    ) -> None:
        self.source, self.transform, self.size = source, transform, size
        self.class_names = class_names or source.class_names
        self.labels = source.labels_for(self.class_names) if isinstance(source, PackedCache) else None
        self.indices = np.arange(len(source)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = int(self.indices[i])
        if isinstance(self.source, PackedCache):
            image = np.array(self.source.images[row])  # a copy: memory-maps are read-only
            mask = np.array(self.source.masks[row])
            label, has_mask = int(self.labels[row]), bool(self.source.has_mask[row])
        else:
            s = self.source.samples[row]
            image = read_image(s.image, self.size)
            has_mask = s.mask is not None
            mask = read_mask(s.mask, self.size) if has_mask else np.zeros(self.size, np.uint8)
            label = self.class_names.index(s.label)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image))[None],
            "mask": torch.from_numpy(np.ascontiguousarray(mask))[None],
            "label": torch.tensor(label),
            "has_mask": torch.tensor(has_mask),
        }
