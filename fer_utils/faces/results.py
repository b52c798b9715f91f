"""What a prediction returns, and the three ways it is written out: a line per face for people,
a row per face for spreadsheets (CSV) and a nested document for programs (JSON). The CLI, the app
and the notebooks all print and save results through these, so the formats cannot drift apart.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fer_utils.core.errors import FERConfigError, install_hint
from fer_utils.core.schema import BOX_COLUMNS, photo_columns, probability_column
from fer_utils.data.images import Skipped
from fer_utils.faces.detection import FaceBox


@dataclass
class FaceResult:
    """One face: where it is, what the model says, and every class's probability."""

    box: FaceBox | None  # None when the whole image was taken as the face
    label: str
    score: float
    probabilities: dict[str, float]
    face: np.ndarray = field(repr=False)  # the 48x48 crop the model saw

    def to_dict(self) -> dict:
        return {
            "box": None if self.box is None else self.box.to_dict(),
            "label": self.label,
            "score": self.score,
            "probabilities": self.probabilities,
        }

    def __repr__(self) -> str:
        where = "whole image" if self.box is None else f"box {self.box.x},{self.box.y} {self.box.w}x{self.box.h}"
        return f"FaceResult({where}: {self.describe()})"

    def describe(self) -> str:
        """``happy (0.93)  happy 0.93  surprise 0.04  neutral 0.02``: the label and the top three."""
        top3 = sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:3]
        return f"{self.label} ({self.score:.2f})  " + "  ".join(f"{c} {v:.2f}" for c, v in top3)


@dataclass
class ImageResult:
    """All faces found in one image, numbered left to right; ``reason`` says why there are none."""

    source: str
    width: int
    height: int
    faces: list[FaceResult]
    detected: bool  # False when the image was taken as one face crop
    reason: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)  # grayscale image, for drawing
    classes: tuple[str, ...] = field(
        default=(), repr=False
    )  # the model's, so a photo without faces has the columns too

    def __repr__(self) -> str:
        found = f"{len(self.faces)} face{'s' * (len(self.faces) != 1)}"
        faces = "".join(f"\n  {face!r}" for face in self.faces)
        reason = f", {self.reason}" if self.reason and not self.faces else ""
        return f"ImageResult({self.source!r}, {self.width}x{self.height}, {found}{reason}){faces}"

    def rows(self) -> list[dict]:
        """One record per face in the result schema's photo columns (:mod:`fer_utils.core.schema`)."""
        rows = []
        for i, face in enumerate(self.faces):
            box = face.box or FaceBox(0, 0, self.width, self.height, float("nan"))  # whole image = the face
            row = {"file": self.source, "face": i, **face_columns(box, face.label, face.score, face.probabilities)}
            if face.box is None:
                row["detection_score"] = None
            rows.append(row)
        return rows

    def to_dataframe(self):
        """This image's faces as a pandas DataFrame, one row per face (the photo columns of
        :mod:`fer_utils.core.schema`, the same as ``fer predict --csv``)."""
        classes = self.classes or (tuple(self.faces[0].probabilities) if self.faces else ())
        return results_dataframe([self], classes)

    def lines(self) -> list[str]:
        """What the CLI prints for this image: one line per face, or the reason there is none."""
        if not self.faces:
            return [f"{self.source}: {self.reason}"]
        lines = []
        for i, face in enumerate(self.faces):
            where = f" face {i} at {face.box.x},{face.box.y} {face.box.w}x{face.box.h}" if face.box else ""
            lines.append(f"{self.source}{where}: {face.describe()}")
        return lines


def summary_line(results: Sequence[ImageResult], skipped: Sequence[Skipped]) -> str:
    """``3 images, 4 faces, 1 without a face, 0 skipped``."""
    faces = sum(len(r.faces) for r in results)
    empty = sum(not r.faces for r in results)
    return f"{len(results)} images, {faces} faces, {empty} without a face, {len(skipped)} skipped"


def predictions_json(
    results: Sequence[ImageResult],
    skipped: Sequence[Skipped],
    classes: Sequence[str],
    model: str,
    annotated: dict[str, str] | None = None,
) -> dict:
    """``fer predict --json``: ``rows``, the CSV's rows in the one result schema (as the video
    JSON's ``rows``: one per face, then one per image without a face or skipped file, with its
    reason); then each image's size, detection and faces (boxes, labels, probabilities), the
    skipped files and the model used."""
    annotated = annotated or {}
    return {
        "classes": list(classes),
        "checkpoint": model,
        "rows": prediction_rows(results, skipped),
        "images": [
            {
                "file": r.source,
                "width": r.width,
                "height": r.height,
                "detected": r.detected,
                "reason": r.reason,
                "faces": [f.to_dict() for f in r.faces],
                **({"annotated": annotated[r.source]} if r.source in annotated else {}),
            }
            for r in results
        ],
        "skipped": [dataclasses.asdict(s) for s in skipped],
    }


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""How a cell a spreadsheet would evaluate as a formula begins (OWASP, CSV injection)."""


def spreadsheet_safe(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: a string that begins like a formula (a class name
    or a file name from someone else) gets a leading apostrophe; numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class SpreadsheetSafeWriter(csv.DictWriter):
    """``csv.DictWriter`` whose header and text cells never run as formulas: every CSV file the
    package writes (``fer predict --csv``, ``fer video --csv``, the app's downloads) goes through it."""

    def __init__(self, f, fieldnames: Sequence[str], **options) -> None:
        super().__init__(f, [spreadsheet_safe(name) for name in fieldnames], **options)

    def writerow(self, rowdict: dict):
        return super().writerow({spreadsheet_safe(k): spreadsheet_safe(v) for k, v in rowdict.items()})

    def writerows(self, rowdicts) -> None:
        for row in rowdicts:
            self.writerow(row)


def finite_json(value: object, indent: int | None = 2) -> str:
    """JSON text that every parser reads: NaN and infinities (which ``json.dumps`` writes as bare
    ``NaN``, not JSON) become ``null``."""

    def finite(item: object) -> object:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {k: finite(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [finite(v) for v in item]
        return item

    return json.dumps(finite(value), indent=indent, allow_nan=False)


def face_columns(box: FaceBox, label: str, score: float, probabilities: dict[str, float]) -> dict[str, Any]:
    """The columns every face has, in photos and videos alike: box, detection score, label, score
    and one probability per class, rounded as the outputs write them."""
    return {
        **dict(zip(BOX_COLUMNS, (box.x, box.y, box.w, box.h), strict=True)),
        "detection_score": round(box.score, 5),
        "label": label,
        "score": round(score, 5),
        **{probability_column(c): round(p, 5) for c, p in probabilities.items()},
    }


def results_dataframe(results: Sequence[ImageResult], classes: Sequence[str]):
    """Faces of several images as one pandas DataFrame with the photo columns (pandas comes with
    the ``course`` extra)."""
    try:
        import pandas as pd
    except ImportError:
        raise FERConfigError(f"DataFrames need pandas: {install_hint('course')}") from None
    return pd.DataFrame([row for r in results for row in r.rows()], columns=photo_columns(classes))


def prediction_rows(results: Sequence[ImageResult], skipped: Sequence[Skipped]) -> list[dict]:
    """One row per face, then one per image without a face and per skipped file (with a reason)."""
    rows = [row for r in results for row in r.rows()]
    rows += [{"file": r.source, "reason": r.reason} for r in results if not r.faces]
    rows += [{"file": s.source, "reason": f"skipped: {s.reason}"} for s in skipped]
    return rows


def photo_output_columns(classes: Sequence[str]) -> list[str]:
    """What ``fer predict`` writes (CSV, Parquet): the photo columns, then ``reason`` for an image
    without a face or a skipped file; every file has all of them, whatever its rows hold."""
    return [*photo_columns(classes), "reason"]


def predictions_csv(results: Sequence[ImageResult], skipped: Sequence[Skipped], classes: Sequence[str]) -> str:
    """:func:`prediction_rows` as CSV (:func:`photo_output_columns`), every cell as a spreadsheet
    shows it as text."""
    rows = prediction_rows(results, skipped)
    columns = photo_output_columns(classes)
    text = io.StringIO()
    writer = SpreadsheetSafeWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()
