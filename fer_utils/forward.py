"""Running a model over in-memory faces in batches: eval mode, no gradients, optional TTA."""

from __future__ import annotations

from collections.abc import Sequence

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
    channels: int = 3,
    num_workers: int = 0,
) -> DataLoader:
    """A deterministic DataLoader of eval-transformed faces (and their labels)."""
    dataset = TorchFaceDataset(faces, eval_transform(image_size, mean, std, channels), use_soft_labels=False)
    pin = torch.cuda.is_available()  # page-locked batches copy to a GPU asynchronously
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pin)


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
            views = tta_views(images, tta) if tta != "none" else images.unsqueeze(0)
            v, b = views.shape[:2]
            flat = views.flatten(0, 1)
            if channels_last:
                flat = flat.contiguous(memory_format=torch.channels_last)
            probs = model(flat).float().softmax(dim=1).view(v, b, -1).mean(dim=0)
            outputs.append(probs.cpu())
    finally:
        model.train(was_training)
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outputs).numpy()
