"""Find duplicated images: exact (same pixels) and near (the same picture resampled or re-encoded).

Near duplicates are found on 16 x 16 thumbnails of the native image (area-averaged, so resizing
and compression noise mostly cancel). Two images are taken as the same picture when either

- their thumbnails differ by less than ``threshold`` gray levels RMS (on the shared ieee8023 sets
  the 64 images present in both sets sit below 0.35 while distinct CXRs sit above 2.5), or
- the Pearson correlation of their thumbnails, or of one with the other mirrored left-right, is at
  least ``min_correlation`` (0.98): the same picture with other brightness, contrast or processing.
  On COVID-QU-Ex (``covidqu-infseg``) this finds 46 of the 47 same-picture pairs listed by the
  shared data's curators and no pair outside their list; at 0.97 it starts to join distinct CXRs.
  Pictures that are alike by construction (synthetic phantoms, heavily standardised images) can pass
  it without being the same picture, so a correlation match only joins groups that stay at most
  :data:`MAX_CORRELATED_GROUP` images (the largest group of real duplicates found in the shared sets
  has 4): a chain of look-alikes never swallows a data set.

Crop-aligned copies (:func:`crop_aligned_pairs`: one picture twice, once cropped tight to the chest, which a plain
comparison misses) are searched on the working-size images: a crop of one (up to 24% off each side) must correlate
at least 0.98 with the other at 32 x 32 and agree in fine detail at 128 px. On 1,000 covidqu-infseg images against
all of covid19-radiography this finds 117 of the 128 pairs the curators listed (20 of their 23 crop-aligned ones)
and no pair outside their list.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

THUMB = 16
NEAR_THRESHOLD = 1.0
MIN_CORRELATION = 0.98
MAX_CORRELATED_GROUP = 6


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """uint8 (H, W) -> uint8 (16, 16) area-averaged thumbnail."""
    return cv2.resize(pixels, (THUMB, THUMB), interpolation=cv2.INTER_AREA)


def duplicate_groups(
    hashes: Sequence[str],
    thumbs: np.ndarray | None = None,
    threshold: float = NEAR_THRESHOLD,
    min_correlation: float = MIN_CORRELATION,
    chunk: int = 512,
) -> list[list[int]]:
    """Groups (each of two or more sample indices) of exact or near duplicates.

    Args:
        hashes: content hash per sample ("" for unreadable ones, never grouped).
        thumbs: uint8 (N, 16, 16) thumbnails, or None for exact duplicates only.
        threshold: RMS gray-level distance below which two thumbnails are the same picture.
        min_correlation: correlation (plain or mirrored) from which two thumbnails are the same picture.
    """
    n = len(hashes)
    sets = _UnionFind(n)
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        if h:
            sets.join(i, first.setdefault(h, i))
    valid = np.array([bool(h) for h in hashes])
    if thumbs is not None and valid.sum() > 1:
        close, correlated = _similar_pairs(np.flatnonzero(valid), thumbs, threshold, min_correlation, chunk)
        for i, j in close:
            sets.join(i, j)
        for _, i, j in sorted(correlated, reverse=True):  # the closest pairs first
            sets.join(i, j, MAX_CORRELATED_GROUP)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        if hashes[i]:
            groups.setdefault(sets.find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


class _UnionFind:
    """Disjoint sets of sample indices; a join may be refused when the joined set would pass a size limit."""

    def __init__(self, n: int) -> None:
        self.parent, self.size, self.n = list(range(n)), [1] * n, n

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int, limit: int | None = None) -> None:
        a, b = self.find(i), self.find(j)
        if a != b and self.size[a] + self.size[b] <= (limit or self.n):
            self.parent[a] = b
            self.size[b] += self.size[a]


def _similar_pairs(
    idx: np.ndarray, thumbs: np.ndarray, threshold: float, min_correlation: float, chunk: int
) -> tuple[list[tuple[int, int]], list[tuple[float, int, int]]]:
    """Pairs of samples (among ``idx``) whose thumbnails are close in gray level, and pairs whose thumbnails
    correlate (plain or mirrored) with their correlation, compared chunk by chunk."""
    import torch

    t = torch.from_numpy(thumbs[idx].astype(np.float32))
    z, mirrored = _standardise(t), _standardise(t.flip(-1))
    t = t.reshape(len(idx), -1)
    limit = threshold * THUMB  # cdist is the L2 norm over 256 values = 16 x RMS
    close: list[tuple[int, int]] = []
    correlated: list[tuple[float, int, int]] = []
    for start in range(0, len(idx), chunk):
        rows, cols = torch.nonzero(torch.cdist(t[start : start + chunk], t) < limit, as_tuple=True)
        close += [(int(idx[r + start]), int(idx[c])) for r, c in zip(rows.tolist(), cols.tolist()) if r + start < c]
        rows_z = z[start : start + chunk]
        corr = torch.maximum(rows_z @ z.T, rows_z @ mirrored.T)
        rows, cols = torch.nonzero(corr >= min_correlation, as_tuple=True)
        correlated += [
            (float(corr[r, c]), int(idx[r + start]), int(idx[c]))
            for r, c in zip(rows.tolist(), cols.tolist())
            if r + start < c
        ]
    return close, correlated


def _standardise(thumbs):
    """(N, 16, 16) float -> (N, 256) rows of zero mean and unit norm (their dot product is the correlation);
    a flat thumbnail gets a zero row, which correlates with nothing."""
    x = thumbs.reshape(len(thumbs), -1)
    x = x - x.mean(dim=1, keepdim=True)
    norm = x.norm(dim=1, keepdim=True)
    return x / norm.clamp_min(1e-6) * (norm > 1e-3)


# -- crop-aligned copies: one picture twice, once as it was and once cropped tight to the chest ------------------------

#: the share cut off each side of a picture that a cropped copy may miss (COVID-QU-Ex crops up to about 25%)
CROP_OFFSETS = (0.0, 0.08, 0.16, 0.24)
#: a cropped copy matches when the crop's 32 x 32 thumbnail correlates this well with the other picture's ...
CROP_CORRELATION = 0.98
#: ... and their fine detail agrees (high-pass at 128 px; distinct CXRs of similar build stay below it)
DETAIL_CORRELATION = 0.6
SCREEN_CORRELATION = 0.95  # 16 x 16 screening before the check at 32 and 128 px


def crop_aligned_pairs(
    images: np.ndarray, left: np.ndarray, right: np.ndarray, offsets: Sequence[float] = CROP_OFFSETS
) -> list[tuple[int, int]]:
    """Pairs (i, j), i in ``left`` and j in ``right`` (row indices of ``images``), where a crop of one (up to the
    largest offset off each side, on a grid of ``offsets``) is the same picture as the other, as a whole.

    A crop box of one image is compared with the whole of the other: 16 x 16 thumbnails screen every box and pair
    (correlation >= :data:`SCREEN_CORRELATION`); a candidate is kept when the crop's 32 x 32 thumbnail correlates at
    least :data:`CROP_CORRELATION` with the other's and their high-pass detail at 128 px at least
    :data:`DETAIL_CORRELATION`. Both directions are searched (either picture may be the cropped one).

    Args:
        images: uint8 (N, S, S) at the working size (a memory-map is read in pieces).
    """
    from concurrent.futures import ThreadPoolExecutor

    found: set[tuple[int, int]] = set()
    same = np.array_equal(left, right)  # within one set: one direction already tries every picture as the crop
    for crop_side, whole_side in ((left, right),) if same else ((left, right), (right, left)):
        candidates = [(i, j) for i, j in _crop_candidates(images, crop_side, whole_side, offsets) if i != j]
        with ThreadPoolExecutor() as pool:  # each check is a few hundred small torch/OpenCV calls
            kept = pool.map(lambda ij: _same_picture_cropped(images[ij[0]], images[ij[1]], offsets), candidates)
            for (i, j), keep in zip(candidates, kept):
                if keep:
                    a, b = (i, j) if crop_side is left else (j, i)
                    found.add((int(min(a, b)), int(max(a, b))) if same else (int(a), int(b)))
    return sorted(found)


def _thumbs(x, size: int):
    """float (B, 1, H, W) -> (B, size*size) standardised rows (area-averaged thumbnails)."""
    import torch.nn.functional as F

    return _standardise(F.adaptive_avg_pool2d(x, size)[:, 0])


def _boxes(s: int, offsets: Sequence[float]) -> list[tuple[int, int, int, int]]:
    cuts = [round(o * s) for o in offsets]
    return [(t, b, l, r) for t in cuts for b in cuts for l in cuts for r in cuts if (t, b, l, r) != (0, 0, 0, 0)]


def _summed_area(images: np.ndarray):
    """int64 (B, S+1, S+1) summed-area tables of uint8 (B, S, S) pictures: the sum of any box in four lookups."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.asarray(images).astype(np.int64))
    return F.pad(x.cumsum(-2).cumsum(-1), (1, 0, 1, 0))


def _box_thumbs(table, boxes, size: int):
    """Standardised (B, K, size * size) thumbnails of the crop boxes (t, b, l, r) (K, 4) of every picture whose
    summed-area table is in ``table``: area averages over the bins of ``adaptive_avg_pool2d``, exactly, with no
    pooling pass over the pixels (each box costs size * size lookups, whatever its area)."""
    import torch

    s = table.shape[-1] - 1
    boxes = torch.as_tensor(boxes, dtype=torch.int64).reshape(-1, 4)
    k = torch.arange(size)

    def edges(lo, n):  # PyTorch's adaptive bins: [floor(i n / size), ceil((i + 1) n / size))
        return lo[:, None] + (k * n[:, None]) // size, lo[:, None] - (-((k + 1) * n[:, None]) // size)

    t, b, l, r = boxes.unbind(1)
    y0, y1 = edges(t, s - b - t)
    x0, x1 = edges(l, s - r - l)

    def at(y, x):
        return table[:, y[:, :, None], x[:, None, :]]

    sums = at(y1, x1) - at(y0, x1) - at(y1, x0) + at(y0, x0)
    area = (y1 - y0)[:, :, None] * (x1 - x0)[:, None, :]
    means = (sums.double() / area).float()
    return _standardise(means.reshape(-1, size, size)).reshape(len(table), len(boxes), size * size)


def _crop_candidates(images: np.ndarray, crop_side: np.ndarray, whole_side: np.ndarray, offsets: Sequence[float]):
    """(i, j) whose 16 x 16 thumbnails (a crop of i, the whole of j) correlate at least the screening level."""
    import torch

    s = images.shape[-1]
    whole = _thumbs(torch.from_numpy(np.asarray(images[whole_side], dtype=np.float32))[:, None], THUMB)
    out = set()
    for start in range(0, len(crop_side), 256):
        rows = crop_side[start : start + 256]
        table = _summed_area(np.asarray(images[rows]))
        for box in _boxes(s, offsets):
            corr = _box_thumbs(table, box, THUMB)[:, 0] @ whole.T
            hits = torch.nonzero(corr >= SCREEN_CORRELATION, as_tuple=True)
            out.update(zip(rows[hits[0].numpy()].tolist(), whole_side[hits[1].numpy()].tolist()))
    return sorted(out)


def _same_picture_cropped(crop_from: np.ndarray, whole: np.ndarray, offsets: Sequence[float]) -> bool:
    """Whether some crop box of ``crop_from`` is ``whole``: the grid box that correlates best at 32 x 32, refined a
    few pixels at a time on each side, must reach :data:`CROP_CORRELATION` there and :data:`DETAIL_CORRELATION` in
    its high-pass detail at 128 px."""
    import torch

    s = crop_from.shape[-1]
    table = _summed_area(crop_from[None])
    target = _thumbs(torch.from_numpy(whole.astype(np.float32))[None, None], 32)[0]
    limit = round(max(offsets) * s) + 4

    def valid(box: tuple[int, ...]) -> bool:
        t, b, l, r = box
        return min(box) >= 0 and max(box) <= limit and s - b - t >= 32 and s - r - l >= 32

    def score(box: tuple[int, ...]) -> float:
        return float(_box_thumbs(table, box, 32)[0, 0] @ target) if valid(box) else -1.0

    grid = [b for b in _boxes(s, offsets) if valid(b)]
    scores = (_box_thumbs(table, grid, 32)[0] @ target).tolist()  # every grid box at once
    box, best = grid[int(np.argmax(scores))], max(scores)
    for step in (4, 2, 1):  # coordinate ascent: move one side at a time while it helps
        improved = True
        while improved:
            improved = False
            for side in range(4):
                for delta in (-step, step):
                    trial = tuple(v + delta if k == side else v for k, v in enumerate(box))
                    if (value := score(trial)) > best:
                        box, best, improved = trial, value, True
    if best < CROP_CORRELATION:
        return False
    t, b, l, r = box
    return float(np.dot(_detail(crop_from[t : s - b, l : s - r]), _detail(whole))) >= DETAIL_CORRELATION


def _detail(pixels: np.ndarray) -> np.ndarray:
    """High-pass detail at 128 px (the picture minus its blur), as a unit vector."""
    x = cv2.resize(pixels, (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32)
    hp = (x - cv2.GaussianBlur(x, (0, 0), 3)).ravel()
    hp -= hp.mean()
    return hp / max(float(np.linalg.norm(hp)), 1e-6)
