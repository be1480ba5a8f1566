"""Stage 1 at inference: a trained U-Net plus its post-processing, batched on the device.

:meth:`Segmenter.masks` is the one stage-1 inference path: ``lungcls segment``, ``classify``,
``predict``, ``Pipeline``, ``train-cls`` (predicted masks for the cache) and ``evaluate-seg`` all
call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import builtin
from ..atomic import write_bytes
from ..checkpoint import load_state
from ..config import PostprocessConfig, SegmenterConfig, to_dict
from ..engine.device import autocast
from ..errors import CheckpointError
from ..masking import lung_boxes
from ..models.unet import build_segmenter, own_state, smp_config
from ..progress import progress_bar
from ..store import read_model
from ..trained import TrainedModel
from .postprocess import postprocess
from .task import SegmentationTask


@dataclass
class SegmentResult:
    """One image's lungs at the size the image was given.

    Attributes:
        mask: uint8 (H, W) in {0, 1} (None where the caller asked for no masks).
        lung_fraction: share of the image that is lung.
        box: the lungs' bounding box (x0, y0, x1, y1), x1 and y1 exclusive, or None when no lung.
        flags: mask-quality flags (see :mod:`lungcls.seg.postprocess`).
        dice_estimate: the Dice the mask is expected to have against a true mask (:func:`expected_dice`), NaN
            when not computed.
    """

    mask: np.ndarray | None
    lung_fraction: float
    box: tuple[int, int, int, int] | None
    flags: list[str] = field(default_factory=list)
    dice_estimate: float = float("nan")


@dataclass
class MaskBatch:
    """What the one stage-1 inference path returns for a batch, on the segmenter's device.

    Attributes:
        masks: uint8 (N, 1, H, W) in {0, 1}, post-processed, at the size the images were given.
        flags: mask-quality flags per image (see :mod:`lungcls.seg.postprocess`).
        probs: float32 (N, 1, H, W) in [0, 1], the lung probabilities before post-processing (only when asked).
        dice_estimates: per image, the Dice each mask is expected to have (:func:`expected_dice`).
    """

    masks: torch.Tensor
    flags: list[list[str]]
    probs: torch.Tensor | None = None
    dice_estimates: list[float] = field(default_factory=list)


class Segmenter(TrainedModel):
    """A trained lung U-Net and its post-processing.

    Args:
        model: the U-Net; cfg: its config; post: post-processing and flag settings.
        device: where it runs; amp: bf16 on CUDA; batch_size: images per forward pass (default 64 on
            a GPU, 8 on CPU).
        compile: run the forward pass through ``torch.compile`` (faster on a GPU after a warm-up).
        info: where the model came from and how it was trained (the rest of its ``config.json``).
        images: content hashes of its Train/Val/Test images, if recorded.
    """

    kind = "segmenter"

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: SegmenterConfig,
        post: PostprocessConfig | None = None,
        device: str | torch.device = "auto",
        amp: bool = True,
        batch_size: int | None = None,
        compile: bool = False,
        info: dict | None = None,
        images: dict[str, list[str]] | None = None,
    ) -> None:
        self.cfg, self.post = cfg, post or PostprocessConfig.for_target(cfg.target)
        self._place(partial(SegmentationTask, model.eval(), cfg), device, amp, batch_size, 64, compile, info, images)

    @classmethod
    def load(
        cls,
        spec: str | Path | None = None,
        device: str | torch.device = "auto",
        target: str | None = None,
        **kwargs,
    ) -> Segmenter:
        """Load a built-in model by name (None: :data:`lungcls.builtin.DEFAULT`, or :data:`lungcls.builtin.INFECTION`
        with ``target="infection"``), a ``train-seg`` run folder, or a bundle's segmenter, checked by the model
        store. Only the architecture is rebuilt; no initial weights are read.

        Args:
            target: ``lungs`` or ``infection``: refuse a model that segments the other (None: either).

        Raises:
            CheckpointError: ``spec`` is none of these (the message says what it found), its files do not
                pass the store's checks (SHA-256, value ranges), or it segments another target.
        """
        if spec is None:
            spec = builtin.INFECTION if target == "infection" else builtin.DEFAULT
        files = read_model(spec, "segmenter")
        cfg = files.section(SegmenterConfig, "model")
        if target is not None and cfg.target != target:
            raise CheckpointError(
                f"{files.name}: segments {cfg.target}, not {target}"
                + ("; pass it as the infection model (--infection-model)" if cfg.target == "infection" else "")
            )
        post = files.section(PostprocessConfig, "postprocess")
        model = build_segmenter(cfg)
        load_state(model, own_state(model, files.weights), files.name)
        info = {k: v for k, v in files.info.items() if k not in smp_config(cfg)}
        return cls(model, cfg, post, device, info=info, images=files.images, **kwargs)

    def to_config(self) -> dict:
        """Its ``config.json``: what it is (with the keys ``smp.from_pretrained`` reads) and how it was trained."""
        info = {k: v for k, v in self.info.items() if k not in ("kind", "source", "folder") and not k.startswith("_")}
        return {
            "kind": self.kind,
            "model": to_dict(self.cfg),
            "postprocess": to_dict(self.post),
            **info,
            **smp_config(self.cfg),
        }

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Lung probability per pixel.

        Args:
            images: uint8 (N, 1, H, W), any H and W (resized to the model's size and back).

        Returns:
            float32 (N, 1, H, W) in [0, 1] on the segmenter's device.
        """
        out = []
        for chunk in images.split(self.batch_size):
            with autocast(self.device, self.amp):
                p = torch.sigmoid(self.forward(self.task.inputs(chunk)).float())
            if p.shape[-2:] != chunk.shape[-2:]:
                p = F.interpolate(p, size=tuple(chunk.shape[-2:]), mode="bilinear", align_corners=False)
            out.append(p)
        return torch.cat(out) if out else torch.empty(0, 1, *images.shape[-2:], device=self.device)

    def masks(self, images: torch.Tensor | np.ndarray, keep_probs: bool = False, progress: bool = False) -> MaskBatch:
        """Post-processed lung masks, on the segmenter's device: the one stage-1 inference path.

        Args:
            images: uint8 (N, 1, H, W) (a tensor anywhere, or a NumPy array / memory-map, read batch by batch).
            keep_probs: also return the probabilities (for the threshold-only Dice of evaluations).
            progress: show a progress bar.
        """

        out, flags, probs, estimates = [], [], [], []
        bar = progress_bar(total=len(images), desc="segmenting", unit="img", enabled=progress)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            chunk = (
                torch.from_numpy(np.array(chunk)) if isinstance(chunk, np.ndarray) else chunk
            )  # a copy: memory-maps are read-only
            p = self.probabilities(chunk)
            m, f = postprocess(p, self.post)
            out.append(m)
            flags += f
            estimates += expected_dice(p, m).tolist()
            if keep_probs:
                probs.append(p)
            bar.update(len(chunk))
        bar.close()
        shape = (0, 1, *images.shape[-2:])
        masks = torch.cat(out) if out else torch.empty(shape, dtype=torch.uint8, device=self.device)
        kept = (torch.cat(probs) if probs else torch.empty(shape, device=self.device)) if keep_probs else None
        return MaskBatch(masks, flags, kept, estimates)

    def segment(self, images: torch.Tensor) -> list[SegmentResult]:
        """Masks with lung fraction, box and flags for uint8 (N, 1, H, W) images."""
        return describe(self.masks(images))

    def cache_masks(self, cache, progress: bool = True) -> np.ndarray:
        """Masks for every row of a packed cache, through the one inference path: uint8 (N, H, W) in {0, 1}.

        Predicted once per segmenter (weights and post-processing) and cache: kept beside the cache's data as
        ``predicted-<key>.u8`` and memory-mapped by every later run with the same segmenter.
        """
        import hashlib
        import json

        weights = self.info.get("source", {}).get("sha256")
        key = hashlib.sha256(f"{weights}{json.dumps(vars(self.post), sort_keys=True)}".encode()).hexdigest()[:16]
        stored = cache.path / cache.meta["data_dir"] / f"predicted-{key}.u8"
        if weights and stored.is_file() and stored.stat().st_size == cache.images.size:
            return np.memmap(stored, np.uint8, "r", shape=cache.images.shape)
        masks = self.masks(cache.images[:, None], progress=progress).masks[:, 0].cpu().numpy()
        if weights:
            write_bytes(stored, masks.tobytes())
        return masks


def describe(batch: MaskBatch, with_masks: bool = True) -> list[SegmentResult]:
    """Lung fraction and box of a batch's masks on any device (computed there, one copy back of each whole array);
    ``with_masks=False`` leaves the masks on the device (``mask`` is then None): the fractions and boxes alone
    cross the bus."""

    boxes, empty = lung_boxes(batch.masks, 0.0)
    fractions = (batch.masks != 0).float().mean(dim=(1, 2, 3))
    arrays = batch.masks[:, 0].cpu().numpy() if with_masks else [None] * len(batch.masks)
    boxes, empty, fractions = boxes.long().tolist(), empty.tolist(), fractions.tolist()
    estimates = batch.dice_estimates or [float("nan")] * len(arrays)
    return [
        SegmentResult(m, f, None if e else tuple(b), list(g), q)
        for m, f, b, e, g, q in zip(arrays, fractions, boxes, empty, batch.flags, estimates)
    ]


def expected_dice(probs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The Dice each mask is expected to have, were the truth drawn pixel by pixel from the segmenter's own
    probabilities: ``2 sum(p m) / (sum(p) + sum(m))`` (1 where both are empty). How well it tracks the true Dice is
    measured in ``benchmarks/results/mask_quality.md``.

    Args:
        probs: float (N, 1, H, W) in [0, 1]; masks: (N, 1, H, W) in {0, 1}, from the same images.
    """
    p, m = probs.float().flatten(1), (masks != 0).float().flatten(1)
    both = p.sum(1) + m.sum(1)
    return torch.where(both > 0, 2 * (p * m).sum(1) / both.clamp_min(1e-6), torch.ones_like(both)).cpu()
