"""Connected components of a batch of binary masks, on whatever device the batch is (GPU included).

Label propagation with hooking and pointer jumping: every foreground pixel starts with its own
label; each pass, it takes the largest label among its neighbours (a 3x3 max-pool for
8-connectivity, a cross for 4-connectivity), hands that label on to the pixel its old label came
from (hooking), then jumps twice to the current label of the pixel its label names. Labels only
grow and never leave a component, so at the fixed point each component carries one label, the
largest it started with. Lung masks converge in 6-12 passes at 128-1024 px, each a few batched
kernels; nothing loops over pixels on the host.

Label of a component: ``H*W - i`` where ``i`` is the raster index of its first pixel, so labels
are unique per image and a larger label means an earlier first pixel (scikit-image numbers its
labels in the same raster order; :mod:`lungcls.seg.postprocess` breaks size ties with it).
With ``border_first``, components touching the image border get ``H*W`` more, so "touches the
border" is "label > H*W" (how holes are found).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# float32 holds integers exactly up to 2**24; labels go up to 2*H*W with border_first
MAX_PIXELS = 2**23


def _neighbour_max(x: torch.Tensor, connectivity: int) -> torch.Tensor:
    if connectivity == 8:
        return F.max_pool2d(x, 3, stride=1, padding=1)
    rows = F.max_pool2d(x, (3, 1), stride=1, padding=(1, 0))
    cols = F.max_pool2d(x, (1, 3), stride=1, padding=(0, 1))
    return torch.maximum(rows, cols)


def initial_labels(mask: torch.Tensor, border_first: bool = False) -> torch.Tensor:
    """Each foreground pixel's own label (float32 (B, 1, H, W)), 0 on background."""
    h, w = mask.shape[-2:]
    n = h * w
    own = (n - torch.arange(n, device=mask.device, dtype=torch.float32)).view(1, 1, h, w)
    if border_first:
        edge = torch.zeros(h, w, dtype=torch.bool, device=mask.device)
        edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
        own = own + n * edge
    return own * mask


def _origin(flat: torch.Tensor, n: int) -> torch.Tensor:
    """Raster index of the pixel each label started at (background -> a valid dummy index)."""
    return torch.where(flat > n, 2 * n - flat, n - flat).clamp_(0, n - 1).long()


def label_components(
    mask: torch.Tensor, connectivity: int = 8, border_first: bool = False, check_every: int = 2
) -> torch.Tensor:
    """Label the connected components of each mask in a batch.

    Args:
        mask: bool or {0, 1} (B, 1, H, W), with ``H * W <= 2**23``.
        connectivity: 8 (corners touch) or 4.
        border_first: add ``H*W`` to the labels of components that touch the image border.
        check_every: passes between two convergence checks (each check waits for the device).

    Returns:
        float32 (B, 1, H, W): 0 on background, the component's label elsewhere (see the module doc).
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, not {connectivity}")
    b, _, h, w = mask.shape
    n = h * w
    if n > MAX_PIXELS:
        raise ValueError(f"masks of {h}x{w} are too large to label on the device (at most {MAX_PIXELS} pixels)")
    fg = (mask != 0).to(torch.float32)
    fg_flat = fg.view(b, n)
    labels = initial_labels(fg, border_first)
    passes = 0
    while True:
        before = labels
        for _ in range(check_every):
            seen = (_neighbour_max(labels, connectivity) * fg).view(b, n)
            flat = seen.clone().scatter_reduce_(1, _origin(labels.view(b, n), n), seen, "amax")  # hooking
            for _ in range(2):  # pointer jumping
                flat = flat.gather(1, _origin(flat, n)) * fg_flat
            labels = flat.view(b, 1, h, w)
        passes += check_every
        if torch.equal(labels, before) or passes > n:
            return labels


def count_components(labels: torch.Tensor) -> torch.Tensor:
    """Number of components per image (int64 (B,)) of a :func:`label_components` result (no ``border_first``)."""
    own = initial_labels(torch.ones_like(labels[:1]))
    return ((labels == own) & (labels > 0)).flatten(1).sum(dim=1)


def component_sizes(labels: torch.Tensor) -> torch.Tensor:
    """Pixels per label: float32 (B, H*W + 1), column ``L`` for label ``L`` (no ``border_first``)."""
    b, _, h, w = labels.shape
    flat = labels.view(b, -1)
    sizes = torch.zeros(b, h * w + 1, device=labels.device, dtype=torch.float32)
    return sizes.scatter_add_(1, flat.long(), torch.ones_like(flat)).index_fill_(
        1, torch.tensor([0], device=labels.device), 0
    )


def keep_largest(mask: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` largest 8-connected components of each mask (ties: the earlier first pixel wins); bool (B, 1, H, W)."""
    labels = label_components(mask, 8)
    sizes = component_sizes(labels)
    n = sizes.shape[1] - 1
    key = sizes.double() * (n + 1) + torch.arange(n + 1, device=mask.device, dtype=torch.float64)
    top = key.topk(min(k, n + 1), dim=1)
    keep = torch.where(sizes.gather(1, top.indices) > 0, top.indices, -1).to(torch.float32)  # (B, k)
    return (labels[..., None] == keep[:, None, None, None, :]).any(dim=-1) & (labels > 0)


def drop_small(mask: torch.Tensor, min_pixels: float) -> torch.Tensor:
    """Each mask without its 8-connected components of fewer than ``min_pixels`` pixels; bool (B, 1, H, W)."""
    labels = label_components(mask, 8)
    sizes = component_sizes(labels)
    b = labels.shape[0]
    return sizes.gather(1, labels.view(b, -1).long()).view_as(labels).ge(min_pixels) & (labels > 0)


def fill_holes(mask: torch.Tensor) -> torch.Tensor:
    """Fill the background regions that do not reach the border (4-connected, as SciPy's default); bool (B, 1, H, W)."""
    background = mask == 0
    labels = label_components(background, 4, border_first=True)
    n = mask.shape[-2] * mask.shape[-1]
    return (mask != 0) | (background & (labels <= n))
