"""FER+ (Microsoft, MIT): ten crowd votes per FER2013 image, read over the original CSV's pixels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fer_utils.data.faceset import FaceSet, LoadedDataset
from fer_utils.data.fer2013_csv import USAGE_TO_SPLIT, csv_rows, load_fer2013_csv, read_csv_header
from fer_utils.errors import FERDataError
from fer_utils.labels import FERPLUS_VOTE_COLUMNS, class_names, ferplus_votes_to_targets


def read_ferplus_votes(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """Read ``fer2013new.csv``: (N x 10 vote counts in FERPLUS_VOTE_COLUMNS order, Usage per row)."""
    path = Path(path)
    header = [h.strip() for h in read_csv_header(path)]
    lower = {h.lower(): i for i, h in enumerate(header)}
    missing = [c for c in FERPLUS_VOTE_COLUMNS if c.lower() not in lower]
    if missing:
        raise FERDataError(f"{path}: missing FER+ vote column(s) {', '.join(missing)}; found {', '.join(header)}")
    columns = [lower[c.lower()] for c in FERPLUS_VOTE_COLUMNS]
    votes, usages = [], []
    for row_number, row in csv_rows(path):
        try:
            votes.append([float(row[c] or 0) for c in columns])
        except (ValueError, IndexError):
            raise FERDataError(f"{path}: row {row_number} has unreadable vote counts") from None
        usages.append(row[lower["usage"]].strip() if "usage" in lower else "")
    return np.array(votes, dtype=np.float32).reshape(-1, len(FERPLUS_VOTE_COLUMNS)), usages


def load_ferplus(
    fer2013_csv: str | os.PathLike,
    ferplus_csv: str | os.PathLike,
    mode: str = "majority",
    include_contempt: bool = False,
) -> LoadedDataset:
    """FER2013 pixels with FER+ labels: ``majority`` (hard labels) or ``soft`` (vote distributions).

    Rows align one-to-one with fer2013.csv. Rows FER+ marks as not-a-face or unknown, and rows
    without a clear label, are dropped and counted in the notes.
    """
    base = load_fer2013_csv(fer2013_csv)
    if base.skipped:
        raise FERDataError(
            f"{fer2013_csv}: has bad rows ({base.skipped[0].reason}); FER+ labels need every "
            "row of the original CSV to line up"
        )
    votes, usages = read_ferplus_votes(ferplus_csv)
    faces = FaceSet.concat(list(base.splits.values()))
    order = np.argsort([int(s.rsplit("row", 1)[1]) for s in faces.sources], kind="stable")
    faces = faces.subset(order)
    if len(votes) != len(faces):
        raise FERDataError(
            f"{ferplus_csv}: {len(votes)} vote rows but {fer2013_csv} has {len(faces)} faces; "
            "use the fer2013new.csv that belongs to this fer2013.csv"
        )
    keep, targets = ferplus_votes_to_targets(votes, mode, include_contempt)
    classes = class_names(include_contempt)
    if mode == "soft":
        labels, soft = targets.argmax(axis=1), targets
    else:
        labels, soft = targets, None
    kept = FaceSet(faces.images[keep], labels, classes, faces.sources[keep], soft)
    split_of = np.array([USAGE_TO_SPLIT.get(u.lower(), "all") for u, k in zip(usages, keep, strict=False) if k])
    splits = {
        name: kept.subset(split_of == name) for name in ("train", "val", "test", "all") if (split_of == name).any()
    }
    notes = [
        f"FER+ {mode} labels: dropped {int((~keep).sum())} of {len(keep)} rows "
        "(not a face, unknown, no clear majority" + ("" if include_contempt else ", or contempt") + ")"
    ]
    return LoadedDataset(splits, f"ferplus-{mode}", str(ferplus_csv), classes, [], notes)
