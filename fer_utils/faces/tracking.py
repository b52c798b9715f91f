"""Following faces from frame to frame, and smoothing each face's probabilities over time.

A video gives a list of boxes per frame; which box is which person is not known. The tracker
keeps the boxes it saw last, scores every (track, new box) pair by their overlap (IoU,
intersection over union) and lets SciPy's Hungarian solver (``linear_sum_assignment``) pick the
pairing with the largest total overlap. A box left over starts a new track; a track that finds no
box keeps its id for ``max_gap`` seconds and at least two analysed frames (a blink of the
detector, a hand in front of the face), then ends. Ids are never reused.

Labels flicker because each frame is classified on its own. :class:`ProbabilitySmoother` keeps
an exponential moving average of each track's probabilities with a time constant in seconds, so
the weight of a frame depends on the time since the last one (videos with a variable frame rate,
or analysed every Nth frame, are smoothed the same way). The price is lag: a change of expression
shows after about one time constant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fer_utils.core.errors import FERConfigError
from fer_utils.faces.detection import FaceBox

MIN_IOU = 0.2
"""A box continues a track only if it overlaps the track's last box at least this much. Faces
move a fraction of their width between analysed frames; someone else's face in the next frame
rarely overlaps this much."""

MAX_GAP_SECONDS = 1.0
"""A track that finds no box keeps its id this long (detector misses, brief occlusions)..."""

MIN_MISSED_FRAMES = 2
"""... and for at least this many analysed frames without it: when frames are analysed slowly (a
live camera on a slow machine, ``--fps 0.5``), a face seen in consecutive analysed frames keeps its
id however much time passed between them."""


def iou_matrix(a: Sequence[FaceBox], b: Sequence[FaceBox]) -> np.ndarray:
    """Intersection over union of every box in ``a`` with every box in ``b``: shape (len(a), len(b))."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    boxes_a = np.array([(f.x, f.y, f.x + f.w, f.y + f.h) for f in a], dtype=np.float64)
    boxes_b = np.array([(f.x, f.y, f.x + f.w, f.y + f.h) for f in b], dtype=np.float64)
    left = np.maximum(boxes_a[:, None, 0], boxes_b[None, :, 0])
    top = np.maximum(boxes_a[:, None, 1], boxes_b[None, :, 1])
    right = np.minimum(boxes_a[:, None, 2], boxes_b[None, :, 2])
    bottom = np.minimum(boxes_a[:, None, 3], boxes_b[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def match_boxes(
    previous: Sequence[FaceBox], current: Sequence[FaceBox], min_iou: float = MIN_IOU
) -> list[tuple[int, int]]:
    """Pairs (i, j): box ``previous[i]`` continues as ``current[j]``, chosen to maximize the total
    IoU (Hungarian assignment); pairs overlapping less than ``min_iou`` are left unmatched."""
    from scipy.optimize import linear_sum_assignment

    overlap = iou_matrix(previous, current)
    if not overlap.size:
        return []
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    return [(int(i), int(j)) for i, j in zip(rows, cols, strict=True) if overlap[i, j] >= min_iou]


@dataclass
class _Track:
    id: int
    box: FaceBox
    last_seen: float
    missed: int = 0  # analysed frames since it was last seen


@dataclass
class IoUTracker:
    """Give every box a track id that follows the face across frames (see the module's text).

    ``update(boxes, time_s)`` returns one id per box, in the boxes' order."""

    min_iou: float = MIN_IOU
    max_gap: float = MAX_GAP_SECONDS
    _tracks: list[_Track] = field(default_factory=list)
    _next_id: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.min_iou <= 1:
            raise FERConfigError(f"min_iou must be in (0, 1], got {self.min_iou}")
        if self.max_gap < 0:
            raise FERConfigError(f"max_gap must be >= 0 seconds, got {self.max_gap}")

    def update(self, boxes: Sequence[FaceBox], time_s: float) -> list[int]:
        self._tracks = [t for t in self._tracks if time_s - t.last_seen <= self.max_gap or t.missed < MIN_MISSED_FRAMES]
        ids: list[int | None] = [None] * len(boxes)
        for track in self._tracks:
            track.missed += 1
        for i, j in match_boxes([t.box for t in self._tracks], boxes, self.min_iou):
            track = self._tracks[i]
            track.box, track.last_seen, track.missed = boxes[j], time_s, 0
            ids[j] = track.id
        for j, box in enumerate(boxes):
            if ids[j] is None:
                self._tracks.append(_Track(self._next_id, box, time_s))
                ids[j] = self._next_id
                self._next_id += 1
        return [int(i) for i in ids]  # every box has an id by now

    @property
    def seen_last(self) -> list[FaceBox]:
        """The boxes of the tracks found in the last update (the faces to look for next)."""
        return [t.box for t in self._tracks if t.missed == 0]

    @property
    def active(self) -> list[int]:
        """Ids of the tracks still alive (seen within ``max_gap`` of the last update)."""
        return [t.id for t in self._tracks]


@dataclass
class ProbabilitySmoother:
    """Exponential moving average of each track's probabilities, with time constant ``seconds``
    (0: no smoothing). A track's first frame is taken as is; a frame ``dt`` seconds after the last
    one gets weight ``1 - exp(-dt / seconds)``."""

    seconds: float = 0.5
    _state: dict[int, tuple[np.ndarray, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.seconds >= 0 and math.isfinite(self.seconds)):
            raise FERConfigError(f"smoothing must be a number of seconds >= 0, got {self.seconds}")

    def update(self, track: int, probabilities: np.ndarray, time_s: float) -> np.ndarray:
        probabilities = np.asarray(probabilities, dtype=np.float64)
        previous = self._state.get(track)
        if previous is None or self.seconds == 0:
            smoothed = probabilities
        else:
            value, last = previous
            weight = 1.0 - math.exp(-max(time_s - last, 0.0) / self.seconds)
            smoothed = value + weight * (probabilities - value)
        self._state[track] = (smoothed, time_s)
        return smoothed

    def forget(self, keep: Sequence[int]) -> None:
        """Drop the state of tracks not in ``keep`` (ended tracks), so memory stays flat."""
        keep = set(keep)
        self._state = {k: v for k, v in self._state.items() if k in keep}
