"""Image transforms (torchvision v2) for 1-channel uint8 faces: augmentation and eval.

Test-time augmentation views are cut from the faces themselves: :func:`fer_utils.runtime.preprocess.tta_inputs`.

Inputs are ``(1, H, W)`` uint8 tensors as stored by the datasets; outputs are normalized
float tensors with ``channels`` channels (3 repeats the gray channel for ImageNet backbones).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torchvision.transforms.v2 as v2

from fer_utils.core.errors import FERConfigError
from fer_utils.runtime.preprocess import face_inputs


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


class EvalTransform:
    """Deterministic transform for validation, test and inference: scale to 0..1, resize, normalize.

    A torch face of shape ``(1, H, W)`` (or a batch ``(N, 1, H, W)``) goes through
    :func:`fer_utils.runtime.preprocess.face_inputs`, the one preprocessing the Predictor (with or without
    torch), the ONNX export and evaluation share.
    """

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], channels: int = 3) -> None:
        self.image_size, self.mean, self.std, self.channels = image_size, tuple(mean), tuple(std), channels

    def __call__(self, face: torch.Tensor) -> torch.Tensor:
        array = face.numpy()
        batch = array.reshape(-1, *array.shape[-2:])
        out = face_inputs(batch, self.image_size, self.mean, self.std, self.channels)
        return torch.from_numpy(out if face.ndim == 4 else out[0])

    def __repr__(self) -> str:
        return (
            f"EvalTransform(image_size={self.image_size}, mean={self.mean}, std={self.std}, channels={self.channels})"
        )


def eval_transform(
    image_size: int, mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5), channels: int = 3
) -> EvalTransform:
    """The deterministic transform (see :class:`EvalTransform`)."""
    return EvalTransform(image_size, mean, std, channels)


def batch_mixing(
    num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
    """Mixup and/or CutMix for whole training batches (torchvision's ``v2.MixUp``/``v2.CutMix``).

    Mixup blends each image with another of the batch; CutMix pastes a box of another; the
    targets become the same mix of the two labels (one-hot or soft), with the share drawn from
    Beta(alpha, alpha). With both alphas set, each batch gets one of the two at random (as timm
    does). Returns None when both are 0: no mixing.
    """
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise FERConfigError(f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha} and {cutmix_alpha}")
    mixers = [
        mixer(alpha=alpha, num_classes=num_classes)
        for mixer, alpha in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha))
        if alpha > 0
    ]
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)
