"""Face detection and alignment for photos: YuNet (default) or OpenCV's Haar cascades.

FER models are trained on tight face crops; classifying a whole photo gives "always neutral/sad".
So photos are searched for faces, each face is rotated so its eyes are level (when the detector
gives landmarks) and cropped the way FER2013 was cropped, then classified.

YuNet (OpenCV Zoo, MIT; ``fer_utils/assets/yunet``) finds faces at any in-plane angle, gives five
landmarks, runs in ``cv2.FaceDetectorYN`` (opencv-python 4.8+ and 5.x) and in ONNX Runtime Web
(the browser demo uses the same file). Haar cascades are kept for comparison while the installed
OpenCV still ships them (4.x); ``benchmarks/bench_photo.py`` measures both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from fer_utils.core.errors import FERConfigError
from fer_utils.core.locations import ASSETS_DIR
from fer_utils.data.images import DEFAULT_FACE_SIZE

CROP_MAX_SIDE = 96
"""Images this small (FER2013 is 48 px) are taken as face crops: detection is skipped in auto mode."""

DETECTORS = ("yunet", "haar")
"""Face detectors by name (``--detector``); the first is the default."""

YUNET_FILE = "face_detection_yunet_2023mar.onnx"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
YUNET_URL = "https://media.githubusercontent.com/media/opencv/opencv_zoo/main/models/face_detection_yunet/" + YUNET_FILE
"""Where the packaged copy came from (OpenCV Zoo, Git LFS); used only if the package lacks it."""

PACKAGED_YUNET = ASSETS_DIR / "yunet" / YUNET_FILE

HAAR_CROP_SCALE = 1.03
"""Side of the face crop relative to a Haar box: the inverse of the box's median size against the
original FER2013 crop of the same face, so crops look like the training faces
(benchmarks/bench_photo.py measures it on pasted FER2013 faces; docs/pipeline.md)."""

YUNET_CROP_SCALE = 0.97
"""Side of the face crop relative to the longer side of YuNet's box, found the same way
(``benchmarks/bench_photo.py --data``); YuNet's box is centred on the FER2013 crop, so no shift."""

YUNET_SCORE_THRESHOLD = 0.6
YUNET_NMS_THRESHOLD = 0.3
YUNET_MAX_SIDE = 1024  # also the Haar detector's working size
"""Photos are searched at up to this many pixels (YuNet works best on faces of 10-300 px)."""
VIDEO_MAX_SIDE = 640
"""Video frames are searched at up to this many pixels (``fer video --detect-size``), as in the
browser demo: a 720p frame costs less than at ``YUNET_MAX_SIDE``, and YuNet's smallest face scales
with the search size, so smaller faces need a larger ``--detect-size`` (benchmarks/bench_video.py,
docs/pipeline.md). Crops are cut from the full-resolution frame."""
YUNET_RETRY_SIDE = 320
"""When nothing is found, the photo is searched again at this size (close-ups that fill the frame)."""
MIN_FACE = 16
"""Smaller detections (in original pixels) are dropped: too few pixels to read an expression."""
MIN_ALIGN_DEGREES = 1.0
"""Eye lines tilted less than this are not rotated (rotating only blurs)."""
REFINE_SIDE = 320
"""Side of the patch on which landmarks are measured again (the face then spans about 160 px)."""
REFINE_STEPS = 3
"""At most this many re-measurements per face (each costs one YuNet run on a REFINE_SIDE patch)."""

CASCADES = ("haarcascade_frontalface_alt2.xml", "haarcascade_frontalface_default.xml")
"""Tried in order: alt2 found as many faces as default or more, at similar speed, on pasted FER2013
faces and LFW faces (benchmarks/bench_photo.py)."""


@dataclass(frozen=True)
class FaceBox:
    """A detected face: pixel box in the (EXIF-rotated) image, the detector's confidence and, from
    YuNet, five landmarks (x, y): right eye, left eye, nose tip, right and left mouth corner (the
    person's right, so the first eye is the one on the image's left)."""

    x: int
    y: int
    w: int
    h: int
    score: float
    landmarks: tuple[tuple[float, float], ...] = ()
    crop_scale: float = HAAR_CROP_SCALE  # crop side / box side that gives a FER2013-style crop

    def eye_angle(self) -> float:
        """Degrees the eye line is tilted (positive: the image-right eye is lower); 0 without landmarks."""
        if len(self.landmarks) < 2:
            return 0.0
        (x1, y1), (x2, y2) = self.landmarks[:2]
        return math.degrees(math.atan2(y2 - y1, x2 - x1))

    def in_photo(self, scale: float, width: int, height: int) -> FaceBox:
        """This box in the photo's own pixels: scaled by ``scale`` (the photo was analysed reduced)
        and clipped to the ``width`` x ``height`` photo, so no reported box starts off the picture.
        Landmarks are scaled, not clipped."""
        x0, y0 = max(0, round(self.x * scale)), max(0, round(self.y * scale))
        x1 = min(width, round((self.x + self.w) * scale))
        y1 = min(height, round((self.y + self.h) * scale))
        landmarks = tuple((x * scale, y * scale) for x, y in self.landmarks)
        return dataclasses.replace(self, x=x0, y=y0, w=max(0, x1 - x0), h=max(0, y1 - y0), landmarks=landmarks)

    def to_dict(self) -> dict:
        return {
            "x": self.x,
            "y": self.y,
            "w": self.w,
            "h": self.h,
            "score": self.score,
            "landmarks": [[round(x, 1), round(y, 1)] for x, y in self.landmarks],
        }


class Detector(Protocol):
    """Anything with ``detect(gray) -> list[FaceBox]`` (largest face first)."""

    name: str

    def detect(self, gray: np.ndarray) -> list[FaceBox]: ...


def _cv2():
    try:
        import cv2
    except ImportError:
        raise FERConfigError("face detection needs OpenCV: pip install opencv-python-headless") from None
    return cv2


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def yunet_model_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """The YuNet ONNX file: ``$FER_YUNET_MODEL``, else the copy inside the package, else a checked
    download into the cache (for installs that left the package data out)."""
    if env := os.environ.get("FER_YUNET_MODEL"):
        path = Path(env).expanduser()
        if not path.is_file():
            raise FERConfigError(f"FER_YUNET_MODEL={env}: no such file; unset it to use the packaged YuNet")
        return path
    if PACKAGED_YUNET.is_file():
        return PACKAGED_YUNET
    from fer_utils.core.atomic import atomic_path
    from fer_utils.core.locations import default_cache_dir

    target = Path(cache_dir or default_cache_dir()) / YUNET_FILE
    if target.is_file() and _sha256(target) == YUNET_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(target) as tmp:
            urllib.request.urlretrieve(YUNET_URL, tmp)
            if _sha256(tmp) != YUNET_SHA256:
                raise FERConfigError(f"{YUNET_URL}: downloaded file has the wrong SHA-256; not used")
    except OSError as err:
        raise FERConfigError(
            f"YuNet face detector missing from the package and cannot be downloaded ({err}); "
            f"download {YUNET_URL} and set FER_YUNET_MODEL to it, or use --detector haar"
        ) from None
    return target


@contextlib.contextmanager
def quiet_opencv(cv2) -> Iterator[None]:
    """OpenCV's own log at ERROR level for the block only (its warnings are not the user's problem)."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    previous = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        logging.setLogLevel(previous)


class YuNetDetector:
    """YuNet through ``cv2.FaceDetectorYN``: boxes, scores and five landmarks, largest face first.

    Photos are searched at up to ``max_side`` pixels (YuNet works best on faces of 10-300 px);
    when nothing is found in a photo larger than ``retry_side`` it is searched again at that size,
    which finds close-up faces that fill the frame. Boxes come back in original pixels.
    """

    name = "yunet"

    def __init__(
        self,
        score_threshold: float = YUNET_SCORE_THRESHOLD,
        nms_threshold: float = YUNET_NMS_THRESHOLD,
        max_side: int = YUNET_MAX_SIDE,
        retry_side: int = YUNET_RETRY_SIDE,
        min_face: int = MIN_FACE,
        model: str | os.PathLike | None = None,
    ) -> None:
        cv2 = _cv2()
        if not hasattr(cv2, "FaceDetectorYN"):
            raise FERConfigError(
                f"OpenCV {cv2.__version__} has no FaceDetectorYN: pip install 'opencv-python-headless>=4.8'"
            )
        self.cv2 = cv2
        self.max_side, self.retry_side, self.min_face = max_side, retry_side, min_face
        path = Path(model) if model else yunet_model_path()
        self._settings = (str(path), "", (320, 320), score_threshold, nms_threshold, 5000)
        self._sizes: dict[int, tuple[int, int]] = {}
        try:
            with quiet_opencv(cv2):  # OpenCV 5 warns that YuNet's graph ignores setPreferableTarget
                self._net = cv2.FaceDetectorYN.create(*self._settings)
                self._patch_net: object | None = None  # a second network for REFINE_SIDE patches
                _, probe = self._detect_rows(self._net, np.zeros((64, 64), dtype=np.uint8))
        except cv2.error as err:
            raise FERConfigError(
                f"{path}: not a YuNet face detector model OpenCV can run ({str(err).strip().splitlines()[-1][:120]}); "
                "unset FER_YUNET_MODEL to use the packaged YuNet"
            ) from None
        if probe is not None and (probe.ndim != 2 or probe.shape[1] != 15):
            raise FERConfigError(f"{path}: gives outputs of shape {probe.shape}, not YuNet's 15 columns per face")

    def _detect_rows(self, net, gray: np.ndarray):
        """Run ``net`` on ``gray``, resizing its input only when the size changes: OpenCV rebuilds
        the network on every ``setInputSize``, which cost more than the detection itself when
        video frames and 320 px refinement patches took turns on one network."""
        size = (gray.shape[1], gray.shape[0])
        if self._sizes.get(id(net)) != size:
            net.setInputSize(size)
            self._sizes[id(net)] = size
        return net.detect(self.cv2.cvtColor(gray, self.cv2.COLOR_GRAY2BGR))

    def _run(self, gray: np.ndarray, max_side: int, net=None) -> list[FaceBox]:
        height, width = gray.shape
        scale = min(1.0, max_side / max(height, width))
        small = gray
        if scale < 1:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = self.cv2.resize(gray, size, interpolation=self.cv2.INTER_AREA)
        _, rows = self._detect_rows(self._net if net is None else net, small)
        faces = []
        for row in [] if rows is None else rows:
            x, y, w, h = (float(v) / scale for v in row[:4])
            if min(w, h) < self.min_face:
                continue
            points = tuple((float(row[i]) / scale, float(row[i + 1]) / scale) for i in range(4, 14, 2))
            faces.append(
                FaceBox(
                    round(x),
                    round(y),
                    round(w),
                    round(h),
                    round(float(row[14]), 3),
                    points,
                    YUNET_CROP_SCALE,
                )
            )
        return sorted(faces, key=lambda b: -b.w * b.h)

    def refine_landmarks(self, gray: np.ndarray, box: FaceBox, steps: int = REFINE_STEPS) -> FaceBox:
        """``box`` with landmarks measured again on a levelled, enlarged patch around the face.

        YuNet's landmarks lag behind a tilted head (on the course's portrait turned by 25 degrees
        the eye line reads about 1 degree), but are accurate on an upright face of ~150 px. So the
        face is cut out at ``REFINE_SIDE`` px, turned by the current estimate, and measured again;
        each step removes most of what is left. The box itself is kept.
        """
        refined = box
        for _ in range(steps if len(box.landmarks) >= 2 else 0):
            angle = refined.eye_angle()
            face = self._in_patch(gray, box, angle, REFINE_SIDE)
            if face is None:
                break
            refined = dataclasses.replace(box, landmarks=face.landmarks)
            if abs(refined.eye_angle() - angle) < MIN_ALIGN_DEGREES:  # level in the patch: nothing left
                break
        return refined

    def follow(self, gray: np.ndarray, box: FaceBox, side: int = REFINE_SIDE) -> FaceBox | None:
        """The face of ``box`` (from an earlier frame) found again in ``gray``: one YuNet run on a
        ``side`` px patch around it, levelled by its eye line, so the new box comes with landmarks
        as :meth:`refine_landmarks` measures them. None when no face is there."""
        return self._in_patch(gray, box, box.eye_angle(), side)

    def _in_patch(self, gray: np.ndarray, box: FaceBox, angle: float, side: int) -> FaceBox | None:
        """The face nearest the middle of a ``side`` px patch cut around ``box`` (twice its size) and
        turned by ``angle`` degrees, in ``gray``'s pixels: box (the face's own, upright size),
        landmarks and score; None when the patch shows no face."""
        cv2 = self.cv2
        cx, cy = box.x + box.w / 2, box.y + box.h / 2
        zoom = side / (2 * max(box.w, box.h, 1))
        matrix = cv2.getRotationMatrix2D((cx, cy), angle, zoom)
        matrix[:, 2] += (side / 2 - cx, side / 2 - cy)
        patch = cv2.warpAffine(gray, matrix, (side, side), borderMode=cv2.BORDER_REPLICATE)
        if self._patch_net is None:
            with quiet_opencv(cv2):
                self._patch_net = cv2.FaceDetectorYN.create(*self._settings)
        found = self._run(patch, side, self._patch_net)
        if not found:
            return None
        face = min(found, key=lambda f: (f.x + f.w / 2 - side / 2) ** 2 + (f.y + f.h / 2 - side / 2) ** 2)
        back = cv2.invertAffineTransform(matrix)
        points = tuple((float(back[0] @ (x, y, 1)), float(back[1] @ (x, y, 1))) for x, y in face.landmarks)
        mx, my = face.x + face.w / 2, face.y + face.h / 2
        centre_x, centre_y = float(back[0] @ (mx, my, 1)), float(back[1] @ (mx, my, 1))
        w, h = face.w / zoom, face.h / zoom
        x, y = round(centre_x - w / 2), round(centre_y - h / 2)
        return dataclasses.replace(face, x=x, y=y, w=round(w), h=round(h), landmarks=points)

    def detect(self, gray: np.ndarray) -> list[FaceBox]:
        """Faces in a uint8 grayscale image, largest first."""
        faces = self._run(gray, self.max_side)
        if not faces and max(gray.shape) > self.retry_side:
            faces = self._run(gray, self.retry_side)
        return faces


class HaarDetector:
    """OpenCV's frontal-face Haar cascades (upright faces only; no landmarks, so no alignment).

    The ``alt2`` cascade runs first; the default one is tried when it finds nothing. Large photos
    are downscaled to ``max_side`` for speed. Needs an OpenCV that ships the cascades (4.x).
    """

    name = "haar"

    def __init__(
        self, scale_factor: float = 1.1, min_neighbors: int = 4, min_face: int = 24, max_side: int = YUNET_MAX_SIDE
    ) -> None:
        cv2 = _cv2()
        folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if not hasattr(cv2, "CascadeClassifier") or folder is None:
            raise FERConfigError(
                f"OpenCV {cv2.__version__} has no Haar cascades (5.0 dropped them): use --detector yunet "
                "(the default), or pip install 'opencv-python-headless>=4.8,<5'"
            )
        self.cv2 = cv2
        self.scale_factor, self.min_neighbors, self.min_face, self.max_side = (
            scale_factor,
            min_neighbors,
            min_face,
            max_side,
        )
        self.cascades = []
        for name in CASCADES:
            path = Path(folder) / name
            cascade = cv2.CascadeClassifier(str(path))
            if cascade.empty():
                raise FERConfigError(f"cannot load OpenCV cascade {path}; reinstall opencv-python-headless")
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


def browser_settings() -> dict:
    """YuNet and crop settings for the browser demo (web/app.js reads them from model.json), so the
    page and Python find and crop faces the same way. The browser's network input is fixed at
    640 x 640, so photos are searched at up to 640 px there."""
    return {
        "file": "yunet.onnx",
        "input_size": 640,
        "score_threshold": YUNET_SCORE_THRESHOLD,
        "nms_threshold": YUNET_NMS_THRESHOLD,
        "max_side": 640,
        "retry_side": YUNET_RETRY_SIDE,
        "min_face": MIN_FACE,
        "crop_scale": YUNET_CROP_SCALE,
        "min_align_degrees": MIN_ALIGN_DEGREES,
    }


def create_detector(name: str = DETECTORS[0], max_side: int = YUNET_MAX_SIDE) -> Detector:
    """A face detector by name: ``yunet`` (default) or ``haar``, searching images at up to
    ``max_side`` pixels (videos use a smaller working size than photos: ``VIDEO_MAX_SIDE``)."""
    if name == "yunet":
        return YuNetDetector(max_side=max_side)
    if name == "haar":
        return HaarDetector(max_side=max_side)
    raise FERConfigError(f"detector must be one of {', '.join(DETECTORS)}, got {name!r}")


def crop_face(
    gray: np.ndarray, box: FaceBox, size: int = DEFAULT_FACE_SIZE, scale: float | None = None, align: bool = True
) -> np.ndarray:
    """A square ``size`` x ``size`` crop around ``box``, as FER2013 faces are cropped.

    ``scale`` (default: the box's own ``crop_scale``) sets the crop side relative to the box. With
    ``align`` and landmarks, the face is first rotated about its centre so the eyes are level (FER2013
    faces are upright). Edges are replicated where the crop runs past the image border.
    """
    side = max(box.w, box.h) * (box.crop_scale if scale is None else scale)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    angle = box.eye_angle() if align else 0.0
    if abs(angle) >= MIN_ALIGN_DEGREES:
        cv2 = _cv2()
        n = max(1, round(side))
        matrix = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
        matrix[:, 2] += (n / 2 - cx, n / 2 - cy)  # the face centre lands in the middle of an n x n patch
        crop = cv2.warpAffine(gray, matrix, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    else:
        left, top = round(cx - side / 2), round(cy - side / 2)
        side = max(1, round(side))
        pad = max(0, -left, -top, left + side - gray.shape[1], top + side - gray.shape[0])
        padded = np.pad(gray, pad, mode="edge") if pad else gray
        crop = padded[top + pad : top + pad + side, left + pad : left + pad + side]
    n = crop.shape[0]
    return np.array(
        Image.fromarray(np.ascontiguousarray(crop)).resize(
            (size, size), Image.Resampling.BILINEAR if n <= size else Image.Resampling.LANCZOS
        ),
        dtype=np.uint8,
    )
