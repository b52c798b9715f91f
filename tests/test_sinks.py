"""Untrusted text at the sinks: names that come from someone else's files (class names in a model,
file names in a folder) reach spreadsheets as text, terminals as text, and JSON only as JSON."""

from __future__ import annotations

import csv
import io
import json

import numpy as np

from fer_utils.core.errors import TerminalSafeStream, terminal_safe
from fer_utils.faces.results import FaceResult, ImageResult, finite_json, predictions_csv, spreadsheet_safe

HOSTILE = ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "calm", "happy", "sad"]


def _result(source: str) -> ImageResult:
    probabilities = dict(zip(HOSTILE, np.full(7, 1 / 7).tolist(), strict=True))
    face = FaceResult(None, HOSTILE[0], 1 / 7, probabilities, np.zeros((48, 48), np.uint8))
    return ImageResult(source, 48, 48, [face], detected=False)


def test_no_csv_cell_a_spreadsheet_would_run_as_a_formula():
    text = predictions_csv([_result("-photo.jpg")], [], HOSTILE)
    rows = list(csv.reader(io.StringIO(text)))
    cells = [cell for row in rows for cell in row]
    assert not [
        cell for cell in cells if cell.startswith(("=", "+", "@")) or (cell.startswith("-") and not _number(cell))
    ]
    assert '\'=HYPERLINK("http://x")' in rows[1] and "'-photo.jpg" in rows[1]  # the label and the file
    assert spreadsheet_safe(-3.5) == -3.5 and spreadsheet_safe("calm") == "calm"  # numbers stay numbers


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_the_video_csv_stream_neutralizes_its_header_and_cells(tmp_path):
    from fer_utils.predict.video_outputs import CsvStream

    stream = CsvStream(tmp_path / "faces.csv", HOSTILE)
    stream.close()
    with open(tmp_path / "faces.csv", encoding="utf-8") as f:
        header = next(csv.reader(f))
    # the schema's p_ prefix already keeps a class name from opening a cell
    assert 'p_=HYPERLINK("http://x")' in header and not [h for h in header if h.startswith(("=", "+", "@", "-"))]


def test_json_never_holds_nan_or_infinity():
    payload = {"score": float("nan"), "p": [0.5, float("inf")], "rows": [{"x": float("-inf")}], "ok": 1.0}
    text = finite_json(payload)
    assert json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name))) == {
        "score": None,
        "p": [0.5, None],
        "rows": [{"x": None}],
        "ok": 1.0,
    }
    # the whole-image face (no detector box) has a NaN box score: its JSON is still JSON
    from fer_utils.faces.results import predictions_json

    json.loads(finite_json(predictions_json([_result("a.jpg")], [], HOSTILE, "model")), parse_constant=_refuse)


def _refuse(name: str):
    raise ValueError(f"{name} is not JSON")


def test_terminal_output_shows_control_characters_as_text(tmp_path, capsys):
    assert terminal_safe("a\x1b[2Jb\rc\x07\nd\te") == "a\\x1b[2Jb\\rc\\x07\nd\te"
    bars = io.StringIO()
    stream = TerminalSafeStream(bars, progress_bars=True)
    for chunk in ("\rframes 10%", "\n\x1b[A", "skipped: a\rb\x1b[2J.jpg"):  # tqdm's redraws, then a name
        stream.write(chunk)
    assert bars.getvalue() == "\rframes 10%\n\x1b[Askipped: a\\rb\\x1b[2J.jpg"
    from fer_utils.cli import main

    hostile = tmp_path / "no\x1b[2Jsuch\rfile.jpg"
    assert main(["predict", str(hostile)]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err and "\\x1b[2J" in err
