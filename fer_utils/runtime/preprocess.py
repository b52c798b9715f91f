"""What the model sees: uint8 gray faces turned into its normalized input, and the test-time
augmentation views of those faces. NumPy and OpenCV only, so the same function serves the
Predictor with or without torch installed, evaluation (and ``fer_utils.train.transforms.eval_transform``)
and the ONNX export's calibration inputs.

The resize runs on floats with OpenCV's bilinear filter, which samples at pixel centres exactly
as PyTorch's ``interpolate(mode="bilinear", align_corners=False)`` and the browser demo do: for
the enlargements the models need (48 px faces to 64-96 px) the three agree to float precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from fer_utils.core.errors import FERConfigError

CROP_FRACTION = 0.9
"""Side of each of the five TTA crops, as a share of the input side."""

TTA_VIEWS = {"none": 1, "flip": 2, "crops": 10}
"""Test-time augmentation, and how many model inputs each mode makes of one face: the image alone;
plus its mirror; plus five 90 % crops of each (ten views)."""

TTA_MODES = tuple(TTA_VIEWS)

MAX_BATCH_INPUTS = 32
"""Model inputs (faces times TTA views) run at once, in PyTorch and ONNX Runtime alike: a bound on
the activations held, so memory does not grow with the number of faces or the TTA mode (ten crops
of 256 faces would be 2,560 inputs, each held by every member of an ensemble; ONNX Runtime keeps
its largest batch's activations in its arena). On a CPU larger batches gain little per face
(notebook 08 times batch 1 against 32)."""


def faces_per_batch(tta: str, max_inputs: int = MAX_BATCH_INPUTS) -> int:
    """How many faces to run at once so that their TTA views stay within ``max_inputs``."""
    return max(1, max_inputs // TTA_VIEWS[checked_tta(tta)])


def checked_tta(mode: str) -> str:
    """``mode`` if it is one of ``TTA_MODES``, else a clear error naming them."""
    if mode not in TTA_VIEWS:
        raise FERConfigError(f"TTA mode must be one of {', '.join(TTA_MODES)}, got {mode!r}")
    return mode


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) float32 to (N, size, size) with a bilinear filter; when reducing, Pillow's
    antialiased bilinear filter, which PyTorch's ``antialias=True`` resize reproduces."""
    if images.shape[1:] == (size, size):
        return images
    if size >= max(images.shape[1:]):
        return np.stack([cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR) for image in images])
    return np.stack(
        [np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)) for image in images]
    )


def face_inputs(
    faces: np.ndarray | Sequence[np.ndarray],
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    channels: int = 3,
) -> np.ndarray:
    """The model input (N, channels, S, S) float32 for uint8 gray faces (N, H, W) of one size:
    scaled to 0..1, resized to ``image_size``, repeated to ``channels``, normalized."""
    batch = np.asarray(faces)
    if batch.ndim != 3:
        raise FERConfigError(f"faces must be an (N, H, W) stack of gray images, got shape {batch.shape}")
    scaled = _resize(batch.astype(np.float32) / 255.0, image_size)
    mean_ = np.asarray(list(mean)[:channels], dtype=np.float32).reshape(1, -1, 1, 1)
    std_ = np.asarray(list(std)[:channels], dtype=np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((scaled[:, None] - mean_) / std_, dtype=np.float32)


def crop_boxes(side: int) -> list[tuple[int, int, int]]:
    """The five TTA crops of a square of ``side`` pixels as (top, left, crop side): the four
    corners and the centre, each CROP_FRACTION of the side."""
    crop = max(1, round(side * CROP_FRACTION))
    far = side - crop
    middle = round(far / 2.0)  # as torchvision's center_crop rounds
    return [(0, 0, crop), (0, far, crop), (far, 0, crop), (far, far, crop), (middle, middle, crop)]


def tta_inputs(
    faces: np.ndarray,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    mode: str = "none",
    channels: int = 3,
    keep_crop_size: bool = False,
) -> np.ndarray:
    """Model inputs ``(V, N, channels, S, S)`` for the test-time augmentation views of uint8 gray
    faces ``(N, H, H)``.

    ``none``: the face. ``flip``: the face and its mirror. ``crops``: five crops of 90 % of the
    side (corners and centre) of the face and of its mirror, the ten-crop scheme FER2013 papers
    use. Each view is cut from the face itself and resized once, straight to ``image_size``, as
    training's random crops are: cropping an already enlarged input and resizing it back would
    blur it twice. ``keep_crop_size`` leaves the crops at their own size, for a model that resizes
    its input itself (an ensemble of members of several input sizes enlarges each crop once, to
    each member's size).
    """
    checked_tta(mode)
    batch = np.asarray(faces)
    if batch.ndim != 3 or batch.shape[1] != batch.shape[2]:
        raise FERConfigError(f"faces must be an (N, H, H) stack of square gray images, got shape {batch.shape}")
    faces_and_mirrors = [batch] if mode == "none" else [batch, batch[:, :, ::-1]]
    if mode != "crops":
        return np.stack([face_inputs(f, image_size, mean, std, channels) for f in faces_and_mirrors])
    return np.stack(
        [
            face_inputs(
                f[:, top : top + crop, left : left + crop], crop if keep_crop_size else image_size, mean, std, channels
            )
            for f in faces_and_mirrors
            for top, left, crop in crop_boxes(batch.shape[1])
        ]
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) logits, stable for large values."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
