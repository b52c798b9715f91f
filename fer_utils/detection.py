"""Face detection for photos (OpenCV Haar cascades, shipped inside the opencv-python-headless 4.x wheel).

FER models are trained on tight face crops; classifying a whole photo gives "always neutral/sad".
So photos are searched for faces, each cropped the way FER2013 was cropped, then classified.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fer_utils.data.images import DEFAULT_FACE_SIZE
from fer_utils.errors import FERConfigError

CROP_SCALE = 1.03
"""Side of the face crop relative to the detector's box. Measured (benchmarks/bench_photo.py): with
400 FER2013 PublicTest faces pasted, enlarged, into 640x480 canvases, the alt2 cascade's box is
0.97x the original FER2013 crop (median; IQR 0.89-1.04) and centred on it."""

CASCADES = ("haarcascade_frontalface_alt2.xml", "haarcascade_frontalface_default.xml")
"""Tried in order. Measured during development on 200 pasted FER2013 faces and the LFW subset that
ships with scikit-image: alt2 found as many or more faces than default, at similar speed, and
histogram equalisation before detection lowered recall by 16-33 points, so none is done.
benchmarks/bench_photo.py measures the chosen setup."""


@dataclass(frozen=True)
class FaceBox:
    """A detected face: pixel box in the (EXIF-rotated) image and the detector's confidence."""

    x: int
    y: int
    w: int
    h: int
    score: float

    def to_dict(self) -> dict:
        return asdict(self)


def _cv2():
    try:
        import cv2
    except ImportError:
        raise FERConfigError("face detection needs OpenCV: pip install 'opencv-python-headless>=4.8,<5'") from None
    if not hasattr(cv2, "CascadeClassifier"):
        raise FERConfigError(
            f"OpenCV {cv2.__version__} has no Haar cascades (5.0 dropped them): "
            "pip install 'opencv-python-headless>=4.8,<5'"
        )
    return cv2


class FaceDetector:
    """Frontal-face detector: ``FaceDetector().detect(gray_array)`` returns boxes, largest first.

    The ``alt2`` cascade runs first; the default one is tried when it finds nothing. Large
    photos are downscaled to ``max_side`` for speed; boxes are returned in original pixels.
    """

    def __init__(
        self, scale_factor: float = 1.1, min_neighbors: int = 4, min_face: int = 24, max_side: int = 1024
    ) -> None:
        cv2 = _cv2()
        self.cv2 = cv2
        self.scale_factor, self.min_neighbors, self.min_face, self.max_side = (
            scale_factor,
            min_neighbors,
            min_face,
            max_side,
        )
        self.cascades = []
        for name in CASCADES:
            path = Path(cv2.data.haarcascades) / name
            cascade = cv2.CascadeClassifier(str(path))
            if cascade.empty():
                raise FERConfigError(f"cannot load OpenCV cascade {path}; reinstall opencv-python-headless<5")
            self.cascades.append(cascade)

    def detect(self, gray: np.ndarray) -> list[FaceBox]:
        """Faces in a uint8 grayscale image, largest first."""
        height, width = gray.shape
        scale = min(1.0, self.max_side / max(height, width))
        small = (
            self.cv2.resize(gray, (round(width * scale), round(height * scale)), interpolation=self.cv2.INTER_AREA)
            if scale < 1
            else gray
        )
        min_size = max(12, round(self.min_face * scale))
        for cascade in self.cascades:
            boxes, _, weights = cascade.detectMultiScale3(
                small,
                scaleFactor=self.scale_factor,
                minNeighbors=self.min_neighbors,
                minSize=(min_size, min_size),
                outputRejectLevels=True,
            )
            if len(boxes):
                faces = [
                    FaceBox(round(x / scale), round(y / scale), round(w / scale), round(h / scale), round(float(s), 3))
                    for (x, y, w, h), s in zip(boxes, np.ravel(weights), strict=True)
                ]
                return sorted(faces, key=lambda b: -b.w * b.h)
        return []


def crop_face(gray: np.ndarray, box: FaceBox, size: int = DEFAULT_FACE_SIZE, scale: float = CROP_SCALE) -> np.ndarray:
    """A square ``size`` x ``size`` crop around ``box``, as FER2013 crops are; edges are replicated
    where the crop runs past the image border."""
    side = max(box.w, box.h) * scale
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    side = max(1, round(side))
    pad = max(0, -left, -top, left + side - gray.shape[1], top + side - gray.shape[0])
    padded = np.pad(gray, pad, mode="edge") if pad else gray
    crop = padded[top + pad : top + pad + side, left + pad : left + pad + side]
    return np.array(
        Image.fromarray(crop).resize(
            (size, size), Image.Resampling.BILINEAR if side <= size else Image.Resampling.LANCZOS
        ),
        dtype=np.uint8,
    )
