"""The course as a learner opens it: JupyterLab from the learner's environment (requirements.txt +
requirements-lab.txt, none of the test tools), driven in headless Chromium.

Notebooks 02 and 06 run top to bottom in FAST mode; then a slider is moved and its widget's output
must change, and no widget may fail to display. The server runs on loopback with a token, in
temporary settings and workspace folders, on a copy of the notebooks (autosave never touches the
repository), and is always stopped. On failure, screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import CHROMIUM, CHROMIUM_FLAGS

REPO = Path(__file__).resolve().parent.parent
LEARNER = Path(os.environ.get("FER_LEARNER_VENV") or REPO / ".venv-learner")
ARTIFACTS = REPO / "test-artifacts"
WIDGET_ERRORS = ("Error displaying widget", "Failed to load model class", "Error rendering output item")


def jupyter_lab() -> Path | None:
    """JupyterLab of the learner's environment (`make learner`), else of this one, else None."""
    for candidate in (REPO / LEARNER / "bin" / "jupyter-lab", Path(sys.prefix) / "bin" / "jupyter-lab"):
        if candidate.is_file():
            return candidate
    return None


pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (CI installs it)"),
    pytest.mark.skipif(jupyter_lab() is None, reason="JupyterLab not installed: run `make learner` (make test does)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    pytest.importorskip("playwright")
    root = tmp_path_factory.mktemp("lab")
    notebooks = root / "notebooks"
    shutil.copytree(REPO / "notebooks", notebooks)
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "FER_FAST": "1",
        "JUPYTERLAB_SETTINGS_DIR": str(root / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"),
        "JUPYTER_CONFIG_DIR": str(root / "config"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
    }
    env.pop("PYTHONPATH", None)  # the kernel sees the learner's packages only
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        [
            str(jupyter_lab()),
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={notebooks}",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run commands as the menus do
            *(["--allow-root"] if os.geteuid() == 0 else []),  # CI containers run as root
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with {server.returncode}:\n{(root / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}api/status?token={token}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer in 90 s:\n{(root / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield base, token
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()


def run_all(page, base: str, token: str, notebook: str) -> None:
    """Open ``notebook`` in JupyterLab, run every cell, fail on any error output."""
    page.goto(f"{base}lab/tree/{notebook}?token={token}&reset")
    page.wait_for_function(
        "() => window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel", timeout=120_000
    )
    page.evaluate("async () => { await window.jupyterapp.shell.currentWidget.sessionContext.ready; }")
    page.evaluate("async () => { await window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    page.wait_for_function(
        """() => {
            const panel = window.jupyterapp.shell.currentWidget;
            const cells = panel.content.widgets.filter((c) => c.model.type === 'code');
            return panel.sessionContext.session.kernel.status === 'idle'
                && cells.every((c) => c.model.executionCount !== null);
        }""",
        timeout=300_000,
    )
    errors = page.evaluate(
        """() => window.jupyterapp.shell.currentWidget.content.widgets
            .filter((c) => c.model.type === 'code')
            .flatMap((c) => { const o = c.model.outputs; return Array.from({length: o.length}, (_, i) => o.get(i).toJSON()); })
            .filter((o) => o.output_type === 'error')
            .map((o) => `${o.ename}: ${o.evalue}`)"""
    )
    assert errors == [], f"{notebook}: cells failed in JupyterLab: {errors}"


def move_slider_and_see_output_change(page, slider_index: int, output_selector: str) -> None:
    """Press the right arrow on a slider's handle (as a learner would with the keyboard) and wait until
    the widget's output looks different."""
    output = page.locator(output_selector).last
    output.wait_for(state="visible", timeout=60_000)
    page.wait_for_timeout(500)  # the first drawing settles
    before = output.screenshot()
    handle = page.locator(".widget-slider .noUi-handle").nth(slider_index)
    handle.focus()
    for _ in range(3):
        handle.press("ArrowRight")
    deadline = time.monotonic() + 60
    while output.screenshot() == before:
        assert time.monotonic() < deadline, "moving the slider did not change the widget's output"
        page.wait_for_timeout(500)


def no_widget_errors(page) -> None:
    assert page.locator(".widget-slider").count() > 0, "no slider rendered: is the ipywidgets extension installed?"
    text = page.inner_text("body")
    assert not [e for e in WIDGET_ERRORS if e in text], f"widget errors on the page: {text[-2000:]}"


def with_browser(test):
    """Run ``test(page)`` in headless Chromium; on failure save a screenshot to test-artifacts/."""
    from playwright.sync_api import sync_playwright

    def run(name: str, *args):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            try:
                test(page, *args)
            except BaseException:
                ARTIFACTS.mkdir(exist_ok=True)
                shot = ARTIFACTS / f"jupyterlab-{name}.png"
                page.screenshot(path=str(shot), full_page=True)
                print(f"screenshot: {shot}")
                raise
            finally:
                browser.close()

    return run


def test_augmentation_sliders_change_the_faces(lab):
    base, token = lab

    def check(page):
        run_all(page, base, token, "02_augmentation.ipynb")
        no_widget_errors(page)
        move_slider_and_see_output_change(page, 1, ".widget-vbox .widget-output")  # AugmentationSliders: rotation

    with_browser(check)("02")


def test_prediction_explorer_slider_changes_the_face(lab):
    base, token = lab

    def check(page):
        run_all(page, base, token, "06_gradcam.ipynb")
        no_widget_errors(page)
        move_slider_and_see_output_change(page, 0, ".widget-vbox .widget-output")  # the explorer's face slider

    with_browser(check)("06")
