"""Mixup and CutMix for the classifier's training batches, on the device, with no wait for it.

Each image of a batch is mixed with another image of the same batch (a random pairing): Mixup blends the
pixels, CutMix pastes a box of the other image. The other image's share ``1 - lam`` is drawn uniformly
(Beta(1, 1)) once per batch, and the loss is mixed in the same proportion (for CutMix: the box's true
share of the picture). All draws come from the step's generator, so a resumed run mixes exactly as the
uninterrupted one did.
"""

from __future__ import annotations

import torch


def mix_batch(
    x: torch.Tensor, p: float, mode: str, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix the batch ``x`` float (N, C, S, S) with probability ``p``.

    Args:
        mode: ``mixup``, ``cutmix`` or ``both`` (either, evenly).

    Returns:
        (mixed images, the partner of each image as indices (N,), ``lam`` float (): the share of each image's own
        label). Unmixed (probability ``1 - p``): ``x`` itself, the identity pairing and ``lam`` = 1.
    """
    n, device = len(x), x.device
    draws = torch.rand(3, generator=generator, device=device)  # mix at all?, which kind?, lam
    partner = torch.randperm(n, generator=generator, device=device)
    mixed = draws[0] < p
    lam = torch.where(mixed, draws[2], torch.ones((), device=device))
    cut = torch.tensor(mode == "cutmix", device=device) | (
        (draws[1] < 0.5) & torch.tensor(mode == "both", device=device)
    )
    box, box_share = _box(x.shape[-2:], 1 - lam, generator, device)
    blended = lam * x + (1 - lam) * x[partner]
    pasted = torch.where(box, x[partner], x)
    out = torch.where(cut, pasted, blended)
    lam = torch.where(cut, 1 - box_share, lam)
    return out, partner, lam


def _box(
    size: torch.Size, share: torch.Tensor, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """A box covering about ``share`` of the picture, at a random centre (cut at the borders): bool (1, 1, H, W),
    and the share it really covers."""
    h, w = size
    side = share.clamp(0, 1).sqrt()
    centre = torch.rand(2, generator=generator, device=device)
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    top, bottom = centre[0] * h - side * h / 2, centre[0] * h + side * h / 2
    left, right = centre[1] * w - side * w / 2, centre[1] * w + side * w / 2
    box = ((rows >= top) & (rows < bottom))[:, None] & ((cols >= left) & (cols < right))[None, :]
    return box[None, None], box.float().mean()
