"""What ``fer video`` writes: the CSV and JSON rows streamed as frames are analysed, an annotated
copy of the video and the timeline plot. Each is written under a temporary name and moved into
place whole (``StagedOutput``), so a stop keeps valid files and a crash leaves earlier ones."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from fer_utils.core.atomic import atomic_path
from fer_utils.core.errors import FERConfigError, FERDataError
from fer_utils.faces.results import SpreadsheetSafeWriter, finite_json
from fer_utils.predict.frames import VideoInfo
from fer_utils.predict.parquet import ParquetRun
from fer_utils.predict.timeline import FrameResult, TimelineSeries, TrackedFace, TrackSummary, csv_columns


class StagedOutput:
    """One interface for every writer of a run: written under a temporary name next to ``path``,
    fed as frames are analysed (``write``), then ``close(summaries, keep)``: the file is completed
    (the JSON's track summaries) and moved into place (``keep``), or deleted, leaving what was at
    ``path`` before (the run failed)."""

    def __init__(self, path: str | os.PathLike, keep_suffix: bool = False) -> None:
        self.path = Path(path)
        self._context = atomic_path(self.path, keep_suffix=keep_suffix)
        self.tmp = self._context.__enter__()

    def close(self, summaries: Sequence[TrackSummary] = (), keep: bool = True) -> None:
        """Complete the file with the run's track ``summaries``, then keep it or drop it."""
        self._complete(summaries)
        self.finish(keep)

    def _complete(self, summaries: Sequence[TrackSummary]) -> None:
        """Write what ends the file and release it (each writer its own)."""

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

    def _complete(self, summaries: Sequence[TrackSummary]) -> None:
        self._file.close()


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

    def _complete(self, summaries: Sequence[TrackSummary]) -> None:
        self._writer.release()


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

    def _complete(self, summaries: Sequence[TrackSummary]) -> None:
        self._file.write('\n], "tracks": ' + finite_json([s.to_dict() for s in summaries], indent=1) + "}\n")
        self._file.close()


ROW_WRITERS: dict[str, Callable[[str | os.PathLike, Sequence[str], str], StagedOutput]] = {
    "csv": lambda path, classes, model: CsvStream(path, classes),
    "json": JsonStream,
}
"""The writers of a video's rows, by output (``--csv``, ``--json``): each is made from (path,
classes, model name), takes every analysed frame (``write``) and ends with ``close(summaries, keep)``."""


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


class VideoOutputs:
    """Every output of one ``fer video`` run, driven as one: each analysed frame goes to every
    streaming writer (CSV, JSON, the timeline's series), the annotated copy opens per video, and
    at the end all are kept (moved into place) or all dropped."""

    def __init__(
        self,
        classes: Sequence[str],
        model: str = "",
        csv_path: str | os.PathLike | None = None,
        json_path: str | os.PathLike | None = None,
        annotate_path: str | os.PathLike | None = None,
        plot_path: str | os.PathLike | None = None,
        parquet: ParquetRun | None = None,
    ) -> None:
        self.annotate_path, self.plot_path = annotate_path, plot_path
        self.parquet, self.columns, self._rows = parquet, csv_columns(classes), []
        paths = {"csv": csv_path, "json": json_path}
        self.streams = [ROW_WRITERS[kind](path, classes, model) for kind, path in paths.items() if path]
        self.series = TimelineSeries(classes) if plot_path else None
        self.annotated: AnnotatedVideo | None = None

    def start(self, info: VideoInfo) -> AnnotatedVideo | None:
        """A video begins: the annotated copy (of one video only) opens at its size and frame rate."""
        self._rows = []
        if self.annotate_path is not None:
            self.annotated = AnnotatedVideo(self.annotate_path, info)
        return self.annotated

    def write(self, result: FrameResult) -> None:
        for stream in self.streams:
            stream.write(result)
        if self.series is not None:
            self.series.add(result)
        if self.parquet is not None:
            self._rows += result.rows()

    def video_done(self, source: str | os.PathLike) -> None:
        """A video was analysed to its end: its Parquet file is written whole and recorded."""
        if self.parquet is not None:
            self.parquet.write([source], self._rows, Path(source).stem, self.columns)
            self._rows = []

    def close(self, summaries: Sequence[TrackSummary], keep: bool) -> list[str]:
        """Move every streamed output into place (``keep``) or drop them all; the paths written."""
        outputs = [*self.streams, *([self.annotated] if self.annotated is not None else [])]
        for output in outputs:
            output.close(summaries, keep)
        return [str(output.path) for output in outputs] if keep else []

    def write_plot(self) -> str | None:
        """The timeline plot, when one was asked for and a face was tracked: its path, else None."""
        if self.plot_path is None or self.series is None or not self.series.tracks():
            return None
        fig = timeline_figure(self.series)
        with atomic_path(self.plot_path, keep_suffix=True) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        return str(self.plot_path)
