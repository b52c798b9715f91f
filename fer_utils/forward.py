"""Running a model over in-memory faces in batches: eval mode, no gradients, optional TTA."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from fer_utils.data.faceset import FaceSet, TorchFaceDataset
from fer_utils.devices import model_device
from fer_utils.transforms import eval_transform, tta_views


def faces_loader(
    faces: FaceSet,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
) -> DataLoader:
    """A deterministic DataLoader of eval-transformed faces (and their labels)."""
    dataset = TorchFaceDataset(faces, eval_transform(image_size, mean, std), use_soft_labels=False)
    pin = torch.cuda.is_available()  # page-locked batches copy to a GPU asynchronously
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, pin_memory=pin)


def tta_probabilities(logits: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, tta: str) -> torch.Tensor:
    """Softmax probabilities (B, C) of a transformed ``batch`` (B, C, H, W), averaged over its TTA
    views; ``logits`` runs the model (PyTorch or ONNX Runtime) on all views at once."""
    views = tta_views(batch, tta) if tta != "none" else batch.unsqueeze(0)
    v, b = views.shape[:2]
    return logits(views.flatten(0, 1)).float().softmax(dim=1).view(v, b, -1).mean(dim=0)


def _channels_last(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: model(x.contiguous(memory_format=torch.channels_last))


@torch.inference_mode()
def predict_batches(model: nn.Module, loader: DataLoader, tta: str = "none", channels_last: bool = True) -> np.ndarray:
    """Softmax probabilities (N, C) for every batch of ``loader``, averaged over TTA views."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    outputs = []
    try:
        for images, _ in loader:
            images = images.to(device, non_blocking=True)
            outputs.append(tta_probabilities(_channels_last(model) if channels_last else model, images, tta).cpu())
    finally:
        model.train(was_training)
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outputs).numpy()
