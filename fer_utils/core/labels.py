"""The one place that knows class names and every dataset's numbering of them.

Canonical order (index = model output): angry, disgust, fear, happy, neutral, sad, surprise.
Every loader converts its dataset's numbering to these indices here, nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from fer_utils.core.errors import FERDataError

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
"""The seven canonical classes, in model-output order."""

CONTEMPT = "contempt"
EMOTIONS_WITH_CONTEMPT: tuple[str, ...] = (*EMOTIONS, CONTEMPT)
"""Opt-in 8-class mode for CK+/FER+ style data that keeps ``contempt``."""

FER2013_CSV_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""Class of each ``emotion`` code in the original fer2013.csv (0 Angry ... 4 Sad, 5 Surprise, 6 Neutral)."""

FERPLUS_VOTE_COLUMNS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)
"""The ten vote columns of FER+ ``fer2013new.csv``, in file order."""

FERPLUS_MODES: tuple[str, ...] = ("majority", "soft")
"""How FER+ votes become targets: the majority class, or the vote distribution (soft labels)."""

FERPLUS_MODE_ALIASES: dict[str, str] = {"majority": "majority", "soft": "soft", "probability": "soft"}
"""FER+'s own names for its modes ("probability" is its soft-label mode) mapped to ours."""

SYNONYMS: dict[str, str] = {
    "anger": "angry",
    "angry": "angry",
    "mad": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "disgusting": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "smile": "happy",
    "neutral": "neutral",
    "calm": "neutral",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "suprise": "surprise",
    "contempt": CONTEMPT,
    "contemptuous": CONTEMPT,
}
"""Folder/column names seen in the wild, lower-cased, mapped to canonical names."""


def class_names(include_contempt: bool = False) -> tuple[str, ...]:
    """The class list for a run: the seven emotions, plus ``contempt`` in 8-class mode."""
    return EMOTIONS_WITH_CONTEMPT if include_contempt else EMOTIONS


def canonical_name(name: str) -> str | None:
    """Map a folder or column name (any case, spaces, a leading ``0_`` index) to a canonical class.

    Returns None for names we do not know, so callers can report them.
    """
    key = re.sub(r"^\d+[\s_.-]+", "", name.strip().lower())
    key = re.sub(r"[\s_-]+", "", key)
    return SYNONYMS.get(key)


def fer2013_codes_to_indices(codes: np.ndarray, classes: Sequence[str] = EMOTIONS) -> np.ndarray:
    """Convert fer2013.csv ``emotion`` codes (0..6, CSV order) to indices into ``classes``."""
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or codes.max() >= len(FER2013_CSV_CLASSES)):
        raise FERDataError(
            f"fer2013 emotion codes must be 0..6, got values {sorted(set(codes.tolist()) - set(range(7)))}"
        )
    lookup = np.array([list(classes).index(name) for name in FER2013_CSV_CLASSES], dtype=np.int64)
    return lookup[codes.astype(np.int64)]


def indices_to_fer2013_codes(indices: np.ndarray) -> np.ndarray:
    """Inverse of :func:`fer2013_codes_to_indices`, for writing a fer2013-format CSV."""
    lookup = np.array([FER2013_CSV_CLASSES.index(name) for name in EMOTIONS], dtype=np.int64)
    return lookup[np.asarray(indices, dtype=np.int64)]


def ferplus_votes_to_targets(
    votes: np.ndarray, mode: str = "majority", include_contempt: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Turn FER+ vote counts (N x 10, file column order) into training targets.

    Follows the FER+ paper's rules: single votes are treated as noise and removed first.
    ``majority``: a row keeps the class holding more than half of the remaining votes.
    ``soft``: a row keeps its vote distribution over the classes.
    Rows that end up mostly ``unknown``/``NF`` (not a face), or whose majority is
    ``contempt`` in 7-class mode, are dropped.

    Returns ``(keep, targets)``: a boolean mask over the rows, and for the kept rows either
    int64 class indices (majority) or float32 probabilities (soft) over ``class_names()``.
    """
    if mode not in FERPLUS_MODE_ALIASES:
        raise FERDataError(f"FER+ label mode must be one of {', '.join(FERPLUS_MODE_ALIASES)}, got {mode!r}")
    mode = FERPLUS_MODE_ALIASES[mode]
    votes = np.asarray(votes, dtype=np.float64)
    if votes.ndim != 2 or votes.shape[1] != len(FERPLUS_VOTE_COLUMNS):
        raise FERDataError(
            f"FER+ votes need {len(FERPLUS_VOTE_COLUMNS)} columns {FERPLUS_VOTE_COLUMNS}, got shape {votes.shape}"
        )
    votes = np.where(votes <= 1, 0.0, votes)  # a lone vote is noise (FER+ paper)
    classes = class_names(include_contempt)
    emotion_columns = [[canonical_name(col) for col in FERPLUS_VOTE_COLUMNS].index(c) for c in classes]
    total = votes.sum(axis=1)
    emotion_votes = votes[:, emotion_columns]
    if mode == "majority":
        best = votes.argmax(axis=1)
        majority = votes.max(axis=1) > 0.5 * total
        column_to_index = {col: i for i, col in enumerate(emotion_columns)}
        keep = majority & np.isin(best, emotion_columns)
        targets = np.array([column_to_index[c] for c in best[keep]], dtype=np.int64)
        return keep, targets
    kept_sum = emotion_votes.sum(axis=1)
    keep = (kept_sum > 0.5 * total) & (total > 0)
    probs = emotion_votes[keep] / kept_sum[keep, None]
    assert probs.shape[1] == len(classes)
    return keep, probs.astype(np.float32)


SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Our split keys, in order: training, validation (selection; FER2013's PublicTest), test (FER2013's
PrivateTest). A dataset that is not split has one split ``all``."""

FER2013_USAGES: dict[str, str] = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
"""FER2013's name (``Usage`` column, file-name prefix) for each split key."""

SPLIT_ALIASES: dict[str, str] = {
    **{key: key for key in SPLITS},
    **{usage.lower(): key for key, usage in FER2013_USAGES.items()},
    "valid": "val",
    "validation": "val",
    "public_test": "val",
    "testing": "test",
    "private_test": "test",
}
"""Every name a user, a folder or a FER2013 file gives a split, mapped to our split keys."""
