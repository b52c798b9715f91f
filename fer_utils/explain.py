"""Grad-CAM: which parts of the face the model used for a class (pytorch-grad-cam).

``gradcam_maps(model, inputs, classes)`` returns one heat map per face in 0..1 at input size;
``overlay`` blends a map over the face for display.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fer_utils.errors import FERConfigError


def gradcam_target_layer(model: nn.Module) -> nn.Module:
    """The last convolution before pooling: ``_conv_head`` (efficientnet-pytorch), ``conv_head`` (timm)."""
    for name in ("_conv_head", "conv_head"):
        if isinstance(getattr(model, name, None), nn.Module):
            return getattr(model, name)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise FERConfigError(f"{type(model).__name__} has no convolution for Grad-CAM")
    return convs[-1]


def gradcam_target_layers(model: nn.Module) -> list[nn.Module]:
    """Grad-CAM's layers: the model's last convolution, or each member's for an ensemble
    (pytorch-grad-cam then averages the members' maps); a temperature wrapper is looked through."""
    from fer_utils.calibration import base_model
    from fer_utils.models import Ensemble

    model = base_model(model)
    if isinstance(model, Ensemble):
        return [gradcam_target_layer(m) for m in model.members]
    return [gradcam_target_layer(model)]


def gradcam_maps(model: nn.Module, inputs: torch.Tensor, target_classes: Sequence[int] | None = None) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in 0..1 for ``inputs`` (N, C, H, W), for the given classes
    (default: each face's predicted class)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    was_training = model.training
    model.eval()
    try:
        if target_classes is None:
            with torch.no_grad():
                target_classes = model(inputs).argmax(dim=1).tolist()
        targets = [ClassifierOutputTarget(int(k)) for k in target_classes]
        with torch.enable_grad(), GradCAM(model=model, target_layers=gradcam_target_layers(model)) as cam:
            maps = cam(input_tensor=inputs, targets=targets)
    finally:
        model.train(was_training)
    return np.nan_to_num(maps).astype(np.float32)


def overlay(face: np.ndarray, cam: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """An RGB uint8 image: the gray face with the heat map blended in at ``opacity`` (0 = face only)."""
    from PIL import Image
    from pytorch_grad_cam.utils.image import show_cam_on_image

    if cam.shape != face.shape:
        cam = (
            np.asarray(
                Image.fromarray((cam * 255).astype(np.uint8)).resize(face.shape[::-1], Image.Resampling.BILINEAR),
                dtype=np.float32,
            )
            / 255
        )
    rgb = np.repeat(face[..., None], 3, axis=2).astype(np.float32) / 255
    return show_cam_on_image(rgb, cam, use_rgb=True, image_weight=1 - float(np.clip(opacity, 0, 1)))
