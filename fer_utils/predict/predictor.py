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

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fer_utils.core.errors import FERCheckpointError, FERDataError, FERError
from fer_utils.core.locations import REPO_MODELS_DIR
from fer_utils.core.metadata import CheckpointSource
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
    VIDEO_MAX_SIDE,
    Detector,
    FaceBox,
)
from fer_utils.faces.results import FaceResult, ImageResult
from fer_utils.predict.classifier import RUNTIMES, FaceClassifier, class_dict, classified_crops
from fer_utils.predict.finder import FaceFinder, FaceRegions
from fer_utils.predict.frames import FrameSelection, open_video
from fer_utils.predict.video import DEFAULT_SMOOTHING, DETECT_INTERVAL, FrameAnalyzer, VideoResult, analyze_video
from fer_utils.runtime.description import ModelDescription

if TYPE_CHECKING:
    import torch

    from fer_utils.model.checkpoints import Checkpoint

SHIPPED_MODEL = "fer2013_ensemble.safetensors"
"""The FER2013 model: an ensemble of EfficientNet-Lite0 members (models/README.md), the default of the
commands that score or export a model on FER2013 (``fer evaluate``, ``calibrate``, ``teacher``,
``export``); the single model fer2013_efficientnet-lite0.safetensors is the fast choice."""

SHIPPED_PHOTO_MODEL = "ferplus_ensemble.safetensors"
"""The default for photos (``Predictor.from_checkpoint()``, ``fer predict``, ``fer serve``,
``fer webcam``): trained on FER+'s labels, the majority of ten people per face. A photo's expression
is what people see in it, and FER2013's single labeller disagrees with the ten on about a third of
the faces; on their majority labels this model agrees with people far more often than the FER2013
model (models/README.md)."""

SHIPPED_SINGLE_MODEL = "fer2013_efficientnet-lite0.safetensors"
"""One Lite0 at 64 px: the smallest and cheapest FER2013 model."""

SHIPPED_WEB_MODEL = SHIPPED_PHOTO_MODEL
"""What the in-browser demo runs (``fer export --format web``, ``make web``): the photo model, so a
photo gets the same answer in the browser as from ``fer predict``; its cost per face and download
against the single FER2013 model: ``benchmarks/bench_web.py``, docs/deployment.md."""

SHIPPED_FAST_MODEL = "fer2013_fast.safetensors"
"""One Lite0 at 104 px (member 0 of the six, calibrated alone): where the six are too slow, it keeps
most of their accuracy at a fraction of their cost (models/README.md)."""

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
    """Files given directly, plus the images inside any folders (recursively, sorted); a photo
    named twice (directly, through a link, or also inside a named folder) is read once."""
    files: list[Path] = []
    skipped: list[Skipped] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found, broken = files_under(path)
            photos = [p for p in found if is_image_file(p)]
            if not photos and not broken:
                skipped.append(Skipped(str(path), "a folder with no photos (.jpg, .png or another image file)"))
            files += photos
            skipped += [s for s in broken if is_image_file(s.source)]
        elif path.exists():
            files.append(path)
        else:
            skipped.append(Skipped(str(path), "no such file or folder"))
    seen: set[Path] = set()
    once = [f for f in files if not (f.resolve() in seen or seen.add(f.resolve()))]
    return once, skipped


def _source_name(source: ImageSource) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>"


@dataclass(frozen=True)
class PredictorOptions:
    """How to build a :class:`Predictor`, as one value: what ``fer predict`` and ``fer video`` make
    of their flags, and what each Ray worker receives to build the same Predictor. The fields are
    :meth:`Predictor.from_checkpoint`'s arguments."""

    checkpoint: tuple[str, ...] | None = None
    tta: str = "none"
    device: str = "auto"
    detector: str | None = None
    runtime: str = "auto"
    align: bool = True
    threads: int = 0

    def build(self) -> Predictor:
        """The Predictor these options describe (its detector loaded now, so a detector this
        OpenCV lacks fails before any work)."""
        checkpoint = list(self.checkpoint) if self.checkpoint else None
        predictor = Predictor.from_checkpoint(
            checkpoint, self.tta, self.device, self.detector, self.runtime, self.align, self.threads
        )
        predictor.detector  # noqa: B018 - loads it
        return predictor


class Predictor:
    """Photos and videos in, faces and their expressions out:
    ``Predictor.from_checkpoint().predict_image("photo.jpg")``. A facade over a
    :class:`~fer_utils.predict.classifier.FaceClassifier` (the model, in ONNX Runtime or PyTorch)
    and a face detector.

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
        self.finder = FaceFinder(detector, align)
        self.classifier = FaceClassifier(model, checkpoint, tta, device, runtime, threads)

    @classmethod
    def around(cls, classifier: FaceClassifier, finder: FaceFinder | None = None) -> Predictor:
        """A Predictor over an existing classifier and face finder (default: YuNet, aligned)."""
        self = cls.__new__(cls)
        self.classifier, self.finder = classifier, finder or FaceFinder()
        return self

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
        finder = FaceFinder(detector, align)
        return cls.around(FaceClassifier.from_onnx(path, tta, threads, sources), finder)

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
        finder = FaceFinder(detector, align)  # a bad detector name fails before the model loads
        source = path if path is not None else default_photo_checkpoint()
        return cls.around(FaceClassifier.from_checkpoint(source, tta, device, runtime, threads), finder)

    def __repr__(self) -> str:
        return (
            f"Predictor({self.classifier.name}, runtime={self.runtime!r}, input {self.image_size} px, "
            f"tta={self.tta!r}, {len(self.classes)} classes)"
        )

    # the classifier's, read through the one object callers hold
    classes = property(lambda self: self.classifier.classes, doc="The class names, in the model's order.")
    description = property(lambda self: self.classifier.description, doc=ModelDescription.__doc__)
    image_size = property(lambda self: self.classifier.description.image_size, doc="The model's input side.")
    mean = property(lambda self: self.classifier.description.mean, doc="The input normalization's mean.")
    std = property(lambda self: self.classifier.description.std, doc="The input normalization's std.")

    @property
    def tta(self) -> str:
        """The test-time augmentation views (settable: ``none``, ``flip``, ``crops``)."""
        return self.classifier.description.tta

    @tta.setter
    def tta(self, mode: str) -> None:
        self.classifier.description = self.classifier.description.with_tta(mode)

    runtime = property(lambda self: self.classifier.runtime, doc="``onnx`` or ``torch``.")
    device = property(lambda self: self.classifier.device, doc="The PyTorch device (None in ONNX Runtime).")
    sources = property(lambda self: self.classifier.sources, doc="The checkpoint (or export) files.")
    model = property(lambda self: self.classifier.model, doc=FaceClassifier.model.__doc__)
    checkpoint = property(lambda self: self.classifier.checkpoint, doc=FaceClassifier.checkpoint.__doc__)
    name = property(lambda self: self.classifier.name, doc=FaceClassifier.name.__doc__)
    align = property(lambda self: self.finder.align, doc="Whether faces are levelled before cropping.")
    detector = property(lambda self: self.finder.detector, doc=FaceFinder.detector.__doc__)

    def find_faces(self, gray: np.ndarray, detect: bool | None = None) -> FaceRegions:
        """What to classify in a grayscale picture (see :meth:`FaceFinder.find`)."""
        return self.finder.find(gray, detect)

    def inputs(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """The normalized model input (N, 3, S, S) float32 for uint8 face crops of any size."""
        return self.classifier.inputs(faces)

    def input_tensor(self, faces: Sequence[np.ndarray]) -> torch.Tensor:
        """:meth:`inputs` as a torch tensor on the model's device (Grad-CAM, notebooks)."""
        return self.classifier.input_tensor(faces)

    def predict_arrays(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (N, C) for uint8 face crops (any size; resized like the training data),
        averaged over the test-time augmentation views."""
        return self.classifier.probabilities(faces)

    def gradcam(
        self,
        faces: Sequence[np.ndarray],
        target_classes: Sequence[int] | None = None,
        method: str = "layercam",
        layer: str = "fine",
    ) -> np.ndarray:
        """Class-activation maps (N, S, S) for face crops (see :meth:`FaceClassifier.gradcam`)."""
        return self.classifier.gradcam(faces, target_classes, method, layer)

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
            probabilities = self.predict_arrays(crops)
        else:
            boxes = list(regions.boxes)
            crops, probabilities = classified_crops(gray, regions.boxes, self.predict_arrays, self.align)
        faces = []
        for box, crop, probs in zip(boxes, crops, probabilities, strict=True):
            top = int(probs.argmax())
            photo_box = None if box is None else box.in_photo(scale, width, height)
            faces.append(
                FaceResult(photo_box, self.classes[top], float(probs[top]), class_dict(self.classes, probs), crop)
            )
        return ImageResult(
            _source_name(source),
            width,
            height,
            faces,
            not regions.whole_image,
            regions.reason,
            gray if keep_image else None,
            tuple(self.classes),
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
        return predict_each(self.predict_image, sources, detect, progress, keep_on_interrupt)

    def video_analyzer(
        self,
        smooth: float = DEFAULT_SMOOTHING,
        detect_size: int = VIDEO_MAX_SIDE,
        detect_interval: float = DETECT_INTERVAL,
    ) -> FrameAnalyzer:
        """Frames in, tracked faces out (:class:`~fer_utils.predict.video.FrameAnalyzer`), smoothed over ``smooth``
        seconds, with a detector of its own (unless given one) that searches frames at up to ``detect_size`` px
        every ``detect_interval`` seconds (0: every frame) and follows the faces in between."""
        return FrameAnalyzer(self, self.finder.for_video(detect_size), smooth, detect_interval=detect_interval)

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
        detect_interval: float = DETECT_INTERVAL,
    ) -> VideoResult:
        """Analyse a video file (or camera number): iterate over the result for each analysed
        frame's tracked faces, or call ``.to_dataframe()`` / ``.summaries()``. ``every``/``fps``
        choose the frames, ``start``/``end`` (seconds) the stretch; ``smooth`` is the smoothing
        time constant in seconds; ``detect_size`` and ``detect_interval`` as in
        :meth:`video_analyzer`. A file that is not a readable video raises FERDataError now."""
        selection = FrameSelection(every, fps, start, end)
        open_video(source)[0].release()  # a bad file fails here, before any frame
        analyzer = self.video_analyzer(smooth, detect_size, detect_interval)
        frames = analyze_video(analyzer, source, selection, progress=progress)
        return VideoResult(frames, self.classes, keep_frames)


def predict_each(
    predict_image: Callable[[ImageSource, bool | None], ImageResult],
    sources: Sequence[ImageSource],
    detect: bool | None = None,
    progress: bool = False,
    keep_on_interrupt: bool = False,
) -> tuple[list[ImageResult], list[Skipped]]:
    """``predict_image`` over many images with a progress bar: an unreadable image is skipped
    with its reason, a failing model stops the batch, and (``keep_on_interrupt``) a stop keeps
    the results so far, the images not reached skipped as ``NOT_REACHED``."""
    from tqdm.auto import tqdm

    results: list[ImageResult] = []
    skipped: list[Skipped] = []
    done = 0
    try:
        for source in tqdm(sources, desc="predicting", unit="img", disable=not progress):
            try:
                results.append(predict_image(source, detect))
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
