"""Serve uint8 batches of a packed cache on the training device, with no per-epoch decoding.

On CUDA the selected rows are copied to the GPU once when they fit (half the free memory at
most), otherwise kept in pinned host memory and copied batch by batch with ``non_blocking``.
On CPU they are held in RAM. Batches stay uint8 until the model's device; normalisation and
augmentation run there (see :mod:`lungcls.data.augment`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .cache import PackedCache


@dataclass
class Batch:
    """One batch on the device.

    Attributes:
        images: uint8 (B, 1, H, W).
        masks: uint8 (B, 1, H, W) in {0, 1}, or None when masks were not requested.
        labels: int64 (B,) class indices.
        has_mask: bool (B,).
        index: int64 (B,) cache row of each image.
    """

    images: torch.Tensor
    masks: torch.Tensor | None
    labels: torch.Tensor
    has_mask: torch.Tensor
    index: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


class CacheLoader:
    """Iterate over batches of cache rows, shuffled per epoch with a seed.

    Args:
        cache: an open :class:`PackedCache`.
        indices: cache rows to serve (e.g. ``cache.indices("Train")``).
        batch_size: images per batch.
        device: where batches are delivered.
        shuffle: reshuffle every epoch (seeded by ``seed`` and the epoch, see :meth:`set_epoch`).
        drop_last: drop the last incomplete batch.
        with_masks: also serve masks.
        placement: ``"auto"`` (GPU-resident when it fits), ``"device"`` or ``"host"``.
        masks: serve these uint8 (N, H, W) masks (aligned with the cache's rows, e.g. predicted
            by stage 1) instead of the cache's own.
        labels: serve these int64 (N,) labels (aligned with the cache's rows, e.g. indices into a
            classifier's class set, :meth:`PackedCache.labels_for`) instead of the cache's own.
        rank, world_size: in a multi-process run, hold and serve only this rank's shard (every
            ``world_size``-th row from ``rank``, cut to equal lengths so all ranks step together).
    """

    def __init__(
        self,
        cache: PackedCache,
        indices: Sequence[int] | np.ndarray,
        batch_size: int,
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        drop_last: bool = False,
        with_masks: bool = True,
        seed: int = 0,
        placement: str = "auto",
        masks: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if placement not in ("auto", "device", "host"):
            raise ValueError(f"placement must be 'auto', 'device' or 'host', not {placement!r}")
        self.device = torch.device(device)
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.epoch = 0
        rows = np.sort(np.asarray(indices, dtype=np.int64))
        if world_size > 1:
            rows = rows[rank::world_size][: len(rows) // world_size]
        self.rows = torch.from_numpy(rows)
        # one read of the memory-map per row; (n, 1, H, W) uint8
        self.images = torch.from_numpy(np.ascontiguousarray(cache.images[rows]))[:, None]
        source = cache.masks if masks is None else masks
        self.masks = torch.from_numpy(np.ascontiguousarray(source[rows]))[:, None] if with_masks else None
        self.labels = torch.from_numpy((cache.labels if labels is None else labels)[rows])
        self.has_mask = torch.from_numpy(cache.has_mask[rows])
        self.resident = self.device.type != "cuda" or self._fits(placement)
        if self.resident:
            self._to(self.device)
        elif self.device.type == "cuda":
            self._pin()

    def _fits(self, placement: str) -> bool:
        if placement != "auto":
            return placement == "device"
        need = self.images.numel() * (2 if self.masks is not None else 1)
        free, _ = torch.cuda.mem_get_info(self.device)
        return need < free // 2

    def _to(self, device: torch.device) -> None:
        self.images = self.images.to(device)
        self.masks = self.masks.to(device) if self.masks is not None else None
        self.labels, self.has_mask, self.rows = self.labels.to(device), self.has_mask.to(device), self.rows.to(device)

    def _pin(self) -> None:
        self.images = self.images.pin_memory()
        self.masks = self.masks.pin_memory() if self.masks is not None else None

    def set_epoch(self, epoch: int) -> None:
        """Choose the shuffle order of the next pass (same seed and epoch, same order)."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.rows)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.rows)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        order = order.to(self.images.device)
        for b in range(len(self)):
            yield self._gather(order[b * self.batch_size : (b + 1) * self.batch_size])

    def _gather(self, idx: torch.Tensor) -> Batch:
        def take(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            out = t.index_select(0, idx)
            if not self.resident:
                out = out.pin_memory().to(self.device, non_blocking=True)
            return out

        return Batch(take(self.images), take(self.masks), take(self.labels), take(self.has_mask), take(self.rows))
