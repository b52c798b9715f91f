"""A PyTorch model's class probabilities for in-memory faces, in batches: eval mode, no gradients,
optional TTA (the same views and loop as ONNX Runtime gets, :mod:`fer_utils.runtime.description`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fer_utils.model.devices import model_device
from fer_utils.runtime.description import ModelDescription
from fer_utils.runtime.preprocess import MAX_BATCH_INPUTS


@torch.inference_mode()
def model_probabilities(
    model: nn.Module, faces: np.ndarray, description: ModelDescription, batch_size: int = MAX_BATCH_INPUTS
) -> np.ndarray:
    """Softmax probabilities (N, C) of ``model`` for uint8 gray faces (N, 48, 48), prepared and
    averaged over TTA views as ``description`` says (:meth:`ModelDescription.probabilities`, the
    same loop ONNX Runtime runs in), at most ``batch_size`` model inputs (faces times views) at a time."""
    was_training = model.training
    model.eval()
    device = model_device(model)

    def logits(inputs: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(inputs).to(device, non_blocking=True)
        return model(batch.contiguous(memory_format=torch.channels_last)).float().cpu().numpy()

    try:
        return description.probabilities(faces, logits, batch_size)
    finally:
        model.train(was_training)
