"""Stage 1 at inference: a trained U-Net plus its post-processing, batched on the device."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import load_model, read_json
from ..config import PostprocessConfig, SegmenterConfig, from_dict
from ..data.augment import to_unit
from ..engine.device import autocast, inference_batch_size, memory_format, resolve_device
from ..errors import CheckpointError
from ..models import build_segmenter
from .components import MAX_PIXELS
from .postprocess import postprocess, postprocess_batch


@dataclass
class SegmentResult:
    """One image's lungs: mask uint8 (H, W) {0, 1} at the input size, lung fraction, box, flags."""

    mask: np.ndarray
    lung_fraction: float
    bbox: tuple[int, int, int, int] | None  # x0, y0, x1, y1 (exclusive), None when no lung
    flags: list[str] = field(default_factory=list)


class Segmenter:
    """A trained lung U-Net.

    Args:
        model: the U-Net; cfg: its config; post: post-processing settings.
        device: where it runs; amp: bf16 on CUDA; batch_size: images per forward pass (default 64 on
            a GPU, 8 on CPU).
        compile: run the forward pass through ``torch.compile`` (faster on a GPU after a warm-up).
    """

    def __init__(
        self, model: torch.nn.Module, cfg: SegmenterConfig, post: PostprocessConfig | None = None,
        device: str | torch.device = "auto", amp: bool = True, batch_size: int | None = None, compile: bool = False,
    ) -> None:  # fmt: skip
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.cfg, self.post, self.amp = cfg, post or PostprocessConfig(), amp
        self.batch_size = inference_batch_size(self.device, batch_size, on_gpu=64)
        self.format = memory_format(self.device)
        self.model = model.to(self.device, memory_format=self.format).eval()
        self.forward = torch.compile(self.model) if compile else self.model
        self.run: Path | None = None  # the run folder it was loaded from

    @classmethod
    def load(cls, run: str | Path, device: str | torch.device = "auto", **kwargs) -> Segmenter:
        """Load a run folder written by ``train-seg`` (``config.json`` + ``model.safetensors``), or a bundle."""
        run = Path(run)
        if (run / "pipeline.json").is_file():  # a bundle: take its segmenter
            run = run / "segmenter"
        config = read_json(run / "config.json")
        if config.get("kind") != "segmenter":
            raise CheckpointError(f"{run}: not a segmentation run (kind {config.get('kind')!r})")
        cfg = from_dict(SegmenterConfig, config["model"])
        post = from_dict(PostprocessConfig, config.get("postprocess", {}))
        model = load_model(run / "model.safetensors", build_segmenter(cfg))
        obj = cls(model, cfg, post, device, **kwargs)
        obj.run = run
        return obj

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Lung probability per pixel.

        Args:
            images: uint8 (N, 1, H, W), any H and W (resized to the model's size and back).

        Returns:
            float32 (N, 1, H, W) in [0, 1] on the segmenter's device.
        """
        s = self.cfg.image_size
        out = []
        for chunk in images.split(self.batch_size):
            x = to_unit(chunk.to(self.device, non_blocking=True))
            h, w = x.shape[-2:]
            if (h, w) != (s, s):
                x = F.interpolate(x, size=(s, s), mode="area" if h * w > s * s else "bilinear")
            x = ((x - self.cfg.mean) / self.cfg.std).contiguous(memory_format=self.format)
            with autocast(self.device, self.amp):
                p = torch.sigmoid(self.forward(x).float())
            if (h, w) != (s, s):
                p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
            out.append(p)
        return torch.cat(out) if out else torch.empty(0, 1, *images.shape[-2:], device=self.device)

    def masks(self, images: torch.Tensor) -> tuple[torch.Tensor, list[list[str]]]:
        """Post-processed lung masks, left on the segmenter's device.

        On a GPU, post-processing runs there on whole batches
        (:func:`~lungcls.seg.postprocess.postprocess_batch`); on CPU it uses scikit-image. Both give
        the same masks.

        Args:
            images: uint8 (N, 1, H, W).

        Returns:
            (masks uint8 (N, 1, H, W) in {0, 1} on the device, flags per image).
        """
        out: list[torch.Tensor] = []
        flags: list[list[str]] = []
        for chunk in images.split(self.batch_size):
            masks, f = self.postprocess(self.probabilities(chunk))
            out.append(masks)
            flags += f
        if not out:
            return torch.empty(0, 1, *images.shape[-2:], dtype=torch.uint8, device=self.device), []
        return torch.cat(out), flags

    def postprocess(self, probs: torch.Tensor) -> tuple[torch.Tensor, list[list[str]]]:
        """Post-process probabilities float (N, 1, H, W): (masks uint8 (N, 1, H, W) on their device, flags per image)."""
        if probs.device.type != "cpu" and probs.shape[-2] * probs.shape[-1] <= MAX_PIXELS:
            return postprocess_batch(probs, self.post)
        done = [postprocess(p, self.post) for p in probs[:, 0].float().cpu().numpy()]
        if not done:
            return torch.empty(probs.shape, dtype=torch.uint8, device=probs.device), []
        masks = torch.from_numpy(np.stack([m for m, _ in done]))[:, None].to(probs.device)
        return masks, [f for _, f in done]

    def segment(self, images: torch.Tensor) -> list[SegmentResult]:
        """Post-processed lung masks for uint8 (N, 1, H, W) images, with lung fraction, box and flags."""
        return describe_batch(*self.masks(images))


def describe(mask: np.ndarray, flags: list[str]) -> SegmentResult:
    """Lung fraction and bounding box of a {0, 1} mask."""
    ys, xs = np.nonzero(mask)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else None
    return SegmentResult(mask, float(mask.mean()), bbox, flags)


def describe_batch(masks: torch.Tensor, flags: list[list[str]]) -> list[SegmentResult]:
    """:func:`describe` for uint8 (N, 1, H, W) masks on any device: boxes and fractions computed there, one copy back."""
    from ..masking import lung_boxes

    boxes, empty = lung_boxes(masks, 0.0)
    fractions = masks.float().mean(dim=(1, 2, 3))
    arrays, boxes, empty, fractions = (
        masks[:, 0].cpu().numpy(),
        boxes.long().tolist(),
        empty.tolist(),
        fractions.tolist(),
    )
    return [SegmentResult(m, f, None if e else tuple(b), list(g))
            for m, f, b, e, g in zip(arrays, fractions, boxes, empty, flags)]  # fmt: skip
