"""Finding the faces in a picture for a Predictor: which detector (one per thread, made on first
use), whether the picture already is a face crop, and the faces numbered left to right with
their landmarks measured again when aligning."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from fer_utils.core.errors import FERConfigError
from fer_utils.faces.detection import CROP_MAX_SIDE, DETECTORS, VIDEO_MAX_SIDE, Detector, FaceBox, create_detector
from fer_utils.predict.classifier import located_faces


def _check_detector(detector: Detector | str | None) -> None:
    if isinstance(detector, str) and detector not in DETECTORS:
        raise FERConfigError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")


@dataclass
class FaceRegions:
    """Where to classify in one image: the detected ``boxes``, or the whole image when it already is
    a face crop (``whole_image``); ``reason`` says why there is nothing to classify."""

    boxes: list[FaceBox]
    whole_image: bool = False
    reason: str | None = None


class FaceFinder:
    """The faces of a picture, found by ``detector`` (``yunet``, ``haar`` or any object with
    ``detect(gray)``); ``align`` levels the eyes before cropping (landmarks: YuNet). Thread-safe."""

    def __init__(self, detector: Detector | str | None = None, align: bool = True) -> None:
        _check_detector(detector)
        self.align = align
        self._detector = detector  # a name (one detector per thread, made on first use) or the caller's object
        self._per_thread = threading.local()
        self._lock = threading.RLock()  # a caller's own detector object may not be thread-safe

    def for_video(self, detect_size: int = VIDEO_MAX_SIDE) -> Detector:
        """A detector for a stream of frames, searching them at up to ``detect_size`` px (the
        caller's own detector object, if one was given)."""
        if detect_size < 64:
            raise FERConfigError(f"detect_size must be at least 64 px, got {detect_size}")
        if self._detector is not None and not isinstance(self._detector, str):
            return self._detector
        return create_detector(self._detector or DETECTORS[0], detect_size)

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

    def _guarded(self, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)`` under the lock when the detector is the caller's own object."""
        if self._detector is not None and not isinstance(self._detector, str):
            with self._lock:
                return call(*args)
        return call(*args)

    def find(self, gray: np.ndarray, detect: bool | None = None) -> FaceRegions:
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
        boxes = located_faces(gray, partial(self._guarded, self.detector.detect), self._refine, self.align)
        return FaceRegions(boxes, reason=None if boxes else "no face found")

    def _refine(self, gray: np.ndarray, box: FaceBox) -> FaceBox:
        refine = getattr(self.detector, "refine_landmarks", None)
        return box if refine is None else self._guarded(refine, gray, box)
