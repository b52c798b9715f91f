"""Expressions over time: videos and cameras, faces tracked and smoothed, one frame at a time.

``analyze_video`` (what ``Predictor.predict_video`` and ``fer video`` run) decodes a frame,
finds and classifies its faces, gives each face a track id (:mod:`fer_utils.faces.tracking`), smooths
each track's probabilities over time and hands the frame's result on before decoding the next,
so memory stays flat whatever the video's length. Times come from the container's timestamps
(variable frame rates included); rotation metadata of phone videos is applied by OpenCV.

The webcam loop and the app's camera use the same :class:`FrameAnalyzer`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fer_utils.core.atomic import atomic_path
from fer_utils.core.errors import FERConfigError, FERDataError
from fer_utils.data.images import Skipped, check_pixels, files_under
from fer_utils.faces.detection import Detector, FaceBox, crop_face, quiet_opencv
from fer_utils.faces.results import SpreadsheetSafeWriter, finite_json
from fer_utils.faces.tracking import MAX_GAP_SECONDS, IoUTracker, ProbabilitySmoother

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts")
"""Files taken as videos when a folder is given."""

DEFAULT_SMOOTHING = 0.5
"""Seconds: the time constant of each track's probability smoothing (``--smooth``). Measured on
the test videos and in notebook 10: it removes most label flicker while a real change of
expression shows within about half a second."""

CLASSIFIER_THREADS = 1
"""ONNX Runtime threads for the classifier when frames stream (``fer video``, ``fer webcam``): the
detector and the frame decoding keep the other core busy, and a second classifier thread only
competes with them. Measured (benchmarks/bench_video.py, idle 2-core machine, 10 s videos, the
previous FER+ ensemble): 1 thread 41.6 / 32.8 / 24.2 analysed frames per second (640x360 one face
/ 720p two / four faces), 2 threads 36.6 / 22.9 / 14.3."""

REFINE_STEPS = 1
"""Landmark re-measurements per face in video frames (photos: up to ``detection.REFINE_STEPS``).
Each costs a detector run on a 320 px patch; one removes most of YuNet's lag on a tilted head,
and a video has the next frame to correct the rest."""

TRUNCATED_SHARE = 0.98
"""A file that decodes fewer frames than this share of the count its container announces is
reported as ending early (counts are estimates in some containers, so not every missing frame)."""

LEADING_COLUMNS = ("file", "frame", "time_s", "track", "x", "y", "w", "h", "label", "score")
"""The first columns of ``fer video --csv``; the classes' (smoothed) probabilities follow, then
the raw ones (``raw_label``, ``raw_score``, ``raw_<class>``)."""


class FramePredictor(Protocol):
    """What the analyser needs from a :class:`~fer_utils.predict.predictor.Predictor`."""

    classes: tuple[str, ...]
    align: bool

    def predict_arrays(self, faces: Sequence[np.ndarray]) -> np.ndarray: ...


@dataclass
class TrackedFace:
    """One face in one frame: its track, box, smoothed label and probabilities, and the raw ones."""

    track: int
    box: FaceBox
    label: str
    score: float
    probabilities: dict[str, float]
    raw_probabilities: dict[str, float]

    @property
    def raw_label(self) -> str:
        return max(self.raw_probabilities, key=self.raw_probabilities.get)


@dataclass
class FrameResult:
    """The faces of one analysed frame; ``frame`` counts from 0 in the file, ``time_s`` is the
    frame's timestamp in the container."""

    source: str
    frame: int
    time_s: float
    faces: list[TrackedFace]
    width: int
    height: int

    def rows(self) -> list[dict[str, Any]]:
        """One CSV/DataFrame record per face: ``LEADING_COLUMNS``, the classes, the raw values."""
        rows = []
        for f in self.faces:
            row: dict[str, Any] = {
                "file": self.source,
                "frame": self.frame,
                "time_s": round(self.time_s, 4),
                "track": f.track,
                "x": f.box.x,
                "y": f.box.y,
                "w": f.box.w,
                "h": f.box.h,
                "label": f.label,
                "score": round(f.score, 5),
            }
            row.update({c: round(p, 5) for c, p in f.probabilities.items()})
            row["raw_label"] = f.raw_label
            row["raw_score"] = round(f.raw_probabilities[f.raw_label], 5)
            row.update({f"raw_{c}": round(p, 5) for c, p in f.raw_probabilities.items()})
            rows.append(row)
        return rows


def csv_columns(classes: Sequence[str]) -> list[str]:
    """The video CSV's header for these classes."""
    return [*LEADING_COLUMNS, *classes, "raw_label", "raw_score", *(f"raw_{c}" for c in classes)]


class FrameAnalyzer:
    """Detect, classify, track and smooth the faces of one frame after another (videos, the webcam
    loop, the app's camera). ``smooth``: seconds (0: raw probabilities); ``detector``: any object
    with ``detect(gray)`` (and optionally ``refine_landmarks``)."""

    def __init__(
        self,
        predictor: FramePredictor,
        detector: Detector,
        smooth: float = DEFAULT_SMOOTHING,
        max_gap: float = MAX_GAP_SECONDS,
        refine_steps: int = REFINE_STEPS,
    ) -> None:
        self.predictor = predictor
        self.detector = detector
        self.refine_steps = refine_steps
        self.tracker = IoUTracker(max_gap=max_gap)
        self.smoother = ProbabilitySmoother(smooth)

    def warm_up(self) -> FrameAnalyzer:
        """Load the detector and the classifier now (the first call of each loads or exports a
        model), so a live camera's first frames are not seconds apart and do not start new tracks."""
        self.detector.detect(np.zeros((64, 64), np.uint8))
        self.predictor.predict_arrays([np.zeros((48, 48), np.uint8)])
        return self

    def analyze(self, gray: np.ndarray, time_s: float, frame: int = 0, source: str = "") -> FrameResult:
        """The faces of one grayscale frame taken at ``time_s`` seconds, with track ids."""
        boxes = sorted(self.detector.detect(gray), key=lambda b: (b.x, b.y))
        refine = getattr(self.detector, "refine_landmarks", None)
        if self.predictor.align and refine is not None and self.refine_steps:
            boxes = [refine(gray, b, steps=self.refine_steps) for b in boxes]
        crops = [crop_face(gray, b, align=self.predictor.align) for b in boxes]
        raw = self.predictor.predict_arrays(crops) if crops else np.zeros((0, len(self.predictor.classes)))
        ids = self.tracker.update(boxes, time_s)
        self.smoother.forget(self.tracker.active)
        classes = self.predictor.classes
        faces = []
        for box, track, probs in zip(boxes, ids, raw, strict=True):
            smooth = self.smoother.update(track, probs, time_s)
            top = int(np.argmax(smooth))
            faces.append(
                TrackedFace(
                    track,
                    box,
                    classes[top],
                    float(smooth[top]),
                    {c: float(p) for c, p in zip(classes, smooth, strict=True)},
                    {c: float(p) for c, p in zip(classes, probs, strict=True)},
                )
            )
        return FrameResult(source, frame, time_s, faces, gray.shape[1], gray.shape[0])


# --- reading videos -------------------------------------------------------------------------


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


@dataclass
class Frame:
    """A decoded frame: index in the file, timestamp, BGR pixels (None when only grabbed) and
    whether it is one to analyse."""

    index: int
    time_s: float
    image: np.ndarray | None
    selected: bool


def read_frames(capture: Any, info: VideoInfo, selection: FrameSelection, decode_all: bool = False) -> Iterator[Frame]:
    """Frames from ``start`` to ``end``, one at a time. Frames not selected are only grabbed (not
    converted) unless ``decode_all`` (an annotated copy needs every frame). A file whose frames
    carry no timestamps falls back to index / nominal fps; a camera uses the clock."""
    import cv2

    index, next_due, clock0 = -1, selection.start, time.monotonic()
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
        if selection.end is not None and t > selection.end + 1e-6:
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


def prefetched(frames: Iterator[Frame], depth: int = PREFETCH_FRAMES) -> Iterator[Frame]:
    """``frames``, decoded ``depth`` ahead by a background thread. Closing this generator (the end,
    an error, Ctrl-C) stops the thread and waits for it, so the capture can be released safely."""
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


# --- per-track summaries ----------------------------------------------------------------------


@dataclass
class TrackSummary:
    """One person's timeline: when the track was seen, the share of its time per expression (of
    the smoothed label), the dominant one, and the moments the smoothed label changed."""

    source: str
    track: int
    start_s: float
    end_s: float
    frames: int
    shares: dict[str, float]
    dominant: str
    changes: list[tuple[float, str, str]]

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "track": self.track,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "duration_s": round(self.duration_s, 3),
            "frames": self.frames,
            "dominant": self.dominant,
            "shares": {c: round(s, 4) for c, s in self.shares.items()},
            "changes": [{"time_s": round(t, 3), "from": a, "to": b} for t, a, b in self.changes],
        }

    def line(self) -> str:
        """``clip.mp4 track 0: 0.0-12.4 s (372 frames), mostly happy (61 %), 3 changes``."""
        top = sorted(self.shares.items(), key=lambda kv: -kv[1])[:3]
        mix = ", ".join(f"{c} {s:.0%}" for c, s in top if s > 0)
        return (
            f"{self.source} track {self.track}: {self.start_s:.1f}-{self.end_s:.1f} s ({self.frames} frames), "
            f"mostly {self.dominant} ({mix}); {len(self.changes)} label changes"
        )


@dataclass
class _TrackState:
    start: float
    last: float
    label: str
    frames: int = 1
    seconds: dict[str, float] = field(default_factory=dict)
    changes: list[tuple[float, str, str]] = field(default_factory=list)
    step: float = 0.0  # the last interval between two of its frames


class TimelineSummary:
    """Accumulates per-track summaries from frame results as they stream past: a frame's label
    counts for the time until the track's next frame (at most ``max_gap``), the last one for
    the track's last interval. Holds a few numbers per track, not the frames."""

    def __init__(self, classes: Sequence[str], max_gap: float = MAX_GAP_SECONDS) -> None:
        self.classes = tuple(classes)
        self.max_gap = max_gap
        self._tracks: dict[tuple[str, int], _TrackState] = {}

    def add(self, result: FrameResult) -> None:
        for face in result.faces:
            key = (result.source, face.track)
            state = self._tracks.get(key)
            if state is None:
                self._tracks[key] = _TrackState(result.time_s, result.time_s, face.label)
                continue
            step = min(max(result.time_s - state.last, 0.0), self.max_gap)
            state.seconds[state.label] = state.seconds.get(state.label, 0.0) + step
            if face.label != state.label:
                state.changes.append((result.time_s, state.label, face.label))
            state.last, state.label, state.step = result.time_s, face.label, step or state.step
            state.frames += 1

    def summaries(self) -> list[TrackSummary]:
        out = []
        for (source, track), s in sorted(self._tracks.items()):
            seconds = dict(s.seconds)
            seconds[s.label] = seconds.get(s.label, 0.0) + s.step  # the last frame's share
            total = sum(seconds.values())
            shares = {c: (seconds.get(c, 0.0) / total if total > 0 else float(c == s.label)) for c in self.classes}
            out.append(
                TrackSummary(
                    source,
                    track,
                    s.start,
                    s.last + s.step,
                    s.frames,
                    shares,
                    max(shares, key=shares.get),
                    s.changes,
                )
            )
        return out


# --- outputs ----------------------------------------------------------------------------------


class StagedOutput:
    """An output written under a temporary name next to ``path`` and moved into place by
    ``finish(keep=True)``; ``finish(keep=False)`` deletes it, leaving what was at ``path`` before."""

    def __init__(self, path: str | os.PathLike, keep_suffix: bool = False) -> None:
        self.path = Path(path)
        self._context = atomic_path(self.path, keep_suffix=keep_suffix)
        self.tmp = self._context.__enter__()

    def finish(self, keep: bool) -> None:
        if keep:
            self._context.__exit__(None, None, None)
        else:
            dropped = RuntimeError("output dropped")
            self._context.__exit__(type(dropped), dropped, None)


class CsvStream(StagedOutput):
    """Rows written as frames are analysed, flushed every frame. The file appears at its name only
    when ``close`` is called (at the end, or after Ctrl-C with the rows so far): an interrupted run
    leaves a valid CSV; a crash (``close(keep=False)``) leaves the previous file untouched."""

    def __init__(self, path: str | os.PathLike, classes: Sequence[str]) -> None:
        super().__init__(path)
        self._file = self.tmp.open("w", newline="", encoding="utf-8")
        self._writer = SpreadsheetSafeWriter(self._file, fieldnames=csv_columns(classes), lineterminator="\n")
        self._writer.writeheader()
        self.rows = 0

    def write(self, result: FrameResult) -> None:
        rows = result.rows()
        self._writer.writerows(rows)
        self.rows += len(rows)
        self._file.flush()

    def close(self, keep: bool = True) -> None:
        """Move the file into place (``keep``) or drop it (the run failed)."""
        self._file.close()
        self.finish(keep)


TRACK_COLOURS = ((0, 200, 255), (255, 120, 0), (80, 220, 80), (200, 80, 255), (0, 80, 255), (255, 220, 0))
"""BGR colours for track ids (cycled)."""


def draw_tracks(image_bgr: np.ndarray, faces: Iterable[TrackedFace]) -> np.ndarray:
    """``image_bgr`` with each face's box, track id and smoothed label drawn (in place)."""
    import cv2

    scale = max(0.5, image_bgr.shape[1] / 1280)
    for face in faces:
        b, colour = face.box, TRACK_COLOURS[face.track % len(TRACK_COLOURS)]
        cv2.rectangle(image_bgr, (b.x, b.y), (b.x + b.w, b.y + b.h), colour, max(2, round(2 * scale)))
        cv2.putText(
            image_bgr,
            f"#{face.track} {face.label} {face.score:.0%}",
            (b.x, max(int(18 * scale), b.y - 8)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.7 * scale,
            colour,
            max(1, round(2 * scale)),
        )
    return image_bgr


class AnnotatedVideo(StagedOutput):
    """An annotated copy (``--annotate OUT.mp4``): every source frame, at the source frame rate,
    with the boxes, track ids and smoothed labels of the last analysed frame drawn; written under
    a temporary name and moved into place by ``close``."""

    def __init__(self, path: str | os.PathLike, info: VideoInfo) -> None:
        import cv2

        super().__init__(path, keep_suffix=True)
        fps = info.fps if info.fps > 0 else 30.0
        self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (info.width, info.height))
        if not self._writer.isOpened():
            self.finish(keep=False)
            raise FERConfigError(f"{path}: OpenCV cannot write this video format; use a .mp4 or .avi name")
        self.size = (info.width, info.height)

    def write(self, image_bgr: np.ndarray, faces: Iterable[TrackedFace]) -> None:
        import cv2

        if (image_bgr.shape[1], image_bgr.shape[0]) != self.size:
            image_bgr = cv2.resize(image_bgr, self.size)
        self._writer.write(draw_tracks(image_bgr, faces))

    def close(self, keep: bool = True) -> None:
        self._writer.release()
        self.finish(keep)


# --- the analysis loop ------------------------------------------------------------------------


def expand_video_paths(paths: Iterable[str | os.PathLike | int]) -> tuple[list[str | int], list[Skipped]]:
    """Files and cameras given directly, plus the videos inside any folders (recursively, sorted)."""
    found: list[str | int] = []
    skipped: list[Skipped] = []
    for raw in paths:
        if camera_index(raw) is not None:
            found.append(camera_index(raw))
            continue
        path = Path(raw)
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


@dataclass
class VideoRun:
    """How the analysis of one video ended: frames decoded and analysed, and why it stopped
    early, if it did (``truncated``: fewer frames than the container announced)."""

    info: VideoInfo
    decoded: int = 0
    analysed: int = 0
    truncated: bool = False


def analyze_video(
    analyzer: FrameAnalyzer,
    source: str | os.PathLike | int,
    selection: FrameSelection | None = None,
    annotate: AnnotatedVideo | None = None,
    progress: bool = False,
    run: VideoRun | None = None,
) -> Iterator[FrameResult]:
    """Analyse one video, yielding each selected frame's result as soon as it is ready. ``run``
    (optional) is filled in as frames pass: counts, and whether the file ended early."""
    import cv2
    from tqdm.auto import tqdm

    selection = selection or FrameSelection()
    capture, info = open_video(source)
    if run is not None:
        run.info = info
    name = info.source
    bar = tqdm(total=info.frames, desc=Path(name).name, unit="frame", disable=not progress, leave=False)
    last: list[TrackedFace] = []
    decoded = analysed = 0
    try:
        for frame in prefetched(read_frames(capture, info, selection, decode_all=annotate is not None)):
            decoded += 1
            bar.update(1)
            if frame.selected:
                gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
                result = analyzer.analyze(gray, frame.time_s, frame.index, name)
                analysed += 1
                last = result.faces
                if run is not None:
                    run.decoded, run.analysed = decoded, analysed
                yield result
            if annotate is not None:
                annotate.write(frame.image, last)
    finally:
        bar.close()
        capture.release()
    if run is not None:
        run.decoded, run.analysed = decoded, analysed
        whole = not info.camera and selection.start == 0 and selection.end is None
        run.truncated = bool(whole and info.frames and decoded < TRUNCATED_SHARE * info.frames - 1)
    if decoded == 0 and selection.start == 0:
        raise FERDataError(source=name, reason="has no video frames OpenCV can decode (empty or damaged file)")


class VideoResult:
    """What :meth:`Predictor.predict_video` returns: iterate over it for each analysed frame's
    :class:`FrameResult` (decoded, analysed and handed over one at a time). It remembers the frames
    it handed out (``keep_frames``) for :meth:`to_dataframe`, and the per-track summaries."""

    def __init__(self, frames: Iterator[FrameResult], classes: Sequence[str], keep_frames: bool = True) -> None:
        self._frames = frames
        self.classes = tuple(classes)
        self.keep_frames = keep_frames
        self.frames: list[FrameResult] = []
        self.summary = TimelineSummary(self.classes)
        self.finished = False

    def __iter__(self) -> Iterator[FrameResult]:
        for result in self._frames:
            self.summary.add(result)
            if self.keep_frames:
                self.frames.append(result)
            yield result
        self.finished = True

    def run(self) -> VideoResult:
        """Analyse whatever is left of the video; returns self."""
        for _ in self:
            pass
        return self

    def rows(self) -> list[dict[str, Any]]:
        if not self.finished:
            self.run()
        return [row for f in self.frames for row in f.rows()]

    def to_dataframe(self):
        """Every face of every analysed frame as a pandas DataFrame (columns as ``fer video --csv``)."""
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=csv_columns(self.classes))

    def summaries(self) -> list[TrackSummary]:
        if not self.finished:
            self.run()
        return self.summary.summaries()


class JsonStream(StagedOutput):
    """``--json``: the same rows as the CSV, streamed into a ``frames`` list, then the per-track
    summaries; like :class:`CsvStream`, the file appears complete (valid JSON) at ``close``."""

    def __init__(self, path: str | os.PathLike, classes: Sequence[str], model: str) -> None:
        super().__init__(path)
        self._file = self.tmp.open("w", encoding="utf-8")
        self._file.write(
            finite_json({"classes": list(classes), "checkpoint": model}, indent=None)[:-1] + ', "rows": [\n'
        )
        self.rows = 0

    def write(self, result: FrameResult) -> None:
        for row in result.rows():
            self._file.write(("" if self.rows == 0 else ",\n") + finite_json(row, indent=None))
            self.rows += 1
        self._file.flush()

    def close(self, summaries: Sequence[TrackSummary], keep: bool = True) -> None:
        self._file.write('\n], "tracks": ' + finite_json([s.to_dict() for s in summaries], indent=1) + "}\n")
        self._file.close()
        self.finish(keep)


class TimelineSeries:
    """Each track's smoothed probabilities over time, kept compactly (float32) for the timeline plot."""

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = tuple(classes)
        self._series: dict[tuple[str, int], tuple[list[float], list[np.ndarray]]] = {}

    def add(self, result: FrameResult) -> None:
        for face in result.faces:
            times, probs = self._series.setdefault((result.source, face.track), ([], []))
            times.append(result.time_s)
            probs.append(np.array([face.probabilities[c] for c in self.classes], dtype=np.float32))

    def tracks(self) -> list[tuple[str, int, np.ndarray, np.ndarray]]:
        """(file, track, times, probabilities) per track, longest first."""
        out = [(src, trk, np.array(t), np.stack(p)) for (src, trk), (t, p) in self._series.items()]
        return sorted(out, key=lambda item: -(item[2][-1] - item[2][0]))


PLOT_MAX_TRACKS = 6
"""The timeline plot shows at most this many tracks (the longest); the CSV has them all."""


def timeline_figure(series: TimelineSeries, max_tracks: int = PLOT_MAX_TRACKS):
    """One panel per track (the longest ``max_tracks``): its smoothed probabilities over time,
    stacked, so the dominant expression at each moment is the widest band. Needs matplotlib."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise FERConfigError("the timeline plot needs matplotlib: pip install matplotlib") from None
    tracks = series.tracks()[:max_tracks]
    if not tracks:
        raise FERDataError("no face was found in the video, so there is no timeline to plot")
    fig, axes = plt.subplots(len(tracks), 1, figsize=(10, 1.9 * len(tracks) + 0.8), squeeze=False, sharex=False)
    colours = plt.get_cmap("tab10").colors
    for ax, (source, track, times, probs) in zip(axes[:, 0], tracks, strict=True):
        ax.stackplot(times, probs.T, labels=series.classes, colors=colours[: len(series.classes)], step="post")
        ax.set_xlim(times[0], max(times[-1], times[0] + 1e-3))
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability")
        ax.set_title(f"{Path(source).name}, track {track}", fontsize=10, loc="left")
    axes[-1, 0].set_xlabel("time (s)")
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    hidden = len(series.tracks()) - len(tracks)
    if hidden > 0:
        fig.suptitle(f"the {len(tracks)} longest tracks; {hidden} shorter ones are in the CSV", fontsize=10)
    fig.tight_layout()
    return fig


@dataclass
class VideoReport:
    """What :func:`analyze_videos` did: per-video runs, skipped inputs, per-track summaries, rows
    written, and whether Ctrl-C stopped it (and where)."""

    runs: list[VideoRun] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    summaries: list[TrackSummary] = field(default_factory=list)
    rows: int = 0
    interrupted: str | None = None
    notes: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    """The outputs that exist at their names because this run wrote them (a plot of no tracks is not)."""


def analyze_videos(
    make_analyzer: Callable[[], FrameAnalyzer],
    sources: Sequence[str | int],
    selection: FrameSelection,
    model: str = "",
    csv_path: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    annotate_path: str | os.PathLike | None = None,
    plot_path: str | os.PathLike | None = None,
    progress: bool = False,
    on_frame: Callable[[FrameResult], None] | None = None,
) -> VideoReport:
    """Analyse ``sources`` one after another (a fresh tracker each), streaming rows to the CSV and
    JSON outputs; the CLI and the app run this. A source that is not a readable video is skipped
    with its reason. Ctrl-C stops cleanly: every row so far is kept in valid CSV/JSON files and
    ``interrupted`` says where it stopped. Outputs appear whole, at their names, at the end; an
    error that stops the run leaves whatever was at those names before."""
    report = VideoReport()
    readable = []
    _refuse_repeats(sources)
    for source in sources:
        try:
            open_video(source)[0].release()
            readable.append(source)
        except FERDataError as err:
            report.skipped.append(Skipped(err.source or str(source), err.reason))
    if not readable:
        raise FERDataError("; ".join(f"{s.source}: {s.reason}" for s in report.skipped[:3]) or "no video given")
    if annotate_path is not None and len(readable) != 1:
        raise FERConfigError(f"--annotate writes one video; got {len(readable)} inputs")
    analyzer = make_analyzer()
    classes = analyzer.predictor.classes
    summary, series = TimelineSummary(classes), TimelineSeries(classes) if plot_path else None
    csv_out = CsvStream(csv_path, classes) if csv_path else None
    json_out = JsonStream(json_path, classes, model) if json_path else None
    annotated = None
    where = ""
    failed = True  # until the loop ends or Ctrl-C stops it: a crash must not replace earlier outputs
    try:
        for source in readable:
            if annotate_path is not None:
                annotated = AnnotatedVideo(annotate_path, open_video(source)[1])
            run = VideoRun(VideoInfo(str(source), 0, 0, 0.0, None))
            report.runs.append(run)
            analyzer = make_analyzer()  # each video starts with new tracks
            try:
                for result in analyze_video(analyzer, source, selection, annotated, progress, run):
                    where = f"{result.source} frame {result.frame} ({result.time_s:.2f} s)"
                    summary.add(result)
                    if series is not None:
                        series.add(result)
                    for out in (csv_out, json_out):
                        if out is not None:
                            out.write(result)
                    report.rows += len(result.faces)
                    if on_frame is not None:
                        on_frame(result)
            except FERDataError as err:
                report.skipped.append(Skipped(str(source), err.reason))
        failed = False
    except KeyboardInterrupt:
        report.interrupted = where or "before the first frame"
        failed = False
    finally:
        report.summaries = summary.summaries()
        if csv_out is not None:
            csv_out.close(keep=not failed)
        if json_out is not None:
            json_out.close(report.summaries, keep=not failed)
        if annotated is not None:
            annotated.close(keep=not failed)
        if not failed:
            report.written += [str(p) for p in (csv_path, json_path) if p is not None]
            report.written += [str(annotate_path)] if annotated is not None else []
    analysed = sum(r.analysed for r in report.runs)
    if not analysed and not report.interrupted and report.skipped:
        raise FERDataError("; ".join(f"{s.source}: {s.reason}" for s in report.skipped[:3]))
    if plot_path and series is not None and series.tracks():
        fig = timeline_figure(series)
        with atomic_path(plot_path, keep_suffix=True) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        report.written.append(str(plot_path))
    elif plot_path:
        report.notes.append(f"no plot written to {plot_path}: no face was tracked")
    return report


def _refuse_repeats(sources: Sequence[str | int]) -> None:
    """A video named twice (directly, through a link, or also inside a named folder) would be read
    twice into one set of track ids; refuse it instead, naming both."""
    seen: dict[Any, str | int] = {}
    for source in sources:
        key: Any = source if isinstance(source, int) else Path(source).resolve()
        if key in seen:
            raise FERConfigError(
                f"{source}: named twice (also as {seen[key]}); give each video once (a folder already includes its videos)"
            )
        seen[key] = source
