"""Inference: a Predictor that finds faces in photos and returns every class's probability.

``Predictor.from_checkpoint()`` loads the shipped model (or any checkpoint). ``predict_image``
accepts a path, bytes, PIL image or numpy array of any size and mode, honours EXIF rotation,
detects faces (unless the image already is a face crop), crops each the way FER2013 faces were
cropped, and classifies it. A photo without a face gives an empty result with a reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fer_utils.checkpoints import Checkpoint, CheckpointSource, load_model
from fer_utils.data.faceset import Skipped
from fer_utils.data.images import (
    DEFAULT_FACE_SIZE,
    files_under,
    is_image_file,
    open_image,
    square_resize,
    to_grayscale_array,
)
from fer_utils.detection import FaceBox, FaceDetector, crop_face
from fer_utils.devices import model_device, resolve_device
from fer_utils.errors import FERCheckpointError, FERDataError
from fer_utils.transforms import TTA_MODES, eval_transform, tta_views

ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray

REPO_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
SHIPPED_MODEL = "fer2013_ensemble.safetensors"
"""The default model: an ensemble of three EfficientNet-Lite0 (models/README.md); its member 0 ships
alone as fer2013_efficientnet-lite0.safetensors."""

CROP_MAX_SIDE = 96
"""Images this small (FER2013 is 48 px) are taken as face crops: detection is skipped in auto mode."""


def default_checkpoint() -> Path:
    """``$FER_CHECKPOINT`` if set, else the FER2013 model shipped in the repository's models/."""
    if env := os.environ.get("FER_CHECKPOINT"):
        return Path(env)
    shipped = REPO_MODELS_DIR / SHIPPED_MODEL
    if not shipped.is_file():
        raise FERCheckpointError(
            f"no checkpoint given and {shipped} is missing; pass a checkpoint (CLI: --checkpoint FILE) "
            "(e.g. runs/demo/best.safetensors from `fer train`) or set FER_CHECKPOINT"
        )
    return shipped


@dataclass
class FaceResult:
    """One face: where it is, what the model says, and every class's probability."""

    box: FaceBox | None  # None when the whole image was taken as the face
    label: str
    score: float
    probabilities: dict[str, float]
    face: np.ndarray = field(repr=False)  # the 48x48 crop the model saw

    def to_dict(self) -> dict:
        return {
            "box": None if self.box is None else self.box.to_dict(),
            "label": self.label,
            "score": self.score,
            "probabilities": self.probabilities,
        }


@dataclass
class ImageResult:
    """All faces found in one image; ``reason`` says why there are none."""

    source: str
    width: int
    height: int
    faces: list[FaceResult]
    detected: bool  # False when the image was taken as one face crop
    reason: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)  # grayscale image, for drawing

    def rows(self) -> list[dict]:
        """One flat record per face (file, face index, box, label, probabilities) for CSV/JSON."""
        rows = []
        for i, face in enumerate(self.faces):
            box = face.box or FaceBox(0, 0, self.width, self.height, float("nan"))  # whole image = the face
            rows.append(
                {
                    "file": self.source,
                    "face": i,
                    "box_x": box.x,
                    "box_y": box.y,
                    "box_w": box.w,
                    "box_h": box.h,
                    "detection_score": None if face.box is None else box.score,
                    "label": face.label,
                    "score": round(face.score, 5),
                    **{f"p_{c}": round(p, 5) for c, p in face.probabilities.items()},
                }
            )
        return rows


def expand_image_paths(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Skipped]]:
    """Files given directly, plus the images inside any folders (recursively, sorted)."""
    files: list[Path] = []
    skipped: list[Skipped] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found, broken = files_under(path)
            files += [p for p in found if is_image_file(p)]
            skipped += [s for s in broken if is_image_file(s.source)]
        elif path.exists():
            files.append(path)
        else:
            skipped.append(Skipped(str(path), "no such file or folder"))
    return files, skipped


def _source_name(source: ImageSource) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>"


def to_gray(source: ImageSource) -> np.ndarray:
    """Any input as a uint8 grayscale array: files and bytes are decoded with EXIF rotation;
    numpy arrays may be gray (H, W), RGB or RGBA (H, W, 3|4), uint8 or float in 0..1."""
    if isinstance(source, np.ndarray):
        array = source
        if array.dtype != np.uint8:
            array = np.clip(array * (255 if array.max() <= 1 else 1), 0, 255).astype(np.uint8)
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.ndim == 2:
            return np.ascontiguousarray(array)
        if array.ndim == 3 and array.shape[2] in (3, 4):
            return to_grayscale_array(Image.fromarray(array))
        raise FERDataError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    return to_grayscale_array(open_image(source))


class Predictor:
    """A trained model ready for inference: ``Predictor.from_checkpoint().predict_image("photo.jpg")``."""

    def __init__(
        self,
        model: torch.nn.Module,
        checkpoint: Checkpoint,
        tta: str = "none",
        detector: FaceDetector | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if tta not in TTA_MODES:
            raise FERDataError(f"TTA mode must be one of {', '.join(TTA_MODES)}, got {tta!r}")
        self.device = model_device(model) if device is None else resolve_device(device)
        self.model = model.to(self.device).eval()
        self.checkpoint = checkpoint
        self.tta = tta
        self.classes = checkpoint.classes
        self.transform = eval_transform(checkpoint.image_size, checkpoint.meta["mean"], checkpoint.meta["std"])
        self._detector = detector

    @classmethod
    def from_checkpoint(
        cls, path: CheckpointSource | None = None, tta: str = "none", device: str | torch.device = "auto"
    ) -> Predictor:
        """Load a checkpoint (default: the shipped FER2013 model, see :func:`default_checkpoint`)
        onto ``device`` (auto: CUDA, then MPS, then CPU); a list of checkpoints is averaged as an ensemble."""
        model, checkpoint = load_model(path if path is not None else default_checkpoint())
        return cls(model, checkpoint, tta, device=device)

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector()
        return self._detector

    def input_tensor(self, faces: Sequence[np.ndarray]) -> torch.Tensor:
        """The normalized model input (N, 3, S, S) for 48x48-style uint8 face crops."""
        return torch.stack([self.transform(torch.from_numpy(np.ascontiguousarray(f)).unsqueeze(0)) for f in faces])

    @torch.inference_mode()
    def predict_arrays(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (N, C) for uint8 face crops (any size; resized like the training data)."""
        if not len(faces):
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        batch = self.input_tensor([square_resize(f, DEFAULT_FACE_SIZE) for f in faces])
        batch = batch.to(self.device)
        views = tta_views(batch, self.tta) if self.tta != "none" else batch.unsqueeze(0)
        v, b = views.shape[:2]
        return self.model(views.flatten(0, 1)).float().softmax(dim=1).view(v, b, -1).mean(dim=0).cpu().numpy()

    def gradcam(self, faces: Sequence[np.ndarray], target_classes: Sequence[int] | None = None) -> np.ndarray:
        """Grad-CAM maps (N, S, S) for face crops, for ``target_classes`` (default: the predicted ones)."""
        from fer_utils.explain import gradcam_maps

        return gradcam_maps(
            self.model,
            self.input_tensor([square_resize(f, DEFAULT_FACE_SIZE) for f in faces]).to(self.device),
            target_classes,
        )

    def find_faces(self, gray: np.ndarray, detect: bool | None = None) -> tuple[list[FaceBox | None], str | None]:
        """Boxes to classify: detected faces, or ``[None]`` (whole image) for crops; plus a reason if empty."""
        if detect is False or (detect is None and max(gray.shape) <= CROP_MAX_SIDE):
            return [None], None
        if min(gray.shape) < 24:
            return (
                [],
                f"image too small to search for faces ({gray.shape[1]}x{gray.shape[0]}); use detect=False / --no-detect for face crops",
            )
        boxes = self.detector.detect(gray)
        return boxes, None if boxes else "no face found"

    def predict_image(self, source: ImageSource, detect: bool | None = None, keep_image: bool = False) -> ImageResult:
        """Every face in one image. ``detect``: None = auto (skip for images <= 96 px), True, False.

        Raises FERDataError for unreadable input; a photo without faces returns no faces and a reason.
        """
        gray = to_gray(source)
        boxes, reason = self.find_faces(gray, detect)
        crops = [square_resize(gray, DEFAULT_FACE_SIZE) if box is None else crop_face(gray, box) for box in boxes]
        faces = []
        for box, crop, probs in zip(boxes, crops, self.predict_arrays(crops), strict=True):
            top = int(probs.argmax())
            faces.append(
                FaceResult(
                    box,
                    self.classes[top],
                    float(probs[top]),
                    {c: float(p) for c, p in zip(self.classes, probs, strict=True)},
                    crop,
                )
            )
        return ImageResult(
            _source_name(source),
            gray.shape[1],
            gray.shape[0],
            faces,
            boxes != [None],
            reason,
            gray if keep_image else None,
        )

    def predict_images(
        self, sources: Sequence[ImageSource], detect: bool | None = None, progress: bool = False
    ) -> tuple[list[ImageResult], list[Skipped]]:
        """Predict many images; unreadable ones are reported as skipped, never raised."""
        from tqdm.auto import tqdm

        results: list[ImageResult] = []
        skipped: list[Skipped] = []
        for source in tqdm(sources, desc="predicting", unit="img", disable=not progress):
            try:
                results.append(self.predict_image(source, detect))
            except FERDataError as err:
                skipped.append(Skipped(_source_name(source), str(err).split(": ", 1)[-1]))
            except Exception as err:  # noqa: BLE001 - one odd photo never sinks the batch
                skipped.append(Skipped(_source_name(source), f"cannot process ({type(err).__name__}: {err})"))
        return results, skipped
