"""Class-activation maps of the classifier (pytorch-grad-cam), how much of them falls on the lungs, and a
picture people can read: the map on the image at its own size, with the class, its probability and the
in-lung share written on it."""

from __future__ import annotations

import numpy as np
import torch

from .cls.classifier import Classifier
from .masking import lung_boxes
from .models.classifiers import cam_layer

#: ``--cam-method`` name -> pytorch-grad-cam class name (all take the model and its target layers)
CAM_METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "gradcam-elementwise": "GradCAMElementWise",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
}


def cam_class(method: str):
    """The pytorch-grad-cam class for ``method``.

    Raises:
        ValueError: unknown method; the message lists the known ones.
    """
    import pytorch_grad_cam

    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}")
    return getattr(pytorch_grad_cam, CAM_METHODS[method])


def explain(
    classifier: Classifier,
    images: torch.Tensor,
    masks: torch.Tensor | None,
    targets: list[int] | None = None,
    method: str = "gradcam",
    layer: str | None = None,
) -> list[dict]:
    """Maps, inputs, lungs and in-lung shares (see :meth:`lungcls.pipeline.Pipeline.explain`); ``layer``: the module
    (e.g. ``"layer3"``, a finer map) whose activations the map reads instead of the registered CAM layer."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    task, model = classifier.task, classifier.model
    x01, lungs, _ = task.prepare(images, masks)
    x = task.normalize(x01).float()
    was = [p.requires_grad for p in model.parameters()]
    try:
        with (
            torch.enable_grad(),
            cam_class(method)(model=model, target_layers=[_layer(model, classifier.cfg.arch, layer)]) as cam,
        ):
            chosen = [ClassifierOutputTarget(int(t)) for t in targets] if targets is not None else None
            maps = cam(input_tensor=x, targets=chosen).astype(np.float32)
    finally:
        for p, r in zip(model.parameters(), was):
            p.requires_grad_(r)
    lung = lungs[:, 0].cpu().numpy() if lungs is not None else None
    shares = in_lung_share(maps, lung) if lung is not None else np.full(len(maps), np.nan)
    cropped = masks is not None and "cropped" in classifier.cfg.mode
    h, w = images.shape[-2:]
    boxes = lung_boxes(masks, classifier.cfg.margin)[0].tolist() if cropped else [[0.0, 0.0, w, h]] * len(maps)
    return [
        {
            "cam": maps[k],
            "input": x01[k, 0].float().cpu().numpy(),
            "lung": lung[k] if lung is not None else None,
            "in_lung_share": float(shares[k]),
            "box": tuple(boxes[k]),
        }
        for k in range(len(maps))
    ]


def _layer(model: torch.nn.Module, arch: str, name: str | None) -> torch.nn.Module:
    return cam_layer(model, arch) if name is None else model.get_submodule(name)


def in_lung_share(saliency: np.ndarray, lung_masks: np.ndarray) -> np.ndarray:
    """Share of each saliency map's total that lies inside the lung mask (NaN for an all-zero map).

    Args:
        saliency: float (N, H, W) >= 0; lung_masks: (N, H, W) in {0, 1}.
    """
    total = saliency.reshape(len(saliency), -1).sum(axis=1)
    inside = (saliency * (lung_masks > 0)).reshape(len(saliency), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)


def explanation_picture(
    native: np.ndarray,
    explanation: dict,
    working_size: int,
    lung: np.ndarray | None,
    caption: str,
    min_side: int = 512,
    max_side: int = 1024,
) -> np.ndarray:
    """A BGR uint8 picture people can read: the image at its own size (scaled into [min_side, max_side]),
    the map laid over the part the classifier saw, the lung outline in green, and ``caption`` on top.

    Args:
        native: uint8 (H, W) the image as read; explanation: one entry of :func:`explain`;
        working_size: the pipeline's working size (the explanation's box is in its pixels);
        lung: uint8 (S, S) lung mask at the working size, or None.
    """
    import cv2

    h, w = native.shape
    scale = min(max_side / max(h, w), max(1.0, min_side / max(h, w)))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    gray = cv2.resize(native, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    picture = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    x0, y0, x1, y1 = explanation["box"]
    sx, sy = size[0] / working_size, size[1] / working_size
    bx0, by0 = int(round(x0 * sx)), int(round(y0 * sy))
    bx1, by1 = max(bx0 + 1, int(round(x1 * sx))), max(by0 + 1, int(round(y1 * sy)))
    cam = cv2.resize(explanation["cam"], (bx1 - bx0, by1 - by0), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap((np.clip(cam, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    region = picture[by0:by1, bx0:bx1]
    picture[by0:by1, bx0:bx1] = cv2.addWeighted(region, 0.6, heat[: region.shape[0], : region.shape[1]], 0.4, 0)
    if lung is not None:
        outline = cv2.resize(lung.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(outline, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(picture, contours, -1, (0, 220, 0), max(1, round(max(size) / 400)))
    bar_h = max(28, round(max(size) / 22))
    bar = np.zeros((bar_h, size[0], 3), np.uint8)
    font_scale = bar_h / 40
    cv2.putText(
        bar,
        caption,
        (8, int(bar_h * 0.72)),
        cv2.FONT_HERSHEY_SIMPLEX,
        font_scale,
        (255, 255, 255),
        max(1, round(font_scale * 1.5)),
        cv2.LINE_AA,
    )
    return np.vstack([bar, picture])
