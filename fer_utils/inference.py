"""Inference: a Predictor that finds faces in photos and returns every class's probability.

``Predictor.from_checkpoint()`` loads the shipped model (or any checkpoint). ``predict_image``
accepts a path, bytes, PIL image or numpy array of any size and mode, honours EXIF rotation,
detects faces (unless the image already is a face crop), crops each the way FER2013 faces were
cropped, and classifies it. A photo without a face gives an empty result with a reason.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fer_utils.checkpoints import Checkpoint, CheckpointSource, load_model
from fer_utils.data.faceset import Skipped
from fer_utils.data.images import (
    DEFAULT_FACE_SIZE,
    ImageSource,
    files_under,
    is_image_file,
    load_gray,
    square_resize,
)
from fer_utils.detection import DETECTORS, Detector, FaceBox, create_detector, crop_face
from fer_utils.devices import model_device, resolve_device
from fer_utils.errors import FERCheckpointError, FERConfigError, FERDataError, FERError
from fer_utils.forward import tta_probabilities
from fer_utils.transforms import TTA_MODES, eval_transform

RUNTIMES = ("auto", "onnx", "torch")
"""How the Predictor runs the classifier: ``onnx`` (ONNX Runtime, CPU; exported once and cached),
``torch``, or ``auto`` (ONNX Runtime on the CPU, PyTorch on a GPU). Grad-CAM always uses PyTorch."""

REPO_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
SHIPPED_MODEL = "fer2013_ensemble.safetensors"
"""The default model: an ensemble of three EfficientNet-Lite0 (models/README.md); its member 0 ships
alone as fer2013_efficientnet-lite0.safetensors."""

SHIPPED_SINGLE_MODEL = "fer2013_efficientnet-lite0.safetensors"
"""The ensemble's member 0 on its own: a third of the cost; what the in-browser demo runs (`make web`)."""

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


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _source_name(source: ImageSource) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>"


@dataclass
class FaceRegions:
    """Where to classify in one image: the detected ``boxes``, or the whole image when it already is
    a face crop (``whole_image``); ``reason`` says why there is nothing to classify."""

    boxes: list[FaceBox]
    whole_image: bool = False
    reason: str | None = None


class Predictor:
    """A trained model ready for inference: ``Predictor.from_checkpoint().predict_image("photo.jpg")``.

    ``detector``: ``yunet`` (default), ``haar`` or any object with ``detect(gray)``. ``align``:
    rotate each face so its eyes are level before cropping (needs landmarks, i.e. YuNet).
    ``runtime``: see ``RUNTIMES``; a Predictor built from a live model defaults to ``torch``, since
    the model may still change, and one built by ``from_checkpoint`` to ``auto``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        checkpoint: Checkpoint,
        tta: str = "none",
        detector: Detector | str | None = None,
        device: str | torch.device | None = None,
        runtime: str = "torch",
        align: bool = True,
        threads: int = 0,
    ) -> None:
        if tta not in TTA_MODES:
            raise FERDataError(f"TTA mode must be one of {', '.join(TTA_MODES)}, got {tta!r}")
        if runtime not in RUNTIMES:
            raise FERConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if isinstance(detector, str) and detector not in DETECTORS:
            raise FERConfigError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
        self.device = model_device(model) if device is None else resolve_device(device)
        self.model = model.to(self.device).eval()
        self.checkpoint = checkpoint
        self.tta = tta
        self.align = align
        self.classes = checkpoint.classes
        self.transform = eval_transform(checkpoint.image_size, checkpoint.meta["mean"], checkpoint.meta["std"])
        self._detector = detector  # a name (one detector per thread, made on first use) or the caller's object
        self._per_thread = threading.local()
        self._lock = threading.Lock()  # guards the lazy ONNX session and a caller's own detector
        if runtime == "auto":
            runtime = "onnx" if self.device.type == "cpu" and _has_onnxruntime() else "torch"
        if runtime == "onnx" and self.device.type != "cpu":
            raise FERConfigError(f"runtime 'onnx' runs on the CPU; use runtime 'torch' on {self.device}")
        self.runtime = runtime
        self.threads = threads
        self._onnx = None

    @classmethod
    def from_checkpoint(
        cls,
        path: CheckpointSource | None = None,
        tta: str = "none",
        device: str | torch.device = "auto",
        detector: Detector | str | None = None,
        runtime: str = "auto",
        align: bool = True,
        threads: int = 0,
    ) -> Predictor:
        """Load a checkpoint (default: the shipped FER2013 model, see :func:`default_checkpoint`)
        onto ``device`` (auto: CUDA, then MPS, then CPU); a list of checkpoints is averaged as an ensemble."""
        model, checkpoint = load_model(path if path is not None else default_checkpoint())
        return cls(model, checkpoint, tta, detector, device, runtime, align, threads)

    @property
    def detector(self) -> Detector:
        """This thread's face detector, created on first use (loading it costs time a face-crop user
        never needs). OpenCV's detectors keep per-call state (``setInputSize`` then ``detect``), so
        threads sharing one get each other's boxes: a web server's workers each get their own."""
        if self._detector is not None and not isinstance(self._detector, str):
            return self._detector
        detector = getattr(self._per_thread, "detector", None)
        if detector is None:
            detector = self._per_thread.detector = create_detector(self._detector or DETECTORS[0])
        return detector

    def _detect(self, gray: np.ndarray) -> list[FaceBox]:
        if self._detector is not None and not isinstance(self._detector, str):
            with self._lock:  # a caller's own detector object may not be thread-safe either
                return self.detector.detect(gray)
        return self.detector.detect(gray)

    def _refine(self, gray: np.ndarray, box: FaceBox) -> FaceBox:
        refine = getattr(self.detector, "refine_landmarks", None)
        if refine is None:
            return box
        if self._detector is not None and not isinstance(self._detector, str):
            with self._lock:
                return refine(gray, box)
        return refine(gray, box)

    def _logits(self) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.runtime == "torch":
            return self.model
        with self._lock:  # one export and one session, however many threads ask at once
            if self._onnx is None:
                from fer_utils.runtime import OnnxClassifier, cached_onnx

                self._onnx = OnnxClassifier(cached_onnx(self.model, self.checkpoint), self.threads)
        return self._onnx

    def input_tensor(self, faces: Sequence[np.ndarray]) -> torch.Tensor:
        """The normalized model input (N, 3, S, S) for 48x48-style uint8 face crops."""
        arrays = [np.ascontiguousarray(f, dtype=np.uint8) for f in faces]
        if len({a.shape for a in arrays}) == 1:  # one call on the (N, 1, H, W) batch: same numbers, 1/6 the time
            return self.transform(torch.from_numpy(np.stack(arrays))[:, None])
        return torch.stack([self.transform(torch.from_numpy(a)[None]) for a in arrays])

    @torch.inference_mode()
    def predict_arrays(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (N, C) for uint8 face crops (any size; resized like the training data)."""
        if not len(faces):
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        batch = self.input_tensor([square_resize(f, DEFAULT_FACE_SIZE) for f in faces]).to(self.device)
        return tta_probabilities(self._logits(), batch, self.tta).cpu().numpy()

    def gradcam(
        self,
        faces: Sequence[np.ndarray],
        target_classes: Sequence[int] | None = None,
        method: str = "layercam",
        layer: str = "fine",
    ) -> np.ndarray:
        """Class-activation maps (N, S, S) for face crops, for ``target_classes`` (default: the
        predicted ones); ``method`` and ``layer`` as in :func:`fer_utils.explain.gradcam_maps`."""
        from fer_utils.explain import gradcam_maps

        return gradcam_maps(
            self.model,
            self.input_tensor([square_resize(f, DEFAULT_FACE_SIZE) for f in faces]).to(self.device),
            target_classes,
            method=method,
            layer=layer,
        )

    def find_faces(self, gray: np.ndarray, detect: bool | None = None) -> FaceRegions:
        """What to classify: the detected faces, or the whole image for face crops (``detect``:
        None = auto, skipping detection for images of at most 96 px; True; False)."""
        if detect is False or (detect is None and max(gray.shape) <= CROP_MAX_SIDE):
            return FaceRegions([], whole_image=True)
        if min(gray.shape) < 24:
            return FaceRegions(
                [],
                reason=f"image too small to search for faces ({gray.shape[1]}x{gray.shape[0]}); "
                "use detect=False / --no-detect for face crops",
            )
        boxes = self._detect(gray)
        if self.align:  # the eye line YuNet gives first lags behind a tilted head: measure it again
            boxes = [self._refine(gray, box) for box in boxes]
        return FaceRegions(boxes, reason=None if boxes else "no face found")

    def predict_image(self, source: ImageSource, detect: bool | None = None, keep_image: bool = False) -> ImageResult:
        """Every face in one image. ``detect``: None = auto (skip for images <= 96 px), True, False.

        Raises FERDataError for unreadable input; a photo without faces returns no faces and a reason.
        Boxes are in the photo's own pixels and inside it, even when a huge photo was analysed reduced.
        """
        gray, (width, height) = load_gray(source)
        scale = width / gray.shape[1]
        regions = self.find_faces(gray, detect)
        boxes: list[FaceBox | None]
        if regions.whole_image:
            boxes, crops = [None], [square_resize(gray, DEFAULT_FACE_SIZE)]
        else:
            boxes = list(regions.boxes)
            crops = [crop_face(gray, box, align=self.align) for box in regions.boxes]
        faces = []
        for box, crop, probs in zip(boxes, crops, self.predict_arrays(crops), strict=True):
            top = int(probs.argmax())
            faces.append(
                FaceResult(
                    None if box is None else box.in_photo(scale, width, height),
                    self.classes[top],
                    float(probs[top]),
                    {c: float(p) for c, p in zip(self.classes, probs, strict=True)},
                    crop,
                )
            )
        return ImageResult(
            _source_name(source),
            width,
            height,
            faces,
            not regions.whole_image,
            regions.reason,
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
            except FERError:
                raise  # the model or its runtime failed, not this photo: every later photo would fail too
            except Exception as err:  # noqa: BLE001 - one odd photo never sinks the batch
                skipped.append(Skipped(_source_name(source), f"cannot process ({type(err).__name__}: {err})"))
        return results, skipped
