import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fer_utils.course as course_module


@pytest.fixture
def course(monkeypatch):
    """The course module with FER_FAST set (or unset) now: it is read when used, no reload needed."""

    def load(fast: str | None):
        if fast is None:
            monkeypatch.delenv("FER_FAST", raising=False)
        else:
            monkeypatch.setenv("FER_FAST", fast)
        return course_module

    return load


def test_params_come_from_env_then_fast_then_default(course, monkeypatch):
    fast = course("1")
    assert fast.FAST and fast.param("FER_EPOCHS", 15, fast=2) == 2
    monkeypatch.setenv("FER_EPOCHS", "7")
    assert fast.param("FER_EPOCHS", 15, fast=2) == 7
    monkeypatch.setenv("FER_TTA_ON", "yes")
    assert fast.param("FER_TTA_ON", False) is True
    slow = course(None)
    assert not slow.FAST and slow.param("FER_LR", 1e-3, fast=5e-3) == 1e-3


def test_fast_mode_follows_the_environment_after_import(monkeypatch):
    from fer_utils.course import fast_mode

    monkeypatch.setenv("FER_FAST", "1")
    assert fast_mode() and course_module.FAST
    monkeypatch.setenv("FER_FAST", "0")
    assert not fast_mode() and not course_module.FAST
    with pytest.raises(AttributeError):
        course_module.SLOW  # noqa: B018 - other names still fail as usual


def test_dataset_choice(course, monkeypatch, capsys):
    assert course("1").dataset_path() == "synthetic:0.3"
    monkeypatch.setenv("FER_DATA_DIR", "/data/fer2013")
    assert course(None).dataset_path() == "/data/fer2013"
    monkeypatch.delenv("FER_DATA_DIR")
    assert course(None).dataset_path() == "synthetic"
    assert "uses the built-in synthetic faces" in capsys.readouterr().out


def _notebook_texts(folder):
    import json

    for path in sorted(folder.glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        yield path, ["".join(c["source"]) for c in cells]


def test_every_notebook_installs_the_course_from_the_one_repository():
    from fer_utils.course import REPOSITORY, repo_root

    owner_name = REPOSITORY.removeprefix("https://github.com/")
    found = list(_notebook_texts(repo_root() / "notebooks"))
    assert len(found) >= 10
    for path, sources in found:
        setup = [s for s in sources if s.startswith("# Setup.")]
        assert len(setup) == 1 and f'REPOSITORY = "{REPOSITORY}"' in setup[0], path.name
        assert len(setup[0].splitlines()) <= 5, f"{path.name}: the setup cell is a learner's first sight; keep it short"
        assert "{REPOSITORY}" in setup[0] and "google.colab" in setup[0] and "setup(" in setup[0], path.name
        badges = [s for s in sources if "colab.research.google.com" in s]
        assert badges and all(
            f"colab.research.google.com/github/{owner_name}/blob/main/notebooks/{path.name}" in b for b in badges
        )


def test_a_fork_points_everything_at_itself_in_one_command(tmp_path, capsys):
    import shutil

    from fer_utils.course import LESSONS_FILE, main, repo_root, set_repository

    (tmp_path / "fer_utils").mkdir()
    (tmp_path / LESSONS_FILE).parent.mkdir(parents=True)
    shutil.copy(repo_root() / LESSONS_FILE, tmp_path / LESSONS_FILE)
    shutil.copytree(repo_root() / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns("*.py"))
    shutil.copy(repo_root() / "README.md", tmp_path / "README.md")
    fork = "https://github.com/someone/fer-fork"
    changed = set_repository(fork, tmp_path)
    assert len(changed) == 2 + len(list((tmp_path / "notebooks").glob("*.ipynb")))
    readme = (tmp_path / "README.md").read_text()
    assert "github/someone/fer-fork/blob/main/notebooks/" in readme and "github/fer-course/fer-course" not in readme
    assert f'REPOSITORY = "{fork}"' in (tmp_path / LESSONS_FILE).read_text()
    for path, sources in _notebook_texts(tmp_path / "notebooks"):  # still valid notebooks
        text = "\n".join(sources)
        assert f'REPOSITORY = "{fork}"' in text and "github/someone/fer-fork/blob/main/notebooks/" + path.name in text
        assert "fer-course/fer-course" not in text
    with pytest.raises(SystemExit):
        main(["--repository", "not a url"])
    assert "https://github.com/OWNER/NAME" in capsys.readouterr().err


def _first_cell(notebook: str) -> str:
    from fer_utils.course import repo_root

    cells = json.loads((repo_root() / "notebooks" / notebook).read_text())["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


def _run_cell(cell: str, repository: str, clone: Path, stub: Path) -> subprocess.CompletedProcess:
    code = "import google.colab\n" + cell.replace('"https://github.com/fer-course/fer-course"', repr(repository))
    code = code.replace("/content/fer-course", str(clone))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = str(stub)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
        cwd=clone.parent,
    )


def test_a_wrong_repository_in_the_colab_cell_is_one_line_saying_what_to_set(tmp_path):
    """The first cell as Colab runs it, with a REPOSITORY that cannot be cloned: one line that says
    which line to change, no traceback. (A right one, cloned and installed in Colab's own
    environment, is what .ci/colab/check.py runs for every notebook.)"""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    stub = tmp_path / "stub"
    (stub / "google" / "colab").mkdir(parents=True)
    (stub / "google" / "colab" / "__init__.py").write_text("")
    wrong = _run_cell(_first_cell("08_deployment.ipynb"), f"file://{tmp_path}/no-such-repository", tmp_path / "c", stub)
    message = wrong.stderr.strip().splitlines()
    assert wrong.returncode != 0 and "set REPOSITORY" in message[-1] and "Traceback" not in wrong.stderr


def test_the_course_map_quotes_the_measured_run_times():
    """One source for run times: benchmarks/bench_course.py measures every notebook on the real
    data and writes docs/course-run.json; the README's course map, notebook 00's map and each
    notebook's own first cell quote that figure, and every run recorded there passed."""
    from fer_utils.course import repo_root, run_time_text

    root = repo_root()
    measured = json.loads((root / "docs" / "course-run.json").read_text())
    notebooks = sorted(p.stem for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(measured) == notebooks, "run benchmarks/bench_course.py for every notebook"
    readme = (root / "README.md").read_text()
    course_map = "".join(_notebook_texts_of(root / "notebooks" / "00_setup_and_task.ipynb"))
    for name, run in measured.items():
        assert run["passed"], f"{name} failed on the real data: {run['error']}"
        assert run["peak_rss_gb"] < 4, f"{name} needs {run['peak_rss_gb']} GB: a laptop's share is under 4"
        said = run_time_text(run["seconds"])
        if run["mode"] == "FAST":
            said = f"FAST mode {said}"
        row = next(line for line in readme.splitlines() if line.startswith(f"| [{name}]"))
        assert said in row, f"README's course map should say {said!r} for {name}: {row[:200]}"
        row = next(line for line in course_map.splitlines() if line.startswith(f"| [{name}]"))
        assert said in row, f"notebook 00's course map should say {said!r} for {name}"
        first = _notebook_texts_of(root / "notebooks" / f"{name}.ipynb")[0]
        assert said in first, f"{name}'s first cell should state its measured run time, {said!r}"


def _notebook_texts_of(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]]
