"""A PyTorch model's class probabilities for in-memory faces, in batches: eval mode, no gradients,
optional TTA (the same views as ONNX Runtime gets, :mod:`fer_utils.runtime.preprocess`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fer_utils.model.calibration import base_model
from fer_utils.model.devices import model_device
from fer_utils.model.factory import Ensemble
from fer_utils.runtime.preprocess import MAX_BATCH_INPUTS, faces_per_batch, tta_inputs


def resizes_input(model: nn.Module) -> bool:
    """True for a model that resizes its input itself (an ensemble of members of several input
    sizes): its TTA crops are fed at their own size, so each member enlarges them only once."""
    inner = base_model(model)
    return isinstance(inner, Ensemble) and inner.sizes is not None


@torch.inference_mode()
def model_probabilities(
    model: nn.Module,
    faces: np.ndarray,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    tta: str = "none",
    batch_size: int = MAX_BATCH_INPUTS,
) -> np.ndarray:
    """Softmax probabilities (N, C) of ``model`` for uint8 gray faces (N, H, H), averaged over the
    TTA views (:func:`fer_utils.runtime.preprocess.tta_inputs`), at most ``batch_size`` model inputs (faces
    times views) at a time."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    keep_crop_size = resizes_input(model)
    outputs = []
    step = faces_per_batch(tta, batch_size)
    try:
        for start in range(0, len(faces), step):
            views = tta_inputs(faces[start : start + step], image_size, mean, std, tta, keep_crop_size=keep_crop_size)
            v, b = views.shape[:2]
            inputs = torch.from_numpy(views.reshape(v * b, *views.shape[2:])).to(device, non_blocking=True)
            logits = model(inputs.contiguous(memory_format=torch.channels_last))
            outputs.append(logits.float().softmax(dim=1).view(v, b, -1).mean(dim=0).cpu())
    finally:
        model.train(was_training)
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outputs).numpy()
