"""The shipped models' figures come from one file, models/figures.json: the README's table, the
model cards and docs/deployment.md quote the same accuracy, size and cost, and the sizes are the
files' own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURES = json.loads((ROOT / "models" / "figures.json").read_text(encoding="utf-8"))["models"]


def cost(entry: dict) -> str:
    """How the documents write a model's ms per face: the range over its runs, one decimal."""
    low, high = min(entry["ms_per_face"]), max(entry["ms_per_face"])
    return f"{low:.1f}" if low == high else f"{low:.1f}-{high:.1f}"


def card(name: str) -> str:
    """A model's section of models/README.md."""
    text = (ROOT / "models" / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## `{name}`")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_the_readme_row_quotes_the_figures_file(name):
    entry = FIGURES[name]
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(f"| `{Path(name).stem}`")]
    assert len(rows) == 1, name
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[-1] == cost(entry) and cells[-2] == f"{entry['size_mb']} MB"
    assert f"{entry['accuracy']['value']:.4f}" in cells[2]
    if entry["held_out"]:
        assert f"{entry['held_out']['value']:.3f}" in cells[2]


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_the_model_card_quotes_the_figures_file_and_sizes_are_the_files(name):
    entry, section = FIGURES[name], card(name)
    assert round((ROOT / "models" / name).stat().st_size / 1e6, 1) == entry["size_mb"]
    assert f"{entry['accuracy']['value']:.4f}" in section
    if entry["held_out"]:
        assert f"{entry['held_out']['value']:.3f}" in section
    costs = [line for line in section.splitlines() if line.startswith("| cost |")]
    assert all(f"{cost(entry)} ms per face" in line for line in costs)


def test_every_ms_range_quoted_for_a_shipped_model_is_its_own():
    """Wherever a document names a model's cost next to its file name, it is the figures file's."""
    quoted_at = []
    for doc in ("README.md", "models/README.md", "docs/deployment.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        for name, entry in FIGURES.items():
            for match in re.finditer(rf"{re.escape(name)}`?[^.|]{{0,80}}?(\d+\.\d)(?:-(\d+\.\d))? ms per face", text):
                quoted = match[1] if match[2] is None else f"{match[1]}-{match[2]}"
                assert quoted == cost(entry), f"{doc}: {match[0]!r}"
                quoted_at.append(doc)
    assert "docs/deployment.md" in quoted_at  # the pattern finds what it is for
