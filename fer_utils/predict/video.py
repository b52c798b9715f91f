"""Expressions over time: videos and cameras, faces tracked and smoothed, one frame at a time.

``analyze_video`` (what ``Predictor.predict_video`` and ``fer video`` run) decodes a frame,
finds and classifies its faces, gives each face a track id (:mod:`fer_utils.faces.tracking`), smooths
each track's probabilities over time and hands the frame's result on before decoding the next,
so memory stays flat whatever the video's length. Times come from the container's timestamps
(variable frame rates included); rotation metadata of phone videos is applied by OpenCV.

The webcam loop and the app's camera use the same :class:`FrameAnalyzer`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fer_utils.core.errors import FERConfigError, FERDataError
from fer_utils.data.images import Skipped
from fer_utils.faces.detection import Detector, FaceBox
from fer_utils.faces.tracking import MAX_GAP_SECONDS, MIN_IOU, IoUTracker, ProbabilitySmoother, iou_matrix
from fer_utils.predict.classifier import class_dict, classified_crops, located_faces
from fer_utils.predict.frames import (
    Frame,
    FrameSelection,
    VideoInfo,
    check_video_options,
    open_video,
    prefetched,
    read_frames,
)
from fer_utils.predict.parquet import ParquetRun
from fer_utils.predict.timeline import (
    FrameResult,
    TimelineSummary,
    TrackedFace,
    TrackSummary,
    csv_columns,
)
from fer_utils.predict.video_outputs import AnnotatedVideo, VideoOutputs

DEFAULT_SMOOTHING = 0.5
"""Seconds: the time constant of each track's probability smoothing (``--smooth``). Measured on
the test videos and in notebook 10: it removes most label flicker while a real change of
expression shows within about half a second."""

CLASSIFIER_THREADS = 1
"""ONNX Runtime threads for the classifier when frames stream (``fer video``, ``fer webcam``): the
detector and the frame decoding keep the other core busy, and a second classifier thread only
competes with them: one thread analyses more frames per second (benchmarks/bench_video.py;
docs/pipeline.md)."""

REFINE_STEPS = 1
"""Landmark re-measurements per face in video frames (photos: up to ``detection.REFINE_STEPS``).
Each costs a detector run on a 320 px patch; one removes most of YuNet's lag on a tilted head,
and a video has the next frame to correct the rest."""

DETECT_INTERVAL = 0.2
"""Seconds between searches of the whole frame for faces (``--detect-interval``). In the frames
between, each face seen in the last frame is followed: one detector run on a levelled patch
around where it was (:meth:`YuNetDetector.follow`), which also measures its landmarks, at a
fraction of a whole-frame search and refinement. A face that is not found again where it was (it
left, turned away, or moved more than its own size) makes that frame a full search, and so does
each frame with no face to follow or a track that missed its face; a new face beside those
followed is found at the next search, at most this late. 0 searches every analysed frame;
frames analysed further apart than this (``--fps 4``) are each searched whole.
benchmarks/bench_scale.py measures the cost and the agreement with searching every frame."""

FOLLOW_SIDE = 192
"""Side in px of the patch on which a face is followed between searches (the face spans half of
it): large enough that YuNet places the box and landmarks as a search does, small enough to cost
a fraction of it (benchmarks/bench_scale.py)."""

OPENCV_THREADS = 1
"""OpenCV's own thread pool while a video is analysed: decoding, locating faces and classifying
them already run in three threads of their own, and a pool beside them mostly spins (one thread
analyses as many frames per second at less CPU time per frame; benchmarks/bench_scale.py)."""

TRUNCATED_SHARE = 0.98
"""A file that decodes fewer frames than this share of the count its container announces is
reported as ending early (counts are estimates in some containers, so not every missing frame)."""


class FramePredictor(Protocol):
    """What the analyser needs from a :class:`~fer_utils.predict.predictor.Predictor`."""

    classes: tuple[str, ...]
    align: bool

    def predict_arrays(self, faces: Sequence[np.ndarray]) -> np.ndarray: ...


@dataclass
class Located:
    """One frame's faces before classification: boxes, their track ids, and the tracks alive."""

    boxes: list[FaceBox]
    ids: list[int]
    active: list[int]


class FrameAnalyzer:
    """Detect, classify, track and smooth the faces of one frame after another (videos, the webcam
    loop, the app's camera). ``smooth``: seconds (0: raw probabilities); ``detector``: any object
    with ``detect(gray)`` (and optionally ``refine_landmarks(gray, box, steps)`` and
    ``follow(gray, box, side)``, as :class:`YuNetDetector`); ``detect_interval``: seconds between
    whole-frame searches (see ``DETECT_INTERVAL``).

    :meth:`analyze` is :meth:`locate` then :meth:`classify`; a video runs the two in separate
    threads, one frame apart (each keeps its own state: the tracker, the smoother)."""

    def __init__(
        self,
        predictor: FramePredictor,
        detector: Detector,
        smooth: float = DEFAULT_SMOOTHING,
        max_gap: float = MAX_GAP_SECONDS,
        refine_steps: int = REFINE_STEPS,
        detect_interval: float = DETECT_INTERVAL,
    ) -> None:
        check_video_options(smooth, detect_interval=detect_interval)
        self.predictor = predictor
        self.detector = detector
        self.refine_steps = refine_steps
        self.detect_interval = detect_interval
        self.tracker = IoUTracker(max_gap=max_gap)
        self.smoother = ProbabilitySmoother(smooth)
        self.searches = 0
        """Whole-frame searches so far (the other analysed frames followed their faces)."""
        self._searched_at: float | None = None

    def warm_up(self) -> FrameAnalyzer:
        """Load the detector and the classifier now (the first call of each loads or exports a
        model), so a live camera's first frames are not seconds apart and do not start new tracks."""
        self.detector.detect(np.zeros((64, 64), np.uint8))
        self.predictor.predict_arrays([np.zeros((48, 48), np.uint8)])
        return self

    def _refine(self, gray: np.ndarray, box: FaceBox) -> FaceBox:
        refine = getattr(self.detector, "refine_landmarks", None)
        return box if refine is None else refine(gray, box, steps=self.refine_steps)

    def _followed(self, gray: np.ndarray, time_s: float) -> list[FaceBox] | None:
        """The faces of the last frame found again near where they were, or None when this frame
        is to be searched whole (a search is due, the detector cannot follow, or a face was lost)."""
        follow = getattr(self.detector, "follow", None)
        last = self._searched_at
        seen = self.tracker.seen_last
        if follow is None or last is None or not 0 <= time_s - last < self.detect_interval:
            return None
        if not seen or len(seen) < len(self.tracker.active):  # no face to follow, or one missed last time
            return None
        boxes = []
        for box in seen:
            found = follow(gray, box, FOLLOW_SIDE)
            if found is None or iou_matrix([box], [found])[0, 0] < MIN_IOU:
                return None
            boxes.append(found)
        return sorted(boxes, key=lambda box: (box.x, box.y))

    def locate(self, gray: np.ndarray, time_s: float) -> Located:
        """Where the faces of one grayscale frame taken at ``time_s`` seconds are, with track ids."""
        boxes = self._followed(gray, time_s)
        if boxes is None:
            refine = self._refine if self.refine_steps else None
            boxes = located_faces(gray, self.detector.detect, refine, self.predictor.align)
            self._searched_at, self.searches = time_s, self.searches + 1
        ids = self.tracker.update(boxes, time_s)
        return Located(boxes, ids, self.tracker.active)

    def classify(
        self, gray: np.ndarray, located: Located, time_s: float, frame: int = 0, source: str = ""
    ) -> FrameResult:
        """The located faces classified, each track's probabilities smoothed over time."""
        _, raw = classified_crops(gray, located.boxes, self.predictor.predict_arrays, self.predictor.align)
        self.smoother.forget(located.active)
        classes = self.predictor.classes
        faces = []
        for box, track, probs in zip(located.boxes, located.ids, raw, strict=True):
            smooth = self.smoother.update(track, probs, time_s)
            top = int(np.argmax(smooth))
            label, score = classes[top], float(smooth[top])
            faces.append(TrackedFace(track, box, label, score, class_dict(classes, smooth), class_dict(classes, probs)))
        return FrameResult(source, frame, time_s, faces, gray.shape[1], gray.shape[0])

    def analyze(self, gray: np.ndarray, time_s: float, frame: int = 0, source: str = "") -> FrameResult:
        """The faces of one grayscale frame taken at ``time_s`` seconds, with track ids."""
        return self.classify(gray, self.locate(gray, time_s), time_s, frame, source)


# --- reading videos -------------------------------------------------------------------------


# --- per-track summaries ----------------------------------------------------------------------


# --- outputs ----------------------------------------------------------------------------------


# --- the analysis loop ------------------------------------------------------------------------


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
    until: float | None = None,
) -> Iterator[FrameResult]:
    """Analyse one video, yielding each selected frame's result as soon as it is ready. ``run``
    (optional) is filled in as frames pass: counts, and whether the file ended early. ``until``:
    stop before this many seconds (a part of a video, which the next part continues)."""
    import cv2
    from tqdm.auto import tqdm

    selection = selection or FrameSelection()
    capture, info = open_video(source)
    if not info.camera and info.duration is not None and selection.start >= info.duration:
        capture.release()  # nothing to analyse: said as for an unreadable video, and never recorded as done
        raise FERDataError(
            source=info.source, reason=f"--start {selection.start:g} s is past its end ({info.duration:.2f} s)"
        )
    if run is not None:
        run.info = info
    name = info.source
    bar = tqdm(total=info.frames, desc=Path(name).name, unit="frame", disable=not progress, leave=False)
    last: list[TrackedFace] = []
    decoded = analysed = 0
    frames = prefetched(read_frames(capture, info, selection, decode_all=annotate is not None, until=until))
    threads = cv2.getNumThreads()
    cv2.setNumThreads(OPENCV_THREADS)
    try:
        for frame, gray, located in prefetched(_located(analyzer, frames)):
            decoded += 1
            bar.update(1)
            if located is not None:
                result = analyzer.classify(gray, located, frame.time_s, frame.index, name)
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
        cv2.setNumThreads(threads)
    if run is not None:
        run.decoded, run.analysed = decoded, analysed
        whole = not info.camera and selection.start == 0 and selection.end is None and until is None
        run.truncated = bool(whole and info.frames and decoded < TRUNCATED_SHARE * info.frames - 1)
    if decoded == 0 and selection.start == 0:
        raise FERDataError(source=name, reason="has no video frames OpenCV can decode (empty or damaged file)")


def _located(analyzer: FrameAnalyzer, frames: Iterator[Frame]) -> Iterator[tuple[Frame, Any, Located | None]]:
    """Each frame with, when selected, its grayscale pixels and located faces: the first half of
    the analysis, run a frame ahead of the classifier in a thread of its own."""
    import cv2

    for frame in frames:
        if not frame.selected:
            yield frame, None, None
            continue
        gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
        yield frame, gray, analyzer.locate(gray, frame.time_s)


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
    resumed: list[str] = field(default_factory=list)
    """Videos skipped because an earlier run's Parquet output for them is there and verifies."""
    changed: list[str] = field(default_factory=list)
    """Videos analysed again because they changed since the earlier run's Parquet output."""
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
    parquet: ParquetRun | None = None,
) -> VideoReport:
    """Analyse ``sources`` one after another (a fresh tracker each), streaming rows to the CSV and
    JSON outputs; the CLI and the app run this. A source that is not a readable video is skipped
    with its reason. Ctrl-C stops cleanly: every row so far is kept in valid CSV/JSON files and
    ``interrupted`` says where it stopped. Outputs appear whole, at their names, at the end; an
    error that stops the run leaves whatever was at those names before. ``parquet``: one file per
    video as each ends; videos already done there are skipped (``report.resumed``)."""
    report = VideoReport()
    if not (sources := _not_done(sources, parquet, report)):
        return report
    readable = _readable(sources, report)
    if annotate_path is not None and len(readable) != 1:
        raise FERConfigError(f"--annotate writes one video; got {len(readable)} inputs")
    classes = make_analyzer().predictor.classes
    summary = TimelineSummary(classes)
    outputs = VideoOutputs(classes, model, csv_path, json_path, annotate_path, plot_path, parquet)
    where, failed = "", True  # failed until the loop ends or a stop: a crash must not replace earlier outputs
    try:
        for source, info in readable:
            run = VideoRun(VideoInfo(str(source), 0, 0, 0.0, None))
            report.runs.append(run)
            try:  # each video starts with new tracks
                for result in analyze_video(make_analyzer(), source, selection, outputs.start(info), progress, run):
                    where = f"{result.source} frame {result.frame} ({result.time_s:.2f} s)"
                    summary.add(result)
                    outputs.write(result)
                    report.rows += len(result.faces)
                    if on_frame is not None:
                        on_frame(result)
                outputs.video_done(source)
            except FERDataError as err:
                report.skipped.append(Skipped(str(source), err.reason))
        failed = False
    except KeyboardInterrupt:
        report.interrupted, failed = where or "before the first frame", False
    finally:
        report.summaries = summary.summaries()
        report.written = outputs.close(report.summaries, keep=not failed)
    if not sum(r.analysed for r in report.runs) and not report.interrupted and report.skipped:
        raise FERDataError("; ".join(f"{s.source}: {s.reason}" for s in report.skipped[:3]))
    if (plot := outputs.write_plot()) is not None:
        report.written.append(plot)
    elif plot_path:
        report.notes.append(f"no plot written to {plot_path}: no face was tracked")
    return report


def _not_done(sources: Sequence[str | int], parquet: ParquetRun | None, report: VideoReport) -> list[str | int]:
    """The sources still to analyse: all of them, or (with Parquet outputs) those not done."""
    if parquet is None:
        return list(sources)
    if any(isinstance(s, int) for s in sources):
        raise FERConfigError("Parquet outputs are per video file; a camera has no end to write them at")
    todo, report.resumed, report.changed = parquet.plan(sources)
    return list(todo)


def _readable(sources: Sequence[str | int], report: VideoReport) -> list[tuple[str | int, VideoInfo]]:
    """The sources that open as videos, with what they say about themselves; the others go to
    ``report.skipped`` with their reason. Refuses a video named twice."""
    _refuse_repeats(sources)
    readable = []
    for source in sources:
        try:
            capture, info = open_video(source)
            capture.release()
            readable.append((source, info))
        except FERDataError as err:
            report.skipped.append(Skipped(err.source or str(source), err.reason))
    if not readable:
        raise FERDataError("; ".join(f"{s.source}: {s.reason}" for s in report.skipped[:3]) or "no video given")
    return readable


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
