"""The inference-only install (requirements-inference.txt, `make inference`): `fer predict` runs
an exported model on a photo without torch, and a checkpoint it cannot run says what to do."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV = (REPO / os.environ.get("FER_INFERENCE_VENV", ".venv-inference")).resolve()  # make passes it relative
PHOTO = REPO / "fer_utils" / "assets" / "astronaut.jpg"

pytestmark = pytest.mark.skipif(
    not (VENV / "bin" / "fer").is_file(), reason="no inference-only install: run `make inference` (make test does)"
)


def fer(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["FER_CACHE_DIR"] = str(cwd / "cache")
    return subprocess.run(
        [str(VENV / "bin" / "fer"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_inference_install_has_no_torch():
    done = subprocess.run([str(VENV / "bin" / "python"), "-c", "import torch"], capture_output=True, check=False)
    assert done.returncode != 0


def test_fer_predict_runs_an_exported_model_without_torch(tmp_path, untrained_checkpoint):
    pytest.importorskip("onnxruntime")
    from fer_utils.model.export import export_onnx

    model = export_onnx(untrained_checkpoint, tmp_path / "model.onnx").path
    done = fer("predict", str(PHOTO), "--checkpoint", str(model), "--json", "out.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    image = json.loads((tmp_path / "out.json").read_text())["images"][0]
    assert len(image["faces"]) == 1
    assert abs(sum(image["faces"][0]["probabilities"].values()) - 1) < 1e-4


def test_a_checkpoint_without_its_export_is_one_line_naming_the_fix(tmp_path, untrained_checkpoint):
    done = fer("predict", str(PHOTO), "--checkpoint", str(untrained_checkpoint), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "fer export" in done.stderr and "Traceback" not in done.stderr


def test_fer_video_runs_an_exported_model_without_torch(tmp_path, untrained_checkpoint):
    pytest.importorskip("onnxruntime")
    from conftest import write_face_video
    from fer_utils.model.export import export_onnx

    model = export_onnx(untrained_checkpoint, tmp_path / "model.onnx").path
    video = write_face_video(tmp_path / "clip.mp4", lambda i: [(110, 70)], n_frames=10)
    done = fer("video", str(video), "--checkpoint", str(model), "--csv", "out.csv", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = (tmp_path / "out.csv").read_text().splitlines()
    assert len(rows) == 11 and rows[0].startswith(
        "file,frame,time_s,track,box_x,box_y,box_w,box_h,detection_score,label,score,p_angry"
    )
