"""Reading videos and cameras one frame at a time: what a source is, which frames to analyse,
and decoding ahead in a background thread so decoding and analysis overlap."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fer_utils.core.errors import FERConfigError, FERDataError
from fer_utils.data.images import Skipped, check_pixels, files_under, is_image_file
from fer_utils.faces.detection import quiet_opencv

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts")
"""Files taken as videos when a folder is given."""


@dataclass
class VideoInfo:
    """What the container says: frame size (after rotation), nominal frame rate, frame count
    (None when unknown, e.g. a camera)."""

    source: str
    width: int
    height: int
    fps: float
    frames: int | None
    camera: bool = False

    @property
    def duration(self) -> float | None:
        return self.frames / self.fps if self.frames and self.fps > 0 else None


def camera_index(source: str | os.PathLike | int) -> int | None:
    """The camera number when ``source`` names a camera (an int, or digits that are no file)."""
    if isinstance(source, int):
        return source
    text = str(source)
    return int(text) if text.isdigit() and not Path(text).exists() else None


PHOTO_NOT_VIDEO = "a photo, not a video: use `fer predict` (Predictor.predict_image)"
"""Why a photo given where a video is expected is refused (OpenCV would read it as one frame)."""


def open_video(source: str | os.PathLike | int) -> tuple[Any, VideoInfo]:
    """Open a video file or camera with OpenCV; FERDataError naming the source when it is not a
    readable video (a folder, an image, an audio-only file, a damaged file, an absent camera)."""
    import cv2

    # FFmpeg writes its own complaints about a bad file straight to stderr ("moov atom not found");
    # the reason is given in our one line instead. Read once, when OpenCV loads its FFmpeg backend.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    index = camera_index(source)
    if index is None:
        path = Path(source)
        if path.is_dir():
            raise FERDataError(source=str(path), reason="is a folder; give video files (`fer video` takes folders)")
        if not path.is_file():
            raise FERDataError(source=str(path), reason="no such file")
        if is_image_file(path):
            raise FERDataError(source=str(path), reason=PHOTO_NOT_VIDEO)
        with quiet_opencv(cv2):
            capture = cv2.VideoCapture(str(path))
        if not capture.isOpened() or capture.get(cv2.CAP_PROP_FRAME_WIDTH) <= 0:
            capture.release()
            raise FERDataError(
                source=str(path),
                reason="not a video OpenCV can read (no video stream: an image, an audio-only file, "
                "or a damaged or unsupported file)",
            )
    else:
        with quiet_opencv(cv2):  # OpenCV logs each backend it tried
            capture = cv2.VideoCapture(index)
        if not capture.isOpened():
            raise FERDataError(source=f"camera {index}", reason="cannot be opened (no camera, or in use)")
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    try:
        check_pixels(width, height, f"camera {index}" if index is not None else str(source))
    except FERDataError:
        capture.release()
        raise
    info = VideoInfo(
        str(source),
        int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        float(capture.get(cv2.CAP_PROP_FPS) or 0.0),
        frames if frames > 0 else None,
        camera=index is not None,
    )
    return capture, info


@dataclass
class FrameSelection:
    """Which frames to analyse: every ``every``-th, or about ``fps`` per second, between ``start``
    and ``end`` seconds."""

    every: int = 1
    fps: float | None = None
    start: float = 0.0
    end: float | None = None

    def __post_init__(self) -> None:
        if self.every < 1:
            raise FERConfigError(f"--every must be 1 or more, got {self.every}")
        if self.fps is not None and not (self.fps > 0 and math.isfinite(self.fps)):
            raise FERConfigError(f"--fps must be a positive number, got {self.fps}")
        if self.fps is not None and self.every != 1:
            raise FERConfigError("give --every or --fps, not both")
        if not math.isfinite(self.start) or (self.end is not None and not math.isfinite(self.end)):
            raise FERConfigError(
                f"--start and --end must be numbers of seconds, got start {self.start}, end {self.end}"
            )
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            raise FERConfigError(f"need 0 <= --start < --end, got start {self.start}, end {self.end}")


def check_video_options(smooth: float, detect_size: int = 64, detect_interval: float = 0.0) -> None:
    """Refuse, before any work (and before Ray starts workers), analysis options that mean
    nothing: a smoothing or search interval that is negative, NaN or infinite, a search size
    under 64 px. ``FrameAnalyzer`` checks them again, for direct callers."""
    if not (smooth >= 0 and math.isfinite(smooth)):
        raise FERConfigError(f"--smooth must be a number of seconds >= 0, got {smooth}")
    if not (detect_interval >= 0 and math.isfinite(detect_interval)):
        raise FERConfigError(f"--detect-interval must be a number of seconds >= 0, got {detect_interval}")
    if detect_size < 64:
        raise FERConfigError(f"--detect-size must be at least 64 px, got {detect_size}")


@dataclass
class Frame:
    """A decoded frame: index in the file, timestamp, BGR pixels (None when only grabbed) and
    whether it is one to analyse."""

    index: int
    time_s: float
    image: np.ndarray | None
    selected: bool


SEEK_MARGIN = 1.0
"""A stretch that starts more than twice this many seconds into a file is reached by seeking to
this much before it and reading on, instead of decoding every frame before it."""


def _seek(capture: Any, info: VideoInfo, start: float) -> int:
    """Put ``capture`` shortly before ``start`` seconds; returns the index of the frame before the
    next one read (-1: from the top, where seeking is not possible or overshot). Frame numbers after
    a seek are OpenCV's: exact for constant frame rates."""
    import cv2

    if info.camera or start <= 2 * SEEK_MARGIN:
        return -1
    if capture.set(cv2.CAP_PROP_POS_MSEC, (start - SEEK_MARGIN) * 1000.0):
        index = int(capture.get(cv2.CAP_PROP_POS_FRAMES))
        if index > 0 and capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 < start:
            return index - 1
    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
    return -1


def read_frames(
    capture: Any, info: VideoInfo, selection: FrameSelection, decode_all: bool = False, until: float | None = None
) -> Iterator[Frame]:
    """Frames from ``start`` to ``end`` (and before ``until`` seconds: a part of a video that the
    next part continues), one at a time. Frames not selected are only grabbed (not converted)
    unless ``decode_all`` (an annotated copy needs every frame). A file whose frames carry no
    timestamps falls back to index / nominal fps; a camera uses the clock."""
    import cv2

    index, next_due, clock0 = _seek(capture, info, selection.start), selection.start, time.monotonic()
    while True:
        if not capture.grab():
            return
        index += 1
        if info.camera:
            t = time.monotonic() - clock0
        else:
            t = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if index > 0 and t <= 0 and info.fps > 0:  # no timestamps in this container
                t = index / info.fps
        if t < selection.start - 1e-6:
            continue
        if (selection.end is not None and t > selection.end + 1e-6) or (until is not None and t >= until - 1e-6):
            return
        if selection.fps is not None:
            selected = t >= next_due - 1e-6
            if selected:  # keep the rhythm, but after a jump in time start it again from here
                next_due += 1.0 / selection.fps
                if next_due <= t:
                    next_due = t + 1.0 / selection.fps
        else:
            selected = index % selection.every == 0
        image = None
        if selected or decode_all:
            ok, image = capture.retrieve()
            if not ok:
                return
            check_pixels(image.shape[1], image.shape[0], f"{info.source} frame {index}")  # a frame unlike its header
        yield Frame(index, t, image, selected)


PREFETCH_FRAMES = 4
"""Frames decoded ahead in a background thread while the current one is analysed (OpenCV
releases the GIL while it decodes, so decoding and analysis overlap on two cores)."""


def prefetched(frames: Iterator[Any], depth: int = PREFETCH_FRAMES) -> Iterator[Any]:
    """``frames`` (or any items), made ``depth`` ahead by a background thread. Closing this
    generator (the end, an error, Ctrl-C) stops the thread and waits for it, so the capture can be
    released safely."""
    import queue
    import threading

    done = object()
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for frame in frames:
                while not stop.is_set():
                    try:
                        buffer.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(done)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            buffer.put(err)
        finally:  # a source that is itself prefetched stops its own thread here, before the capture closes
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="fer-video-decode", daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full buffer
            try:
                buffer.get_nowait()
            except queue.Empty:
                worker.join(0.05)


def expand_video_paths(paths: Iterable[str | os.PathLike | int]) -> tuple[list[str | int], list[Skipped]]:
    """Files and cameras given directly, plus the videos inside any folders (recursively, sorted)."""
    found: list[str | int] = []
    skipped: list[Skipped] = []
    for raw in paths:
        if camera_index(raw) is not None:
            found.append(camera_index(raw))
            continue
        path = Path(raw)
        if path.is_file() and is_image_file(path):
            skipped.append(Skipped(str(path), PHOTO_NOT_VIDEO))
            continue
        if path.is_dir():
            files, broken = files_under(path)
            videos = [str(p) for p in files if p.suffix.lower() in VIDEO_EXTENSIONS]
            if not videos:
                skipped.append(Skipped(str(path), f"a folder with no videos ({', '.join(VIDEO_EXTENSIONS[:5])}, ...)"))
            found += videos
            skipped += [s for s in broken if Path(s.source).suffix.lower() in VIDEO_EXTENSIONS]
        else:
            found.append(str(path))
    return found, skipped
