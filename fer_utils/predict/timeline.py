"""Faces over time: a tracked face and a frame's result (and their CSV rows), each track's
summary (how long, which expressions, when they changed) and its series for the timeline plot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fer_utils.core.schema import raw_probability_column, video_columns
from fer_utils.faces.detection import FaceBox
from fer_utils.faces.results import face_columns
from fer_utils.faces.tracking import MAX_GAP_SECONDS


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
        """One record per face in the result schema's video columns (:mod:`fer_utils.core.schema`):
        smoothed label and probabilities, then the raw ones."""
        rows = []
        for f in self.faces:
            row: dict[str, Any] = {"file": self.source, "frame": self.frame, "time_s": round(self.time_s, 4)}
            row["track"] = f.track
            row.update(face_columns(f.box, f.label, f.score, f.probabilities))
            row["raw_label"] = f.raw_label
            row["raw_score"] = round(f.raw_probabilities[f.raw_label], 5)
            row.update({raw_probability_column(c): round(p, 5) for c, p in f.raw_probabilities.items()})
            rows.append(row)
        return rows


def csv_columns(classes: Sequence[str]) -> list[str]:
    """The video CSV's header for these classes (the schema's video columns)."""
    return video_columns(classes)


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
