"""The original FER2013 CSV (``emotion,pixels,Usage``): fast parsing, row-numbered errors, writing."""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fer_utils.core.atomic import atomic_path
from fer_utils.core.errors import FERDataError
from fer_utils.core.labels import (
    EMOTIONS,
    FER2013_CSV_CLASSES,
    FER2013_USAGES,
    SPLITS,
    fer2013_codes_to_indices,
    indices_to_fer2013_codes,
)
from fer_utils.data.faceset import FaceSet, LoadedDataset, Skipped

USAGE_TO_SPLIT: dict[str, str] = {usage.lower(): key for key, usage in FER2013_USAGES.items()}
"""FER2013 ``Usage`` values and our split keys: the published protocol trains on Training,
selects on PublicTest and reports PrivateTest."""
SPLIT_TO_USAGE: dict[str, str] = FER2013_USAGES

MAX_BAD_ROWS_LISTED = 10

MAX_CSV_FIELD = 64 * 1024 * 1024
"""Largest cell read (64 MiB: a 2,000 x 2,000 face as text). The csv module's own limit of
128 KiB rejects faces above about 180 px; this one still stops a runaway line."""

TEXT_PROBE_BYTES = 65536


def _text_file(path: Path) -> Path:
    """``path`` if its start looks like text; a file of NUL bytes named .csv is refused before a
    line reader tries to hold it whole in memory."""
    try:
        with open(path, "rb") as f:
            head = f.read(TEXT_PROBE_BYTES)
    except FileNotFoundError:
        raise FERDataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise FERDataError(f"{path}: is a folder, not a CSV file") from None
    if b"\0" in head:
        raise FERDataError(f"{path}: binary data (NUL bytes), not a text CSV file")
    if len(head) == TEXT_PROBE_BYTES and b"\n" not in head:
        raise FERDataError(f"{path}: no line break in its first {TEXT_PROBE_BYTES // 1024} KiB; not a CSV file")
    return path


def _format_rows(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:MAX_BAD_ROWS_LISTED])
    return shown + (f" and {len(rows) - MAX_BAD_ROWS_LISTED} more" if len(rows) > MAX_BAD_ROWS_LISTED else "")


def read_csv_header(path: Path) -> list[str]:
    """The header row of a CSV, or a FERDataError if the file is missing or empty."""
    try:
        with open(_text_file(path), newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), None)
    except FileNotFoundError:
        raise FERDataError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise FERDataError(f"{path}: not a text CSV file") from None
    if not header:
        raise FERDataError(f"{path}: empty CSV file")
    return header


def csv_rows(path: Path, header: bool = True) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells) of every non-empty data row, as spreadsheets count them (the header, if
    any, is row 1). A UTF-8 byte-order mark is accepted; a field over ``MAX_CSV_FIELD`` characters
    or broken quoting is one FERDataError naming the row."""
    csv.field_size_limit(max(csv.field_size_limit(), MAX_CSV_FIELD))
    with open(_text_file(path), newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        row_number = 1 if header else 0
        try:
            if header:
                next(reader, None)
            first = row_number + 1
            for row_number, row in enumerate(reader, start=first):
                if row:
                    yield row_number, row
        except csv.Error as err:
            raise FERDataError(f"{path}: row {row_number + 1} is not valid CSV ({err})") from None
        except UnicodeDecodeError:
            raise FERDataError(f"{path}: not a UTF-8 text CSV file (row {row_number + 1})") from None


def _read_rows(
    path: Path, i_emotion: int, i_pixels: int, i_usage: int | None
) -> tuple[list[tuple[int, int, str, str]], dict[str, list[int]]]:
    """The CSV's rows as (row number, emotion code, pixel text, usage), and the rows skipped by reason."""
    rows: list[tuple[int, int, str, str]] = []  # (row number, code, pixels, usage)
    bad: dict[str, list[int]] = {}
    for row_number, row in csv_rows(path):
        try:
            code = int(row[i_emotion])
            pixels = row[i_pixels]
        except (ValueError, IndexError):
            bad.setdefault("unreadable emotion/pixels", []).append(row_number)
            continue
        if not 0 <= code < len(FER2013_CSV_CLASSES):
            bad.setdefault("emotion code not in 0..6", []).append(row_number)
            continue
        usage = row[i_usage].strip() if i_usage is not None and i_usage < len(row) else ""
        rows.append((row_number, code, pixels, usage))
    if not rows and not bad:
        raise FERDataError(f"{path}: no data rows")
    if not rows:
        raise FERDataError(
            f"{path}: no usable rows ({'; '.join(f'{k}: rows {_format_rows(r)}' for k, r in bad.items())})"
        )
    return rows, bad


def _decode_pixels(
    path: Path, rows: list[tuple[int, int, str, str]], bad: dict[str, list[int]]
) -> tuple[np.ndarray, np.ndarray, int]:
    """(pixels (N, side*side) uint8, which rows decoded, side): each row parsed into a preallocated
    array (far faster than splitting the strings with pandas); bad rows are added to ``bad``."""
    lengths = [pixels.count(" ") + 1 for _, _, pixels, _ in rows]
    n_pixels = max(set(lengths), key=lengths.count) if lengths else 0
    side = math.isqrt(n_pixels)
    if side * side != n_pixels or side < 8:
        raise FERDataError(
            f"{path}: pixel rows have {n_pixels} values, not a square image (FER2013 rows have 2304 = 48x48)"
        )

    images = np.empty((len(rows), n_pixels), dtype=np.uint8)
    keep = np.zeros(len(rows), dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for i, (row_number, _, pixels, _) in enumerate(rows):
            try:
                values = np.fromstring(pixels, dtype=np.int32, sep=" ")
            except ValueError:  # a value like "x" or "12.5"
                bad.setdefault("pixel values are not whole numbers", []).append(row_number)
                continue
            if values.size != n_pixels:
                bad.setdefault(f"pixel count is not {n_pixels}", []).append(row_number)
            elif values.min() < 0 or values.max() > 255:
                bad.setdefault("pixel values outside 0..255", []).append(row_number)
            else:
                images[i] = values
                keep[i] = True
    return images, keep, side


def load_fer2013_csv(path: str | os.PathLike) -> LoadedDataset:
    """Load ``fer2013.csv`` into train / val (PublicTest) / test (PrivateTest) splits.

    Labels are converted from the CSV numbering (0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad,
    5 Surprise, 6 Neutral) to the canonical class order. Rows with a bad pixel count, pixel
    values that are not whole numbers or lie outside 0..255 or an unknown emotion code are skipped and reported by row number
    (the header is row 1, as a spreadsheet shows it). A CSV without ``Usage`` loads as one
    split ``all``.
    """
    path = Path(path)
    header = read_csv_header(path)
    columns = {name.strip().lower(): i for i, name in enumerate(header)}
    missing = [c for c in ("emotion", "pixels") if c not in columns]
    if missing:
        raise FERDataError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header)}. "
            "A FER2013 CSV has emotion,pixels,Usage"
        )
    rows, bad = _read_rows(path, columns["emotion"], columns["pixels"], columns.get("usage"))
    images, keep, side = _decode_pixels(path, rows, bad)
    skipped = [Skipped(f"{path} rows {_format_rows(r)}", reason) for reason, r in bad.items()]
    if not keep.any():
        raise FERDataError(f"{path}: no usable rows ({'; '.join(f'{s.reason}: {s.source}' for s in skipped)})")
    kept = [r for r, k in zip(rows, keep, strict=False) if k]
    images = images[keep].reshape(-1, side, side)
    labels = fer2013_codes_to_indices(np.array([r[1] for r in kept]))
    sources = np.array([f"{path.name}:row{r[0]}" for r in kept])
    usages = np.array([USAGE_TO_SPLIT.get(r[3].lower(), "") for r in kept])

    splits: dict[str, FaceSet] = {}
    notes: list[str] = []
    if columns.get("usage") is None:
        splits["all"] = FaceSet(images, labels, EMOTIONS, sources)
        notes.append("no Usage column: all rows form one split 'all'")
    else:
        unknown = sorted({r[3] for r, u in zip(kept, usages, strict=False) if not u})
        if unknown:
            raise FERDataError(
                f"{path}: unknown Usage value(s) {unknown[:5]}; expected Training, PublicTest, PrivateTest"
            )
        for split in SPLITS:
            mask = usages == split
            if mask.any():
                splits[split] = FaceSet(images[mask], labels[mask], EMOTIONS, sources[mask])
    return LoadedDataset(splits, "fer2013-csv", str(path), EMOTIONS, skipped, notes)


def write_fer2013_csv(splits: dict[str, FaceSet], path: str | os.PathLike) -> Path:
    """Write faces as a FER2013-format CSV (CSV numbering, Usage from split names), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["emotion", "pixels", "Usage"])
        for split, faces in splits.items():
            if faces.classes != EMOTIONS:
                raise FERDataError(
                    f"only the seven canonical classes can be written as FER2013 CSV, got {faces.classes}"
                )
            usage = SPLIT_TO_USAGE.get(split, split)
            codes = indices_to_fer2013_codes(faces.labels)
            for code, image in zip(codes, faces.images, strict=False):
                writer.writerow([int(code), " ".join(map(str, image.ravel().tolist())), usage])
    return path
