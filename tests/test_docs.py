"""The Python API's guide runs as written, and its reference builds without a warning.

docs/api.md's code blocks run in order, in one namespace (as a reader pastes them into one
notebook), in a folder holding what the guide names: ``my_photos/`` and ``interview.mp4``.
``FER_CHECKPOINT`` points the default model at a small checkpoint so the examples take seconds;
every other line runs unchanged.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import face_photo, write_face_video

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```(python|bash)\n(.*?)```", re.DOTALL)


def guide_blocks() -> list[tuple[str, str]]:
    return BLOCK.findall((REPO / "docs" / "api.md").read_text(encoding="utf-8"))


def test_the_guide_covers_every_task_the_api_is_for():
    headings = re.findall(r"^## (.+)$", (REPO / "docs" / "api.md").read_text(), re.MULTILINE)
    for task in ("a photo", "a folder", "a video", "a collection", "Evaluate", "Train", "Export"):
        assert any(task in h for h in headings), f"docs/api.md has no section for {task!r}"


@pytest.mark.slow
def test_every_example_of_the_python_guide_runs_as_written(tmp_path, untrained_checkpoint, monkeypatch, capsys):
    pytest.importorskip("pyarrow")  # the collection example writes Parquet (the scale extra)
    (tmp_path / "my_photos").mkdir()
    shutil.copy(REPO / "fer_utils" / "assets" / "astronaut.jpg", tmp_path / "my_photos" / "astronaut.jpg")
    Image.fromarray(face_photo([(60, 100), (400, 200)])).save(tmp_path / "my_photos" / "two.png")
    write_face_video(tmp_path / "interview.mp4", lambda i: [(40 + i, 60)], n_frames=30)
    monkeypatch.setenv("FER_CHECKPOINT", str(untrained_checkpoint))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for number, (kind, code) in enumerate(guide_blocks(), 1):
        if kind == "python":
            with contextlib.redirect_stdout(sys.stderr):
                exec(compile(code, f"docs/api.md block {number}", "exec"), namespace)
            continue
        for line in filter(None, (ln.split("#")[0].strip() for ln in code.splitlines())):
            argv = shlex.split(line)
            assert argv[0] == "fer", f"block {number}: only fer commands run here: {line}"
            done = subprocess.run([sys.executable, "-m", "fer_utils.cli", *argv[1:]], capture_output=True, text=True)
            assert done.returncode == 0, f"block {number}: {line}\n{done.stderr[-2000:]}"
    assert len(namespace["table"]) == 3 and set(namespace["collection"]["file"]) == set(namespace["table"]["file"])
    assert namespace["exported"].path.is_file() and "FERError" in namespace
    assert len(namespace["job"].results) == 2 and namespace["options"].tta == "flip"


@pytest.mark.skipif(shutil.which("mkdocs") is None and not (Path(sys.executable).parent / "mkdocs").exists(),
                    reason="mkdocs (requirements-dev.txt) is not installed")  # fmt: skip
def test_the_reference_builds_from_the_docstrings_without_a_warning(tmp_path):
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    done = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    assert done.returncode == 0 and "WARNING" not in done.stderr, done.stderr[-3000:]
    page = (tmp_path / "site" / "reference" / "index.html").read_text()
    import fer_utils

    missing = [name for name in fer_utils.__all__ if name != "__version__" and name not in page]
    assert not missing, f"the reference does not show {missing}"
