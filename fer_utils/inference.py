"""Inference on face images: a Predictor that loads a checkpoint and returns every class's probability.

This module treats each input as one face crop (like the 48x48 dataset images). Photos with
several faces need a face detector first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fer_utils.checkpoints import Checkpoint, model_from_checkpoint
from fer_utils.data.faceset import Skipped
from fer_utils.data.images import DEFAULT_FACE_SIZE, is_image_file, read_face, square_resize
from fer_utils.errors import FERCheckpointError, FERDataError
from fer_utils.transforms import TTA_MODES, eval_transform, tta_views

ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray

REPO_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def default_checkpoint() -> Path:
    """``$FER_CHECKPOINT`` if set, else the first ``.safetensors`` model shipped in the repository's models/."""
    if env := os.environ.get("FER_CHECKPOINT"):
        return Path(env)
    shipped = sorted(REPO_MODELS_DIR.glob("*.safetensors")) if REPO_MODELS_DIR.is_dir() else []
    if not shipped:
        raise FERCheckpointError(
            "no checkpoint given and none shipped in models/; pass --checkpoint FILE "
            "(e.g. runs/demo/best.safetensors from `fer train`) or set FER_CHECKPOINT"
        )
    return shipped[0]


@dataclass
class Prediction:
    """One face's result: the top label, its probability, and every class's probability."""

    source: str
    label: str
    score: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict:
        return {"file": self.source, "label": self.label, "score": self.score, "probabilities": self.probabilities}


def expand_image_paths(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Skipped]]:
    """Files given directly, plus the images inside any folders (recursively, sorted)."""
    files: list[Path] = []
    skipped: list[Skipped] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
        elif path.exists():
            files.append(path)
        else:
            skipped.append(Skipped(str(path), "no such file or folder"))
    return files, skipped


class Predictor:
    """A trained model ready for inference: ``Predictor.from_checkpoint(path).predict([...])``."""

    def __init__(self, model: torch.nn.Module, checkpoint: Checkpoint, tta: str = "none") -> None:
        if tta not in TTA_MODES:
            raise FERDataError(f"TTA mode must be one of {', '.join(TTA_MODES)}, got {tta!r}")
        self.model = model.eval()
        self.checkpoint = checkpoint
        self.tta = tta
        self.classes = checkpoint.classes
        self.transform = eval_transform(checkpoint.image_size, checkpoint.meta["mean"], checkpoint.meta["std"])

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike | None = None, tta: str = "none") -> Predictor:
        """Load a checkpoint (default: :func:`default_checkpoint`)."""
        model, checkpoint = model_from_checkpoint(path if path is not None else default_checkpoint())
        return cls(model, checkpoint, tta)

    def face_array(self, source: ImageSource) -> np.ndarray:
        """Any input (path, bytes, PIL image, gray or RGB array) as a 48x48-style uint8 face."""
        if isinstance(source, np.ndarray):
            array = source if source.ndim == 2 else np.asarray(Image.fromarray(source.astype(np.uint8)).convert("L"))
            return square_resize(array.astype(np.uint8), DEFAULT_FACE_SIZE)
        return read_face(source)

    @torch.inference_mode()
    def predict_arrays(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (N, C) for uint8 face arrays."""
        if not len(faces):
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        batch = torch.stack([self.transform(torch.from_numpy(np.ascontiguousarray(f)).unsqueeze(0)) for f in faces])
        views = tta_views(batch, self.tta) if self.tta != "none" else batch.unsqueeze(0)
        v, b = views.shape[:2]
        return self.model(views.flatten(0, 1)).softmax(dim=1).view(v, b, -1).mean(dim=0).numpy()

    def predict(self, sources: Sequence[ImageSource], batch_size: int = 64) -> tuple[list[Prediction], list[Skipped]]:
        """Predict every source; unreadable ones are returned as skipped instead of raising."""
        predictions: list[Prediction] = []
        skipped: list[Skipped] = []
        for start in range(0, len(sources), batch_size):
            names, faces = [], []
            for source in sources[start : start + batch_size]:
                name = str(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>"
                try:
                    faces.append(self.face_array(source))
                    names.append(name)
                except FERDataError as err:
                    skipped.append(Skipped(name, str(err).split(": ", 1)[-1]))
            for name, probs in zip(names, self.predict_arrays(faces), strict=False):
                top = int(probs.argmax())
                predictions.append(
                    Prediction(
                        name,
                        self.classes[top],
                        float(probs[top]),
                        {c: float(p) for c, p in zip(self.classes, probs, strict=False)},
                    )
                )
        return predictions, skipped
