"""Inference: a Predictor that finds faces in photos and returns every class's probability.

``Predictor.from_checkpoint()`` loads the shipped model (or any checkpoint, or an exported
``.onnx`` file). ``predict_image`` accepts a path, bytes, PIL image or numpy array of any size and
mode, honours EXIF rotation, detects faces (unless the image already is a face crop), crops each
the way FER2013 faces were cropped, and classifies it. A photo without a face gives an empty
result with a reason.

On the CPU the classifier runs in ONNX Runtime from an export kept in the user cache, found by
the checkpoint file's hash: a process that only predicts never imports torch. PyTorch is
imported only to export (once per model), for Grad-CAM, or for ``runtime="torch"``.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fer_utils.core.errors import FERCheckpointError, FERConfigError, FERDataError, FERError
from fer_utils.core.locations import REPO_MODELS_DIR
from fer_utils.core.metadata import CheckpointSource, checkpoint_files, read_checkpoint_meta, resizes_input
from fer_utils.data.images import (
    DEFAULT_FACE_SIZE,
    NOT_REACHED,
    ImageSource,
    Skipped,
    files_under,
    is_image_file,
    load_gray,
    square_resize,
)
from fer_utils.faces.detection import (
    CROP_MAX_SIDE,
    DETECTORS,
    VIDEO_MAX_SIDE,
    Detector,
    FaceBox,
    create_detector,
    crop_face,
)
from fer_utils.faces.results import FaceResult, ImageResult
from fer_utils.predict.video import (
    DEFAULT_SMOOTHING,
    FrameAnalyzer,
    FrameSelection,
    VideoResult,
    analyze_video,
    open_video,
)
from fer_utils.runtime.onnx import OnnxClassifier, cache_entry, checkpoint_key, verified
from fer_utils.runtime.preprocess import TTA_MODES, face_inputs, faces_per_batch, softmax, tta_inputs

if TYPE_CHECKING:
    import torch

    from fer_utils.model.checkpoints import Checkpoint

RUNTIMES = ("auto", "onnx", "torch")
"""How the Predictor runs the classifier: ``onnx`` (ONNX Runtime, CPU; exported once and cached),
``torch``, or ``auto``: ONNX Runtime when it is installed and no GPU is asked for (one face at a
time it is faster than PyTorch on any device, and needs no torch), else PyTorch. Grad-CAM always
uses PyTorch."""

SHIPPED_MODEL = "fer2013_ensemble.safetensors"
"""The FER2013 model: an ensemble of EfficientNet-Lite0 members (models/README.md), the default of the
commands that score or export a model on FER2013 (``fer evaluate``, ``calibrate``, ``teacher``,
``export``); the single model fer2013_efficientnet-lite0.safetensors is the fast choice."""

SHIPPED_PHOTO_MODEL = "ferplus_ensemble.safetensors"
"""The default for photos (``Predictor.from_checkpoint()``, ``fer predict``, ``fer serve``,
``fer webcam``): trained on FER+'s labels, the majority of ten people per face. Measured on the
3,175 PublicTest faces' FER+ majority labels it agrees with people on 88.1 % of faces (macro-F1
0.810), the FER2013 model on 71.9 % (0.642): FER2013's single labeller disagrees with the ten on
about a third of the faces, and a photo's expression is what people see in it (README, Results)."""

SHIPPED_SINGLE_MODEL = "fer2013_efficientnet-lite0.safetensors"
"""One Lite0 at 64 px: the smallest and cheapest FER2013 model."""

SHIPPED_WEB_MODEL = SHIPPED_PHOTO_MODEL
"""What the in-browser demo runs (``fer export --format web``, ``make web``): the photo model, so a
photo gets the same answer in the browser as from ``fer predict``. Measured in headless Chromium
(``benchmarks/bench_web.py``, 1 wasm thread): 21 ms per face after the first (59 ms), against
10 ms (43) for the 64 px single FER2013 model, for a 27.5 MB download against 13.7 MB; on the
FER+ majority labels of the 3,175 PublicTest faces 0.881 against 0.681 (docs/deployment.md)."""

SHIPPED_FAST_MODEL = "fer2013_fast.safetensors"
"""One Lite0 at 104 px (member 0 of the six, calibrated alone): where the six are too slow, it keeps
most of their accuracy (0.7091 on PublicTest against 0.7230) at a fraction of their cost
(models/README.md)."""

__all__ = [
    "CROP_MAX_SIDE",
    "REPO_MODELS_DIR",
    "RUNTIMES",
    "SHIPPED_FAST_MODEL",
    "SHIPPED_MODEL",
    "SHIPPED_PHOTO_MODEL",
    "SHIPPED_SINGLE_MODEL",
    "SHIPPED_WEB_MODEL",
    "FaceRegions",
    "FaceResult",
    "ImageResult",
    "Predictor",
    "default_checkpoint",
    "default_photo_checkpoint",
    "expand_image_paths",
]


def default_checkpoint(shipped_name: str = SHIPPED_MODEL) -> Path:
    """``$FER_CHECKPOINT`` if set, else the FER2013 model shipped in the repository's models/
    (``shipped_name`` names another shipped model)."""
    if env := os.environ.get("FER_CHECKPOINT"):
        return Path(env)
    shipped = REPO_MODELS_DIR / shipped_name
    if not shipped.is_file():
        raise FERCheckpointError(
            f"no checkpoint given and {shipped} is missing; pass a checkpoint (CLI: --checkpoint FILE) "
            "(e.g. runs/demo/best.safetensors from `fer train`) or set FER_CHECKPOINT"
        )
    return shipped


def default_photo_checkpoint() -> Path:
    """``$FER_CHECKPOINT`` if set, else the model shipped for photos (``SHIPPED_PHOTO_MODEL``)."""
    return default_checkpoint(SHIPPED_PHOTO_MODEL)


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
        from fer_utils.model.devices import model_device, resolve_device

        self._configure(checkpoint.classes, checkpoint.image_size, checkpoint.meta, tta, detector, runtime, align)
        self.device = model_device(model) if device is None else resolve_device(device)
        self._model: Any = model.to(self.device).eval()
        self._checkpoint: Checkpoint | None = checkpoint
        self.sources = [checkpoint.path] if checkpoint.path is not None else []
        if runtime == "auto":
            runtime = "onnx" if self.device.type == "cpu" and _has_onnxruntime() else "torch"
        if runtime == "onnx" and self.device.type != "cpu":
            raise FERConfigError(f"runtime 'onnx' runs on the CPU; use runtime 'torch' on {self.device}")
        self.runtime = runtime
        self.threads = threads
        self._onnx: OnnxClassifier | None = None
        self._cache_key: str | None = None  # set by from_checkpoint: the export is found by the files' hash

    def _configure(
        self,
        classes: Sequence[str],
        image_size: int,
        meta: dict,
        tta: str,
        detector: Detector | str | None,
        runtime: str,
        align: bool,
    ) -> None:
        if tta not in TTA_MODES:
            raise FERDataError(f"TTA mode must be one of {', '.join(TTA_MODES)}, got {tta!r}")
        if runtime not in RUNTIMES:
            raise FERConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if isinstance(detector, str) and detector not in DETECTORS:
            raise FERConfigError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
        self.classes = tuple(classes)
        self.image_size = int(image_size)
        self.mean, self.std = tuple(meta["mean"]), tuple(meta["std"])
        self.tta = tta
        self._keep_crop_size = resizes_input(meta)
        self.align = align
        self._detector = detector  # a name (one detector per thread, made on first use) or the caller's object
        self._per_thread = threading.local()
        self._lock = threading.RLock()  # guards lazy loading (which nests) and a caller's own detector

    @classmethod
    def from_onnx(
        cls,
        path: str | os.PathLike,
        tta: str = "none",
        detector: Detector | str | None = None,
        align: bool = True,
        threads: int = 0,
        sources: Sequence[Path] = (),
    ) -> Predictor:
        """A Predictor around an exported model (``fer export`` or the cache), in ONNX Runtime on
        the CPU; torch is never imported. ``sources``: the checkpoints it was exported from, which
        Grad-CAM loads on demand."""
        classifier = OnnxClassifier(path, threads)
        info = classifier.info
        self = cls.__new__(cls)
        self._configure(info.classes, info.image_size, info.to_dict(), tta, detector, "onnx", align)
        self.device, self._model, self._checkpoint = None, None, None
        self.sources = list(sources) or [Path(path)]
        self.runtime, self.threads, self._onnx = "onnx", threads, classifier
        return self

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
        """Load a checkpoint (default: the model shipped for photos, see :func:`default_photo_checkpoint`),
        an exported ``.onnx`` file, or a list of checkpoints averaged as an ensemble.

        With runtime ``auto``/``onnx`` on the CPU, the export cached for these exact files is used
        without importing torch; the first time, the model is loaded, exported, checked against
        PyTorch and cached. ``device`` (auto: CUDA, then MPS, then CPU) applies to runtime ``torch``."""
        files = checkpoint_files(path if path is not None else default_photo_checkpoint())
        if runtime not in RUNTIMES:
            raise FERConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if any(f.suffix.lower() == ".onnx" for f in files):
            if len(files) > 1 or runtime == "torch":
                raise FERConfigError(
                    f"{files[0]}: an exported ONNX model runs alone in ONNX Runtime; pass the .safetensors "
                    "checkpoints for runtime 'torch' or for an ensemble of several files"
                )
            return cls.from_onnx(files[0], tta, detector, align, threads)
        wants_gpu = str(device) not in ("auto", "cpu")
        key: str | None = None  # the files' hash, once computed: the cached export's name
        if runtime == "onnx" or (runtime == "auto" and not wants_gpu and _has_onnxruntime()):
            for f in files:
                read_checkpoint_meta(f)  # a missing, damaged or foreign file fails here, in one line
            key = checkpoint_key(files)
            if verified(entry := cache_entry(key)):
                return cls.from_onnx(entry, tta, detector, align, threads, sources=files)
        if importlib.util.find_spec("torch") is None:
            raise FERConfigError(
                f"{files[0]}: this install has no torch, so it runs exported models only; export this checkpoint "
                "where the course is installed (`fer export --checkpoint FILE --out model.onnx`) and pass the "
                ".onnx file, or install training support (pip install 'fer_utils[course,export]')"
            )
        from fer_utils.model.checkpoints import load_model

        model, checkpoint = load_model(files if len(files) > 1 else files[0])
        predictor = cls(model, checkpoint, tta, detector, device, runtime, align, threads)
        predictor.sources = files
        if predictor.runtime == "onnx":
            predictor._cache_key = key or checkpoint_key(files)
        return predictor

    @property
    def model(self) -> torch.nn.Module:
        """The PyTorch model (Grad-CAM, runtime ``torch``): loaded from the checkpoint on first use
        when this Predictor was opened from its ONNX export."""
        with self._lock:
            if self._model is None:
                if not self.sources or any(Path(s).suffix.lower() == ".onnx" for s in self.sources):
                    raise FERConfigError(
                        f"{self.name}: an exported ONNX model has no PyTorch graph for Grad-CAM; "
                        "use the .safetensors checkpoint it was exported from"
                    )
                from fer_utils.model.checkpoints import load_model
                from fer_utils.model.devices import resolve_device

                model, self._checkpoint = load_model(self.sources if len(self.sources) > 1 else self.sources[0])
                self.device = resolve_device("cpu")
                self._model = model.eval()
        return self._model

    @property
    def checkpoint(self) -> Checkpoint:
        """The loaded checkpoint behind :attr:`model` (loaded with it, on first use)."""
        if self._checkpoint is None:
            self.model  # noqa: B018 - loads model and checkpoint together
        return self._checkpoint

    @property
    def name(self) -> str:
        """How reports name the model: its file(s), or the in-memory ensemble's members."""
        if self.sources:
            return " + ".join(str(s) for s in self.sources)
        from fer_utils.model.checkpoints import checkpoint_name

        return checkpoint_name(self._checkpoint)

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

    def _logits(self, inputs: np.ndarray) -> np.ndarray:
        """The classifier's logits for a preprocessed batch, in this Predictor's runtime."""
        if self.runtime == "torch":
            import torch

            with torch.inference_mode():
                return self.model(torch.from_numpy(inputs).to(self.device)).float().cpu().numpy()
        with self._lock:  # one export and one session, however many threads ask at once
            if self._onnx is None:
                from fer_utils.model.export import cached_onnx

                model = self.model
                self._onnx = OnnxClassifier(cached_onnx(model, self.checkpoint, key=self._cache_key), self.threads)
        return self._onnx.logits(inputs)

    def inputs(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """The normalized model input (N, 3, S, S) float32 for uint8 face crops of any size
        (each first resized to 48x48 like the training faces)."""
        return face_inputs(self._faces48(faces), self.image_size, self.mean, self.std)

    @staticmethod
    def _faces48(faces: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 face crops of any size as the (N, 48, 48) stack the models were trained on."""
        return np.stack([square_resize(np.ascontiguousarray(f, dtype=np.uint8), DEFAULT_FACE_SIZE) for f in faces])

    def input_tensor(self, faces: Sequence[np.ndarray]) -> torch.Tensor:
        """:meth:`inputs` as a torch tensor on this Predictor's device (Grad-CAM, notebooks)."""
        import torch

        return torch.from_numpy(self.inputs(faces)).to(self.device or "cpu")

    def predict_arrays(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (N, C) for uint8 face crops (any size; resized like the training data),
        averaged over the test-time augmentation views."""
        if not len(faces):
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        step = faces_per_batch(self.tta)  # bounded batches: memory does not grow with the number of faces
        return np.concatenate(
            [self._probabilities(faces[start : start + step]) for start in range(0, len(faces), step)]
        )

    def _probabilities(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """:meth:`predict_arrays` for one batch."""
        views = tta_inputs(
            self._faces48(faces), self.image_size, self.mean, self.std, self.tta, keep_crop_size=self._keep_crop_size
        )
        v, b = views.shape[:2]
        probabilities = softmax(self._logits(views.reshape(v * b, *views.shape[2:])))
        return probabilities.reshape(v, b, -1).mean(axis=0).astype(np.float32)

    def gradcam(
        self,
        faces: Sequence[np.ndarray],
        target_classes: Sequence[int] | None = None,
        method: str = "layercam",
        layer: str = "fine",
    ) -> np.ndarray:
        """Class-activation maps (N, S, S) for face crops, for ``target_classes`` (default: the
        predicted ones); ``method`` and ``layer`` as in :func:`fer_utils.model.gradcam.gradcam_maps`."""
        from fer_utils.model.gradcam import gradcam_maps

        return gradcam_maps(self.model, self.input_tensor(faces), target_classes, method=method, layer=layer)

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
        boxes = sorted(self._detect(gray), key=lambda box: (box.x, box.y))  # numbered left to right
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
        self,
        sources: Sequence[ImageSource],
        detect: bool | None = None,
        progress: bool = False,
        keep_on_interrupt: bool = False,
    ) -> tuple[list[ImageResult], list[Skipped]]:
        """Predict many images; unreadable ones are reported as skipped, never raised.
        ``keep_on_interrupt``: Ctrl-C (or another stop signal) returns the results so far, the
        images not reached skipped with the reason ``NOT_REACHED``, instead of raising."""
        from tqdm.auto import tqdm

        results: list[ImageResult] = []
        skipped: list[Skipped] = []
        done = 0
        try:
            for source in tqdm(sources, desc="predicting", unit="img", disable=not progress):
                try:
                    results.append(self.predict_image(source, detect))
                except FERDataError as err:
                    skipped.append(Skipped(_source_name(source), err.reason))
                except FERError:
                    raise  # the model or its runtime failed, not this photo: every later photo would fail too
                except Exception as err:  # noqa: BLE001 - one odd photo never sinks the batch
                    skipped.append(Skipped(_source_name(source), f"cannot process ({type(err).__name__}: {err})"))
                done += 1
        except KeyboardInterrupt:
            if not keep_on_interrupt:
                raise
            skipped += [Skipped(_source_name(s), NOT_REACHED) for s in list(sources)[done:]]
        return results, skipped

    def video_analyzer(self, smooth: float = DEFAULT_SMOOTHING, detect_size: int = VIDEO_MAX_SIDE) -> FrameAnalyzer:
        """A :class:`~fer_utils.predict.video.FrameAnalyzer` over this model: frames in, tracked and smoothed
        faces out (``smooth`` seconds; 0 = raw). It has a detector of its own, searching frames at
        up to ``detect_size`` px (larger finds smaller faces, slower), unless this Predictor was
        given a detector object."""
        if detect_size < 64:
            raise FERConfigError(f"detect_size must be at least 64 px, got {detect_size}")
        if self._detector is not None and not isinstance(self._detector, str):
            detector = self._detector
        else:
            detector = create_detector(self._detector or DETECTORS[0], detect_size)
        return FrameAnalyzer(self, detector, smooth)

    def predict_video(
        self,
        source: str | os.PathLike | int,
        every: int = 1,
        fps: float | None = None,
        start: float = 0.0,
        end: float | None = None,
        smooth: float = DEFAULT_SMOOTHING,
        progress: bool = False,
        keep_frames: bool = True,
        detect_size: int = VIDEO_MAX_SIDE,
    ) -> VideoResult:
        """Analyse a video file (or camera number): iterate over the result for each analysed
        frame's tracked faces, or call ``.to_dataframe()`` / ``.summaries()``. ``every``/``fps``
        choose the frames, ``start``/``end`` (seconds) the stretch; ``smooth`` is the smoothing
        time constant in seconds; ``detect_size`` as in :meth:`video_analyzer`. A file that is not
        a readable video raises FERDataError now."""
        selection = FrameSelection(every, fps, start, end)
        open_video(source)[0].release()  # a bad file fails here, before any frame
        frames = analyze_video(self.video_analyzer(smooth, detect_size), source, selection, progress=progress)
        return VideoResult(frames, self.classes, keep_frames)
