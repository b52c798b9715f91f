"""Colab's environment as the course checks it: the pins read from Colab's published list, the
rule that no Colab package may change, the weekly workflow, and ``python -m fer_utils.course --check``.

The check itself (every notebook in a fresh copy of Colab's runtime) is ``.ci/colab/check.py``,
which CI runs beside this suite; these tests cover the parts it relies on.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COLAB = REPO / ".ci" / "colab"


def load(name: str):
    sys.path.insert(0, str(COLAB))
    try:
        spec = importlib.util.spec_from_file_location(f"colab_{name}", COLAB / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(COLAB))


pins = load("pins")
check = load("check")

FREEZE = """\
# googlecolab/backend-info pip-freeze.txt at commit a72407924822ea377410b69f0a290150bcb5c9c2 (2026-08-19): Colab's list
# Do not modify this file directly
absl-py==1.4.0
google-colab @ file:///colabtools/dist/google_colab-1.0.0.tar.gz
ipywidgets==7.7.1
jupyter_kernel_gateway @ git+https://github.com/googlecolab/kernel_gateway@b134e99
torch @ https://download.pytorch.org/whl/cpu/torch-2.11.0%2Bcpu-cp313-cp313-manylinux_2_28_x86_64.whl
typing_extensions==4.16.0
"""


def test_pins_keep_registry_versions_and_name_every_replaced_or_missing_line(tmp_path):
    colab = pins.parse_freeze(FREEZE)
    assert colab.pins == {"absl-py": "1.4.0", "ipywidgets": "7.7.1", "torch": "2.11.0", "typing-extensions": "4.16.0"}
    assert colab.commit.startswith("a7240792") and colab.date == "2026-08-19"
    assert set(colab.replaced) == {"torch"} and "torch==2.11.0" in colab.replaced["torch"]
    assert set(colab.dropped) == {"google-colab", "jupyter_kernel_gateway"}
    freeze = tmp_path / "pip-freeze.txt"
    freeze.write_text(FREEZE)
    (tmp_path / "os-info.txt").write_text("Ubuntu 22.04.5 LTS\nPython 3.13.15\n")
    out = tmp_path / "requirements-colab.txt"
    assert pins.main([str(freeze), "--os-info", str(tmp_path / "os-info.txt"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "at commit a72407924822ea377410b69f0a290150bcb5c9c2 (2026-08-19)" in text and "# python: 3.13.15" in text
    assert "typing_extensions==4.16.0" in text.splitlines()  # Colab's spelling, pip's comparison
    back = pins.read_pins(out)
    assert (back.pins, back.replaced, back.dropped, back.python) == (
        colab.pins,
        colab.replaced,
        colab.dropped,
        "3.13.15",
    )


def test_a_freeze_without_pins_is_refused_in_one_line(tmp_path, capsys):
    page = tmp_path / "page.html"
    page.write_text("<html>rate limited</html>\n")
    assert pins.main([str(page), "--out", str(tmp_path / "out.txt")]) == 1
    assert "no 'name==version' lines" in capsys.readouterr().err and not (tmp_path / "out.txt").exists()


def test_the_committed_pins_are_colabs_published_list():
    colab = pins.read_pins()
    assert colab.commit and colab.date and colab.python.startswith("3.")
    for name in ("ipywidgets", "ipykernel", "torch", "numpy", "opencv-contrib-python"):
        assert name in colab.pins, f"{name} is missing from {pins.PINS_FILE.name}"
    assert "google-colab" in colab.dropped  # stood in for by the check's google.colab module


def test_an_install_that_changes_or_adds_a_colab_package_at_another_version_fails_the_check():
    colab = pins.parse_freeze(FREEZE)
    clean = {"changed": {}, "added": {"onnxscript": "0.7.2", "ipywidgets": "7.7.1"}}
    assert check.colab_changes(clean, colab) == {}
    upgraded = {"changed": {"ipywidgets": "7.7.1 -> 8.1.9"}, "added": {}}
    assert check.colab_changes(upgraded, colab) == {"ipywidgets": "7.7.1 -> 8.1.9"}
    brought = {"changed": {}, "added": {"typing-extensions": "4.12.0"}}
    assert "typing-extensions" in check.colab_changes(brought, colab)


def test_the_first_cell_clones_from_the_given_repository_into_the_runtimes_content(tmp_path):
    nb = json.loads((REPO / "notebooks" / "07_inference.ipynb").read_text())
    cell = "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])
    rewritten = check.colab_cell(cell, "file:///checkout", tmp_path)
    assert "github.com" not in rewritten and "'file:///checkout'" in rewritten
    assert "/content/fer-course" not in rewritten and str(tmp_path / "fer-course") in rewritten


def test_the_kernel_sees_none_of_this_machines_course_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_DATA_DIR", "/data")
    monkeypatch.setenv("FER_CACHE_DIR", "/cache")
    env = check.kernel_env(tmp_path)
    assert not [k for k in env if k.startswith("FER_") and k != "FER_FAST"]
    assert env["HOME"] == str(tmp_path) and env["FER_FAST"] == "1"


@pytest.mark.skipif(shutil.which("check-jsonschema") is None and importlib.util.find_spec("check_jsonschema") is None,
                    reason="check-jsonschema (requirements-dev.txt) is not installed")  # fmt: skip
def test_the_weekly_colab_workflow_is_a_valid_github_workflow():
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
         str(REPO / ".github" / "workflows" / "colab.yml")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    text = (REPO / ".github" / "workflows" / "colab.yml").read_text()
    assert "schedule:" in text and ".ci/colab/pins.py" in text and ".ci/colab/check.py" in text


def test_environment_check_names_what_each_notebook_lacks(tmp_path, monkeypatch):
    from fer_utils.course import environment

    (tmp_path / "08_deployment.ipynb").write_text(
        json.dumps(
            {"cells": [{"cell_type": "code", "source": ['from fer_utils.course import setup; setup("course,export")']}]}
        )
    )
    (tmp_path / "00_setup.ipynb").write_text(
        json.dumps({"cells": [{"cell_type": "code", "source": ['setup("course")']}]})
    )
    real = environment.course_requirements()
    fake = environment.Requirement("not-a-real-exporter-package", ">=1", "export")
    monkeypatch.setattr(environment, "course_requirements", lambda: [*real, fake])
    report = environment.environment_report(tmp_path)
    assert report.extras["export"] is False and report.extras["course"] is True
    assert report.notebooks == {"00_setup.ipynb": "ready", "08_deployment.ipynb": "needs not-a-real-exporter-package"}
    text = report.text()
    assert "platform: plain Python" in text and "not-a-real-exporter-package" in text and "missing" in text


def test_environment_check_runs_as_a_command_and_reports_torch():
    done = subprocess.run([sys.executable, "-m", "fer_utils.course", "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "torch:" in done.stdout and "extras:" in done.stdout and "07_inference.ipynb" in done.stdout


def test_requirement_lines_as_pip_metadata_writes_them():
    from fer_utils.course.environment import Requirement

    assert Requirement.parse('ray[data]>=2.40; extra == "scale"') == Requirement("ray", ">=2.40", "scale")
    assert Requirement.parse("numpy>=1.24") == Requirement("numpy", ">=1.24", "")
    assert Requirement.parse('pytest<9,>=8; extra == "dev"') == Requirement("pytest", "<9,>=8", "dev")


def test_setup_in_colab_installs_the_extras_with_every_installed_package_pinned(monkeypatch):
    """pip may add what the lesson needs but change nothing Colab has: every installed distribution
    is a constraint (so pip picks e.g. an onnx that fits Colab's protobuf instead of upgrading it)."""
    import numpy as np

    from fer_utils.course import lessons

    calls = []

    def fake_pip(command, **kwargs):
        calls.append((command, Path(command[command.index("-c") + 1]).read_text()))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(lessons, "in_colab", lambda: True)
    monkeypatch.setattr(subprocess, "run", fake_pip)
    lessons.setup("course,export")
    command, constraints = calls[0]
    assert command[1:5] == ["-m", "pip", "install", "-q"] and command[-3].endswith("[course,export]")
    pins = constraints.split()
    assert f"numpy=={np.__version__}" in pins
    names = [p.split("==")[0].lower().replace("_", "-") for p in pins]
    assert len(names) == len(set(names)), "a name pinned twice makes pip's resolution impossible"
    assert "fer-utils" not in names, "pip refuses a version for the course's folder: a rerun of the cell would fail"

    def failing_pip(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: ResolutionImpossible: for help visit ...")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(SystemExit, match="beside Colab's own packages: ERROR: ResolutionImpossible"):
        lessons.setup("course")
