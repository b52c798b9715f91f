"""Data hygiene for the course: notebooks are committed without outputs (so no dataset image can
leak into the repository) and each follows the course conventions."""

import json
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_is_a_numbered_course():
    assert len(NOTEBOOKS) >= 9
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(len(NOTEBOOKS))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped_and_follows_conventions(path):
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    # nbformat 4.5 requires a unique id per cell (a missing one is a warning now, an error later)
    ids = [cell.get("id") for cell in cells]
    assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: every cell needs its own id"
    nbformat.validate(nbformat.from_dict(nb))
    for cell in cells:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name} has saved outputs"
    assert "colab.research.google.com" in "".join(cells[0]["source"])
    assert "Learning objectives" in "".join(cells[0]["source"])
    assert "in sys.modules" in "".join(cells[1]["source"])
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells), "no parameters cell"
    exercises = next(i for i, c in enumerate(cells) if "## Exercises" in "".join(c["source"]))
    text = "".join(cells[exercises]["source"])
    assert "**Build it**" in text and "**Why**" in text, f"{path.name}: exercises need one to build and one why"
    solutions = cells[exercises + 1 :]
    assert solutions, f"{path.name}: the solutions are code cells after the exercises"
    for cell in solutions:  # runnable: nbval executes them with the lesson (FAST mode in CI)
        assert cell["cell_type"] == "code" and "solution" in cell["metadata"].get("tags", []), path.name
        assert cell["metadata"].get("jupyter", {}).get("source_hidden"), f"{path.name}: fold solutions"
    assert "<details><summary>Solution" not in text, f"{path.name}: a solution in markdown is never run"
