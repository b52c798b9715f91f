"""Image transforms (torchvision v2) for 1-channel uint8 faces: augmentation, eval, TTA views.

Inputs are ``(1, H, W)`` uint8 tensors as stored by the datasets; outputs are normalized
float tensors with ``channels`` channels (3 repeats the gray channel for ImageNet backbones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as TF

from fer_utils.errors import FERConfigError

TTA_MODES = ("none", "flip", "crops")
"""Test-time augmentation: the image alone; plus its mirror; plus five 90 % crops of each (ten views)."""


def _tail(channels: int, mean: Sequence[float], std: Sequence[float]) -> list:
    return [
        v2.ToDtype(torch.float32, scale=True),
        v2.Grayscale(num_output_channels=channels),
        v2.Normalize(mean=list(mean)[:channels], std=list(std)[:channels]),
    ]


@dataclass(frozen=True)
class Augmentation:
    """Strength (0..1) of each training augmentation; 0 turns that one off.

    At 1: crops down to 60 % of the face, +-20 degrees rotation, +-50 % brightness and
    contrast, random erasing of 2-12 % of the face half the time. Flips are on unless
    ``flip`` is False.
    """

    crop: float = 0.5
    rotation: float = 0.5
    brightness: float = 0.5
    contrast: float = 0.5
    erasing: float = 0.5
    flip: bool = True

    @classmethod
    def uniform(cls, strength: float) -> Augmentation:
        """All augmentations at one ``strength`` (the TrainConfig ``augment`` knob)."""
        if not 0 <= strength <= 1:
            raise FERConfigError(f"augmentation strength must be between 0 and 1, got {strength}")
        return cls(strength, strength, strength, strength, strength, flip=strength > 0)


def augmentation_transform(
    image_size: int,
    aug: Augmentation,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    channels: int = 3,
) -> v2.Compose:
    """The training transform for a given mix of augmentation strengths."""
    for name in ("crop", "rotation", "brightness", "contrast", "erasing"):
        if not 0 <= getattr(aug, name) <= 1:
            raise FERConfigError(f"augmentation {name} must be between 0 and 1, got {getattr(aug, name)}")
    steps: list = [
        v2.RandomResizedCrop(
            image_size,
            scale=(1 - 0.4 * aug.crop, 1.0),
            ratio=(1 - 0.15 * aug.crop, 1 + 0.15 * aug.crop),
            antialias=True,
        )
    ]
    if aug.flip:
        steps.append(v2.RandomHorizontalFlip())
    if aug.rotation:
        steps.append(v2.RandomRotation(20 * aug.rotation))
    if aug.brightness or aug.contrast:
        steps.append(v2.ColorJitter(brightness=0.5 * aug.brightness, contrast=0.5 * aug.contrast))
    steps += _tail(channels, mean, std)
    if aug.erasing:
        steps.append(v2.RandomErasing(p=0.5 * aug.erasing, scale=(0.02, 0.12), value=0))
    return v2.Compose(steps)


def train_transform(
    image_size: int,
    strength: float = 0.5,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    channels: int = 3,
) -> v2.Compose:
    """Random crop/scale, flip, rotation, brightness/contrast and erasing, all at ``strength``.

    ``strength`` 0 turns augmentation off (just resize); 0.5 suits FER2013 (the default).
    """
    if strength == 0:
        return eval_transform(image_size, mean, std, channels)
    return augmentation_transform(image_size, Augmentation.uniform(strength), mean, std, channels)


def eval_transform(
    image_size: int, mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5), channels: int = 3
) -> v2.Compose:
    """Deterministic transform for validation, test and inference: scale to 0..1, resize, normalize.

    The resize runs on floats (plain bilinear for upsampling), not on uint8 where torchvision
    rounds with fixed-point arithmetic, so other runtimes (the browser demo) can match it exactly.
    """
    return v2.Compose(
        [
            v2.ToDtype(torch.float32, scale=True),
            v2.Resize((image_size, image_size), antialias=True),
            v2.Grayscale(num_output_channels=channels),
            v2.Normalize(mean=list(mean)[:channels], std=list(std)[:channels]),
        ]
    )


def tta_views(batch: torch.Tensor, mode: str = "flip") -> torch.Tensor:
    """Views of an already-transformed batch ``(B, C, H, W)`` as ``(V, B, C, H, W)``.

    ``flip``: the batch and its mirror. ``crops``: five 90 % crops (corners and centre, resized
    back) of the batch and of its mirror, the ten-crop scheme FER2013 papers use.
    """
    if mode not in TTA_MODES:
        raise FERConfigError(f"TTA mode must be one of {', '.join(TTA_MODES)}, got {mode!r}")
    views = [batch]
    if mode in ("flip", "crops"):
        views.append(TF.horizontal_flip(batch))
    if mode == "crops":
        size = batch.shape[-1]
        crop = max(1, round(size * 0.9))
        views = [TF.resize(c, [size, size], antialias=True) for view in views for c in TF.five_crop(view, [crop, crop])]
    return torch.stack(views)
