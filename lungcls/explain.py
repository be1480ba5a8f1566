"""Grad-CAM explanations of the classifier (pytorch-grad-cam) and how much of them falls on the lungs."""

from __future__ import annotations

import numpy as np
import torch

from .cls.classifier import Classifier
from .masking import crop_and_mask


def gradcam(
    classifier: Classifier, images: torch.Tensor, masks: torch.Tensor | None, targets: list[int] | None = None
) -> np.ndarray:
    """Grad-CAM heat maps on the classifier's input, for the predicted class (or ``targets``).

    Args:
        images: uint8 (N, 1, H, W) at the working size; masks: (N, 1, H, W) lung masks or None (raw).

    Returns:
        float32 (N, S, S) in [0, 1], S the classifier's input size, aligned with its (cropped) input.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    task = classifier.task
    model = classifier.model
    x01, _ = task.inputs(images.to(classifier.device), masks.to(classifier.device) if masks is not None else None)
    x = ((x01 - task.cfg.mean) / task.cfg.std).float()
    was = [p.requires_grad for p in model.parameters()]
    with torch.enable_grad(), GradCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
        chosen = [ClassifierOutputTarget(int(t)) for t in targets] if targets is not None else None
        maps = cam(input_tensor=x, targets=chosen)
    for p, r in zip(model.parameters(), was):
        p.requires_grad_(r)
    return maps.astype(np.float32)


def input_lung_masks(classifier: Classifier, masks: torch.Tensor) -> np.ndarray:
    """The lung masks carried through the same geometry as the classifier input: uint8 (N, S, S) in {0, 1}."""
    cfg = classifier.cfg
    geometry = "cropped" if "cropped" in cfg.mode else "raw"
    m = (masks != 0).to(torch.uint8)
    moved, _ = crop_and_mask(m * 255, m, geometry, cfg.image_size, cfg.margin)
    return (moved[:, 0] > 0.5).to(torch.uint8).cpu().numpy()


def in_lung_share(saliency: np.ndarray, lung_masks: np.ndarray) -> np.ndarray:
    """Share of each saliency map's total that lies inside the lung mask (NaN for an all-zero map).

    Args:
        saliency: float (N, H, W) >= 0; lung_masks: (N, H, W) in {0, 1}.
    """
    total = saliency.reshape(len(saliency), -1).sum(axis=1)
    inside = (saliency * (lung_masks > 0)).reshape(len(saliency), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)


def heatmap_overlay(image01: np.ndarray, cam: np.ndarray, lung: np.ndarray | None = None) -> np.ndarray:
    """BGR uint8 picture: the classifier input with the Grad-CAM map in colour and the lung outline in green."""
    import cv2

    gray = (np.clip(image01, 0, 1) * 255).astype(np.uint8)
    heat = cv2.applyColorMap((cam * 255).astype(np.uint8), cv2.COLORMAP_JET)
    picture = cv2.addWeighted(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), 0.6, heat, 0.4, 0)
    if lung is not None:
        contours, _ = cv2.findContours(lung.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(picture, contours, -1, (0, 220, 0), 1)
    return picture
