"""Grad-CAM: which parts of the face the model used for a class (pytorch-grad-cam).

``gradcam_maps(model, inputs, classes)`` returns one heat map per face in 0..1 at input size;
``overlay`` blends a map over the face for display. By default the map comes from LayerCAM at
the last stage with at least 8x8 cells (``MIN_CAM_CELLS``): it puts more of its mass on the eyes,
brows and mouth than their share of the face, where the textbook Grad-CAM of the last 2x2 layer is
no better than an even spread (notebook 06 and benchmarks/bench_gradcam.py measure it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fer_utils.core.errors import FERConfigError

MIN_CAM_CELLS = 8
"""The fewest map cells per side that resolve a face's parts: at 64 px input the last convolution
is 2x2 (four quadrant blobs); the last stage at stride 8 is 8x8 (eyes, brows and mouth apart)."""

CAM_METHODS = ("layercam", "gradcam")
"""``layercam`` (Jiang et al., 2021: each location weighted by its own positive gradient, made for
layers before the last) is the default; ``gradcam`` weights whole feature maps by their mean gradient."""

CAM_LAYERS = ("fine", "last")
"""``fine``: the last stage whose map has at least ``MIN_CAM_CELLS`` cells per side at the model's
input size; ``last``: the last convolution (classic Grad-CAM)."""


def gradcam_target_layer(model: nn.Module) -> nn.Module:
    """The last convolution before pooling: ``_conv_head`` (efficientnet-pytorch), ``conv_head`` (timm)."""
    for name in ("_conv_head", "conv_head"):
        if isinstance(getattr(model, name, None), nn.Module):
            return getattr(model, name)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise FERConfigError(f"{type(model).__name__} has no convolution for Grad-CAM")
    return convs[-1]


def _map_sides(model: nn.Module, image_size: int) -> list[tuple[nn.Module, int]]:
    """Each stage (timm ``blocks``, efficientnet-pytorch ``_blocks``) and the last convolution,
    with the side of its output map at ``image_size``."""
    stages = getattr(model, "blocks", None)
    if stages is None:
        stages = getattr(model, "_blocks", None)
    candidates = [*(stages or []), gradcam_target_layer(model)]
    sides: dict[int, int] = {}
    hooks = [
        m.register_forward_hook(lambda module, inputs, output, i=i: sides.update({i: min(output.shape[-2:])}))
        for i, m in enumerate(candidates)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return [(m, sides[i]) for i, m in enumerate(candidates) if i in sides]


def fine_target_layer(model: nn.Module, image_size: int, min_cells: int = MIN_CAM_CELLS) -> nn.Module:
    """The last stage or head whose output has at least ``min_cells`` per side at ``image_size``;
    the one with the largest map when none has that many."""
    sides = _map_sides(model, image_size)
    fine = [m for m, side in sides if side >= min_cells]
    return fine[-1] if fine else max(sides, key=lambda pair: pair[1])[0]


def cam_resolution(model: nn.Module, image_size: int, layer: str = "fine") -> list[int]:
    """Cells per side of the map each member's Grad-CAM layer gives at ``image_size``."""
    layers = gradcam_target_layers(model, image_size, layer)
    return [
        next(side for m, side in _map_sides(member, size) if m is target)
        for (member, size), target in zip(_members(model, image_size), layers, strict=True)
    ]


FACE_PARTS = {"eyes and brows": (10, 24, 4, 44), "mouth": (30, 44, 12, 36)}
"""Rows and columns (top, bottom, left, right) of the eyes-and-brows band and the mouth in a
48x48 FER2013-style crop (the face fills the crop, eyes about a third of the way down)."""


def face_part_share(maps: np.ndarray) -> dict[str, float]:
    """Mean share of each map's mass inside each of ``FACE_PARTS`` (scaled to the map's size),
    plus ``area``: the share those parts would get from a map spread evenly over the face."""
    maps = np.asarray(maps, dtype=np.float64)
    h, w = maps.shape[-2:]
    total = np.clip(maps.sum(axis=(-2, -1)), 1e-12, None)
    shares, inside = {}, np.zeros((h, w), bool)
    for name, (top, bottom, left, right) in FACE_PARTS.items():
        region = np.zeros((h, w), bool)
        region[top * h // 48 : bottom * h // 48, left * w // 48 : right * w // 48] = True
        inside |= region
        shares[name] = float(((maps * region).sum(axis=(-2, -1)) / total).mean())
    shares["area"] = float(inside.mean())
    return shares


def _members(model: nn.Module, image_size: int | None) -> list[tuple[nn.Module, int | None]]:
    """(network, its input size) for each member of an ensemble, or for the model itself; a
    temperature wrapper is looked through."""
    from fer_utils.model.calibration import base_model
    from fer_utils.model.factory import Ensemble

    model = base_model(model)
    if not isinstance(model, Ensemble):
        return [(model, image_size)]
    sizes = model.sizes or [image_size] * len(model.members)
    return list(zip(model.members, sizes, strict=True))


def gradcam_target_layers(model: nn.Module, image_size: int | None = None, layer: str = "last") -> list[nn.Module]:
    """Grad-CAM's layers: the model's own (see ``CAM_LAYERS``), or each member's for an ensemble
    (pytorch-grad-cam then averages the members' maps)."""
    if layer not in CAM_LAYERS:
        raise FERConfigError(f"Grad-CAM layer must be one of {', '.join(CAM_LAYERS)}, got {layer!r}")
    members = _members(model, image_size)
    if layer == "last":
        return [gradcam_target_layer(m) for m, _ in members]
    if image_size is None:
        raise FERConfigError("the 'fine' Grad-CAM layer depends on the input size; pass image_size")
    return [fine_target_layer(m, size) for m, size in members]


def gradcam_maps(
    model: nn.Module,
    inputs: torch.Tensor,
    target_classes: Sequence[int] | None = None,
    method: str = "layercam",
    layer: str = "fine",
    batch_size: int = 4,
) -> np.ndarray:
    """Class-activation maps (N, H, W) in 0..1 for ``inputs`` (N, C, H, W), for the given classes
    (default: each face's predicted class); ``method`` from ``CAM_METHODS``, ``layer`` from ``CAM_LAYERS``.
    ``method="gradcam", layer="last"`` is the textbook Grad-CAM that notebook 06 builds by hand.

    ``batch_size`` faces go through forward and backward at a time: the backward pass keeps every
    activation of every member, so memory must grow with the batch, not with N (notebook 06 explains
    hundreds of faces; benchmarks/bench_course.py watches its peak). Larger batches are no faster
    on a CPU and hold an ensemble's activations for more faces."""
    from pytorch_grad_cam import GradCAM, LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if method not in CAM_METHODS:
        raise FERConfigError(f"CAM method must be one of {', '.join(CAM_METHODS)}, got {method!r}")
    if target_classes is not None and len(target_classes) != len(inputs):
        raise FERConfigError(f"give one target class per face: {len(target_classes)} classes for {len(inputs)} faces")
    was_training = model.training
    model.eval()
    maps = []
    try:
        layers = gradcam_target_layers(model, inputs.shape[-1], layer)
        kind = LayerCAM if method == "layercam" else GradCAM
        with kind(model=model, target_layers=layers) as cam:
            for start in range(0, len(inputs), batch_size):
                batch = inputs[start : start + batch_size]
                if target_classes is None:
                    with torch.no_grad():
                        classes = model(batch).argmax(dim=1).tolist()
                else:
                    classes = target_classes[start : start + batch_size]
                with torch.enable_grad():
                    maps.append(cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(k)) for k in classes]))
    finally:
        model.train(was_training)
    if not maps:
        return np.zeros((0, *inputs.shape[-2:]), dtype=np.float32)
    return np.nan_to_num(np.concatenate(maps)).astype(np.float32)


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
