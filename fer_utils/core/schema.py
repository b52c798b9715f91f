"""One result schema for photos, videos and Parquet collections: the same column for the same
thing wherever a face is reported (``ImageResult.to_dataframe()``, ``VideoResult.to_dataframe()``,
``fer predict --csv``, ``fer video --csv`` and ``--parquet``), so one analysis reads them all.

    photos  file, face,                  box_x, box_y, box_w, box_h, detection_score, label, score, p_<class>...
    videos  file, frame, time_s, track,  box_x, box_y, box_w, box_h, detection_score, label, score, p_<class>...,
            raw_label, raw_score, raw_p_<class>...   (before smoothing)

Boxes are in the image's own pixels; ``detection_score`` is the detector's confidence (empty when
the whole image was taken as the face); ``label``/``score`` are the top class and its probability.
"""

from __future__ import annotations

from collections.abc import Sequence

BOX_COLUMNS = ("box_x", "box_y", "box_w", "box_h")
PHOTO_KEYS = ("file", "face")
"""Which face a photo row is: the file, and the face's number in it (left to right)."""
VIDEO_KEYS = ("file", "frame", "time_s", "track")
"""Which face a video row is: the file, the frame (from 0), its time in seconds, the person's track."""
FACE_COLUMNS = (*BOX_COLUMNS, "detection_score", "label", "score")

TEXT_COLUMNS = frozenset({"file", "input", "label", "raw_label", "reason"})
INTEGER_COLUMNS = frozenset({"face", "frame", "track", *BOX_COLUMNS})
"""Every other column (times, scores, probabilities) is a float, in every file of a run."""


def probability_column(name: str) -> str:
    """The column of one class's probability: ``p_happy``."""
    return f"p_{name}"


def raw_probability_column(name: str) -> str:
    """A video's probability of one class before smoothing: ``raw_p_happy``."""
    return f"raw_p_{name}"


def photo_columns(classes: Sequence[str]) -> list[str]:
    """The columns of photo results for a model with these classes."""
    return [*PHOTO_KEYS, *FACE_COLUMNS, *map(probability_column, classes)]


def video_columns(classes: Sequence[str]) -> list[str]:
    """The columns of video results: the photo columns' meaning, keyed by frame and track, with the
    raw (unsmoothed) label and probabilities after them."""
    raw = ["raw_label", "raw_score", *map(raw_probability_column, classes)]
    return [*VIDEO_KEYS, *FACE_COLUMNS, *map(probability_column, classes), *raw]
