"""FER+ (Microsoft, MIT): ten crowd votes per FER2013 image, read over the original CSV's pixels."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from fer_utils.core.errors import FERDataError
from fer_utils.core.labels import (
    FERPLUS_MODE_ALIASES,
    FERPLUS_VOTE_COLUMNS,
    SPLITS,
    canonical_name,
    class_names,
    ferplus_votes_to_targets,
)
from fer_utils.data.faceset import FaceSet, LoadedDataset, Skipped
from fer_utils.data.fer2013_csv import USAGE_TO_SPLIT, csv_rows, load_fer2013_csv, read_csv_header
from fer_utils.data.folders import decode_faces


def _dropped(mode: str, keep: np.ndarray, include_contempt: bool, unit: str) -> str:
    """The note saying how many faces a FER+ label mode dropped, and why."""
    why = "not a face, unknown, no clear majority" + ("" if include_contempt else ", or contempt")
    return f"{mode} labels: dropped {int((~keep).sum())} of {len(keep)} {unit} ({why})"


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
            counts = [float(row[c] or 0) for c in columns]
        except (ValueError, IndexError):
            raise FERDataError(f"{path}: row {row_number} has unreadable vote counts") from None
        check_votes(path, row_number, counts)
        votes.append(counts)
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
    splits = {name: kept.subset(split_of == name) for name in (*SPLITS, "all") if (split_of == name).any()}
    notes = [f"FER+ {_dropped(mode, keep, include_contempt, 'rows')}"]
    return LoadedDataset(splits, f"ferplus-{mode}", str(ferplus_csv), classes, [], notes)


FERPLUS_SPLIT_FOLDERS: dict[str, str] = {"fer2013train": "train", "fer2013valid": "val", "fer2013test": "test"}
"""Folders that FER+'s ``generate_training_data.py`` writes, mapped to split keys."""

FERPLUS_LABEL_FILE = "label.csv"


def is_ferplus_layout(root: str | os.PathLike) -> bool:
    """True when ``root`` is FER+'s image layout: ``FER2013Train/label.csv`` etc., or one such folder."""
    root = Path(root)
    if (root / FERPLUS_LABEL_FILE).is_file():
        return True
    return root.is_dir() and any(
        p.is_dir() and p.name.lower() in FERPLUS_SPLIT_FOLDERS and (p / FERPLUS_LABEL_FILE).is_file()
        for p in root.iterdir()
    )


MAX_VOTES = 1000.0
"""The most votes one face may have in one column (FER+ has ten annotators): a larger count is
a damaged file, and would overflow the float32 targets."""


def check_votes(path: Path, row_number: int, counts: list[float]) -> None:
    """FERDataError naming the row unless every vote count is a finite number from 0 to ``MAX_VOTES``."""
    if not all(math.isfinite(c) and 0 <= c <= MAX_VOTES for c in counts):
        raise FERDataError(
            f"{path}: row {row_number} has vote counts {counts}; each must be a number from 0 to {MAX_VOTES:g}"
        )


def _plain_name(path: Path, row_number: int, name: str) -> str:
    """``name`` if it is a plain file name inside the label file's own folder (no folder part, no
    ``..``, not absolute); else FERDataError naming the row: a label file never reads outside its split."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or len(name) > 255 or not name.isprintable():
        raise FERDataError(
            f"{path}: row {row_number} names the image {name[:80]!r}; FER+ names are plain file names inside "
            f"{path.parent} (e.g. fer0000000.png)"
        )
    return name


def read_ferplus_label_file(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Read a header-less FER+ ``label.csv``: (image file names, N x 10 vote counts in file order).
    Names must be plain file names in the label file's folder, each once; votes finite and bounded."""
    path = Path(path)
    names, votes = [], []
    first_row: dict[str, int] = {}
    for row_number, row in csv_rows(path, header=False):
        if len(row) != 2 + len(FERPLUS_VOTE_COLUMNS):
            raise FERDataError(
                f"{path}: row {row_number} has {len(row)} fields; a FER+ label.csv row is "
                f"'image name, face box, {', '.join(FERPLUS_VOTE_COLUMNS)}'"
            )
        name = _plain_name(path, row_number, row[0].strip())
        try:
            counts = [float(v) for v in row[2:]]
        except ValueError:
            raise FERDataError(f"{path}: row {row_number} has unreadable vote counts") from None
        check_votes(path, row_number, counts)
        if name in first_row:
            raise FERDataError(
                f"{path}: row {row_number} repeats {name} (first in row {first_row[name]}); each face is listed once"
            )
        first_row[name] = row_number
        names.append(name)
        votes.append(counts)
    if not names:
        raise FERDataError(f"{path}: holds no rows")
    return names, np.array(votes, dtype=np.float32)


def read_ferplus_folder(folder: str | os.PathLike) -> tuple[FaceSet, np.ndarray]:
    """One folder of FER+'s image layout as it is: every face (labelled by its vote majority,
    ties and not-a-face included, for display) and the raw N x 10 vote counts in
    ``FERPLUS_VOTE_COLUMNS`` order; nothing dropped. For lessons and label comparisons; training
    uses :func:`load_ferplus_folders`."""
    folder = Path(folder)
    names, votes = read_ferplus_label_file(folder / FERPLUS_LABEL_FILE)
    classes = class_names(False)
    columns = [[canonical_name(c) for c in FERPLUS_VOTE_COLUMNS].index(k) for k in classes]
    labels = votes[:, columns].argmax(axis=1)
    items = [(folder / name, int(k)) for name, k in zip(names, labels, strict=True)]
    faces, skipped = decode_faces(items, classes, 48, progress=False)
    if skipped:
        raise FERDataError(source=skipped[0].source, reason=f"cannot read this FER+ face ({skipped[0].reason})")
    return faces, votes


def vote_agreement(votes: np.ndarray) -> dict[str, float]:
    """How much a face's annotators agree: mean share of the top class, share of faces with a clear majority."""
    votes = np.asarray(votes, dtype=np.float64)
    total = votes.sum(axis=1)
    valid = total > 0
    top_share = votes[valid].max(axis=1) / total[valid]
    return {
        "faces": float(len(votes)),
        "mean_top_share": float(top_share.mean()) if top_share.size else 0.0,
        "unanimous": float((top_share >= 1.0).mean()) if top_share.size else 0.0,
        "clear_majority": float((top_share > 0.5).mean()) if top_share.size else 0.0,
    }


def load_ferplus_folders(
    root: str | os.PathLike,
    size: int = 48,
    mode: str = "majority",
    include_contempt: bool = False,
    progress: bool = True,
) -> LoadedDataset:
    """Load FER+'s image layout (``FER2013Train/``, ``FER2013Valid/``, ``FER2013Test/``).

    ``mode`` sets the training targets: ``majority`` (hard labels) or ``soft`` (FER+'s
    "probability" mode, the vote distribution). Validation and test faces are always scored
    against their majority label, as FER+ reports them. Faces that are not faces, unknown,
    without a clear majority (or contempt, in 7-class mode) are dropped and counted in notes.
    """
    root = Path(root)
    mode = FERPLUS_MODE_ALIASES.get(mode, mode)
    folders = (
        {"all": root}
        if (root / FERPLUS_LABEL_FILE).is_file()
        else {
            FERPLUS_SPLIT_FOLDERS[p.name.lower()]: p
            for p in sorted(root.iterdir())
            if p.is_dir() and p.name.lower() in FERPLUS_SPLIT_FOLDERS and (p / FERPLUS_LABEL_FILE).is_file()
        }
    )
    classes = class_names(include_contempt)
    splits: dict[str, FaceSet] = {}
    skipped: list[Skipped] = []
    notes: list[str] = []
    for split, folder in folders.items():
        names, votes = read_ferplus_label_file(folder / FERPLUS_LABEL_FILE)
        agreement = vote_agreement(votes)
        notes.append(
            f"{folder.name}: {len(names)} faces; annotators agree on {agreement['mean_top_share']:.0%} of votes "
            f"on average, {agreement['unanimous']:.0%} unanimous, {agreement['clear_majority']:.0%} with a clear majority"
        )
        split_mode = mode if split in ("train", "all") else "majority"
        keep, targets = ferplus_votes_to_targets(votes, split_mode, include_contempt)
        labels = targets.argmax(axis=1) if split_mode == "soft" else targets
        kept_names = [n for n, k in zip(names, keep, strict=True) if k]
        faces, bad = decode_faces(
            [(folder / n, int(label)) for n, label in zip(kept_names, labels, strict=True)], classes, size, progress
        )
        skipped += bad
        if split_mode == "soft":
            decoded = {s: i for i, s in enumerate(str(folder / n) for n in kept_names)}
            faces.soft_labels = targets[[decoded[s] for s in faces.sources]]
        notes.append(f"{folder.name}: FER+ {_dropped(split_mode, keep, include_contempt, 'faces')}")
        if len(faces):
            splits[split] = faces
    if not splits:
        raise FERDataError(f"{root}: no readable FER+ faces found under {', '.join(str(f) for f in folders.values())}")
    return LoadedDataset(splits, f"ferplus-{mode}", str(root), classes, skipped, notes)
