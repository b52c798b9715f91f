"""Contracts owned by what flows, not by each command (issue: contracts round 3). One test per
contract, over the commands and formats it covers:

1. Inputs: no output replaces anything a command reads (files inside input folders, calibration
   data, labels, members; through links), with or without --overwrite.
2. Interruption: SIGTERM and SIGHUP stop a command as Ctrl-C does (partial outputs kept and
   valid, temporary files removed, exit 128 + the signal).
3. Model metadata: every model format gets the same checks, before anything is allocated.
4. Limits: the one pixel limit holds for video frames as for photos.
5. Dataset files stay in their folder and are refused by row when damaged.
(Untrusted text at the sinks: tests/test_sinks.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import face_photo, hand_edited, write_face_video
from fer_utils.cli import main
from fer_utils.core.errors import FERCheckpointError, FERDataError
from fer_utils.data.fer2013_csv import write_fer2013_csv


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("fer: error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(face_photo(background=100 + i)).save(folder / f"p{i}.jpg")
    return folder


# 1. inputs -----------------------------------------------------------------------------------


def _input_cases(tmp: Path, photos: Path, checkpoint: Path, faces_dir: Path) -> dict[str, tuple[list[str], Path]]:
    """Each case: a command line whose output names something the command reads, and that file."""
    (tmp / "videos").mkdir()
    video = write_face_video(tmp / "videos" / "v.mp4", lambda i: [(110, 70)], n_frames=5)
    (tmp / "link.csv").symlink_to(photos / "p1.jpg")
    os.link(photos / "p2.jpg", tmp / "hard.json")
    calibration = write_fer2013_csv({"train": _faces()}, tmp / "cal.csv")
    face = sorted((faces_dir / "angry").iterdir())[0]
    member = tmp / "member.safetensors"
    member.write_bytes(checkpoint.read_bytes())
    return {
        "predict: a photo inside an input folder": (["predict", str(photos), "--json", str(photos / "p0.jpg")], photos / "p0.jpg"),
        "predict: a symbolic link to a photo": (["predict", str(photos), "--csv", str(tmp / "link.csv")], photos / "p1.jpg"),
        "predict: a hard link to a photo": (["predict", str(photos / "p2.jpg"), "--json", str(tmp / "hard.json")], photos / "p2.jpg"),
        "video: a video inside an input folder": (["video", str(tmp / "videos"), "--csv", str(video)], video),
        "export: the int8 calibration data": (
            ["export", "--checkpoint", str(checkpoint), "--int8", "--calibration-data", str(calibration), "--out", str(calibration)],
            calibration,
        ),
        "evaluate: a face inside the dataset folder": (
            ["evaluate", "--checkpoint", str(checkpoint), "--data", str(faces_dir), "--json", str(face)],
            face,
        ),
        "ensemble: a member": (["ensemble", str(checkpoint), str(member), "--out", str(member)], member),
    }  # fmt: skip


def _faces():
    from fer_utils.data import synthetic_faces

    return synthetic_faces(n_per_class=2, seed=1)


def test_no_output_replaces_anything_the_command_reads(
    tmp_path, photos, untrained_checkpoint, class_folder_dataset, capsys
):
    cases = _input_cases(tmp_path, photos, untrained_checkpoint, class_folder_dataset)
    for name, (args, victim) in cases.items():
        before = victim.read_bytes()
        assert main([*args, "--overwrite"]) == 1, name
        err = one_line(capsys)
        assert "is an input of this command" in err and "--overwrite never replaces inputs" in err, (name, err)
        assert victim.read_bytes() == before, name


# 2. interruption ---------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_keeps_the_results_so_far_and_says_what_was_not_reached(
    signum, photos, tmp_path, untrained_checkpoint, monkeypatch, capsys
):
    from fer_utils.predict.predictor import Predictor

    real, calls = Predictor.predict_image, []

    def stopped_at_the_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signum)  # what `timeout`, `kill`, a closed terminal or Ctrl-C send
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict_image", stopped_at_the_third)
    out = tmp_path / "faces.json"
    status = main(["predict", str(photos), "--json", str(out), "--no-detect", "--quiet", "--runtime", "torch",
                   "--checkpoint", str(untrained_checkpoint)])  # fmt: skip
    assert status == 128 + signum
    err = capsys.readouterr().err
    assert "interrupted after 2 of 5 photos" in err and str(out) in err and "Traceback" not in err
    saved = json.loads(out.read_text())
    assert [Path(r["file"]).name for r in saved["images"]] == ["p0.jpg", "p1.jpg"]
    assert [(Path(s["source"]).name, s["reason"]) for s in saved["skipped"]] == [
        (f"p{i}.jpg", "not analysed: the run was stopped before it") for i in (2, 3, 4)
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handlers are the caller's again


def test_sigterm_stops_a_video_run_with_its_rows_kept(tmp_path, untrained_checkpoint, children):
    video = write_face_video(tmp_path / "long.mp4", lambda i: [(110, 70)], n_frames=2400)
    out = tmp_path / "faces.csv"
    command = [sys.executable, "-m", "fer_utils.cli", "video", str(video), "--csv", str(out), "--quiet",
               "--checkpoint", str(untrained_checkpoint)]  # fmt: skip
    process = children(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if [p for p in tmp_path.glob(".faces.csv.*") if p.exists() and p.stat().st_size > 2000]:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "Traceback" not in err and "interrupted at" in err
    lines = out.read_text().splitlines()
    assert 5 < len(lines) < 2400 and lines[0].startswith("file,frame,")
    assert not list(tmp_path.glob(".faces.csv.*"))


# 3. model metadata --------------------------------------------------------------------------

HOSTILE_DESCRIPTIONS = {
    "a huge input size": {"image_size": 12000},
    "a repeated class name": {"classes": ["happy"] * 7},
    "three class names for seven outputs": {"classes": ["a", "b", "c"]},
    "a class name that clears the screen": {"classes": ["angry\x1b[2J", "disgust", "fear", "happy", "neutral", "sad", "surprise"]},
    "a std of zero": {"std": [0.0, 0.0, 0.0]},
    "a NaN mean": {"mean": [float("nan")] * 3},
}  # fmt: skip


@pytest.fixture(scope="module")
def exported(untrained_checkpoint, tmp_path_factory) -> Path:
    from fer_utils.model.export import export_onnx

    return export_onnx(untrained_checkpoint, tmp_path_factory.mktemp("onnx") / "model.onnx", check=False).path


def _edited_onnx(source: Path, out: Path, updates: dict) -> Path:
    import onnx

    model = onnx.load(str(source))
    for prop in model.metadata_props:
        if prop.key in updates:
            prop.value = (
                json.dumps(updates[prop.key]) if not isinstance(updates[prop.key], int) else str(updates[prop.key])
            )
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize("case", HOSTILE_DESCRIPTIONS)
def test_every_model_format_gets_the_same_metadata_checks_before_any_work(
    case, untrained_checkpoint, exported, tmp_path, capsys
):
    photo = tmp_path / "face.png"
    Image.fromarray(face_photo()).save(photo)
    updates = HOSTILE_DESCRIPTIONS[case]
    models = [
        hand_edited(untrained_checkpoint, tmp_path / "edited.safetensors", updates),
        _edited_onnx(exported, tmp_path / "edited.onnx", updates),
    ]
    for model in models:
        assert main(["predict", str(photo), "--no-detect", "--checkpoint", str(model)]) == 1, (case, model)
        err = one_line(capsys)
        assert str(model) in err and "metadata" in err and "\x1b" not in err, (case, err)  # caught by the check


def test_onnx_runtime_failures_are_one_line_naming_the_model(exported, monkeypatch):
    from fer_utils.runtime.onnx import OnnxClassifier

    classifier = OnnxClassifier(exported)
    with pytest.raises(FERCheckpointError, match="ONNX Runtime could not run this model") as err:
        classifier.logits(np.zeros((2, 3, 17, 17), np.float32))  # a wrong input size reaches the runtime
    assert str(exported) in str(err.value) and "\n" not in str(err.value)


# 4. limits -----------------------------------------------------------------------------------


def test_the_pixel_limit_holds_for_video_frames_as_for_photos(tmp_path, untrained_checkpoint, monkeypatch, capsys):
    import fer_utils.data.images as images
    from fer_utils.data.images import open_image
    from fer_utils.predict.predictor import Predictor

    video = write_face_video(tmp_path / "v.mp4", lambda i: [(110, 70)], n_frames=3)  # 320 x 240
    photo = tmp_path / "p.png"
    Image.fromarray(face_photo()).save(photo)  # 640 x 480
    monkeypatch.setattr(images, "MAX_PIXELS", 200 * 200)
    with pytest.raises(FERDataError, match="over the limit"):
        open_image(photo)
    with pytest.raises(FERDataError, match="over the limit"):
        Predictor.from_checkpoint(untrained_checkpoint, runtime="torch").predict_video(video)
    assert main(["video", str(video), "--quiet", "--checkpoint", str(untrained_checkpoint), "--runtime", "torch"]) == 1
    assert "320x240 pixels is over the limit" in one_line(capsys)


# 5. dataset files ------------------------------------------------------------------------------

VOTES = "0,0,0,10,0,0,0,0,0,0"
BOX = '"(0, 0, 48, 48)"'


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["../../private.png," + BOX + "," + VOTES], "row 1 names the image '../../private.png'"),
        (["/etc/private.png," + BOX + "," + VOTES], "row 1 names the image '/etc/private.png'"),
        (["f0.png," + BOX + "," + VOTES, "x" * 200_000 + ",b," + VOTES], "row 2 names the image 'xxx"),
        (["f0.png," + BOX + ",0,0,0,1e39,0,0,0,0,0,0"], "row 1 has vote counts"),
        (["f0.png," + BOX + "," + VOTES, "f1.png," + BOX + "," + VOTES, "f0.png," + BOX + "," + VOTES],
         "row 3 repeats f0.png (first in row 1)"),
    ],
)  # fmt: skip
def test_ferplus_label_files_stay_in_their_folder_and_are_refused_by_row(rows, message, tmp_path):
    from fer_utils.data.ferplus import read_ferplus_label_file

    label = tmp_path / "FER2013Train" / "label.csv"
    label.parent.mkdir()
    label.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(FERDataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_ferplus_label_file(label)


def test_a_ferplus_label_file_with_a_byte_order_mark_keeps_its_first_face(tmp_path):
    from fer_utils.data.ferplus import read_ferplus_label_file

    label = tmp_path / "label.csv"
    label.write_text("f0.png," + BOX + "," + VOTES + "\nf1.png," + BOX + "," + VOTES + "\n", encoding="utf-8-sig")
    names, votes = read_ferplus_label_file(label)
    assert names == ["f0.png", "f1.png"] and votes.shape == (2, 10)


# 6. the single defects: each a traceback or a false "wrote" before ------------------------------


@pytest.fixture(scope="module")
def still_video(tmp_path_factory) -> Path:
    return write_face_video(tmp_path_factory.mktemp("video") / "v.mp4", lambda i: [(110, 70)], n_frames=6)


def test_video_flags_and_inputs_that_cannot_work_are_one_line(still_video, untrained_checkpoint, capsys):
    common = ["--quiet", "--checkpoint", str(untrained_checkpoint)]
    assert main(["video", str(still_video), "--start", "nan", *common]) == 1
    assert "--start and --end must be numbers of seconds" in one_line(capsys)
    assert main(["video", str(still_video), "--end", "nan", *common]) == 1
    one_line(capsys)
    assert main(["video", str(still_video), str(still_video.parent), *common]) == 1  # also inside the folder
    assert "named twice" in one_line(capsys)


def test_a_plot_of_no_faces_is_not_said_to_be_written(tmp_path, untrained_checkpoint, capsys):
    empty = write_face_video(tmp_path / "empty.mp4", lambda i: [], n_frames=4)
    plot = tmp_path / "timeline.png"
    assert main(["video", str(empty), "--plot", str(plot), "--quiet", "--checkpoint", str(untrained_checkpoint)]) == 0
    err = capsys.readouterr().err
    assert not plot.exists() and "wrote" not in err and f"no plot written to {plot}" in err


def test_a_full_disk_is_one_line_and_leaves_the_earlier_output(
    still_video, untrained_checkpoint, tmp_path, monkeypatch, capsys
):
    from fer_utils.predict.video_outputs import CsvStream

    out = tmp_path / "faces.csv"
    out.write_text("an earlier run\n")

    def no_space(self, result):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(CsvStream, "write", no_space)
    args = [
        "video",
        str(still_video),
        "--csv",
        str(out),
        "--overwrite",
        "--quiet",
        "--checkpoint",
        str(untrained_checkpoint),
    ]
    assert main(args) == 1
    assert "No space left on device" in one_line(capsys)
    assert out.read_text() == "an earlier run\n" and [p.name for p in tmp_path.iterdir()] == ["faces.csv"]


def test_an_absent_camera_is_our_one_line_without_opencv_warnings(untrained_checkpoint, capfd):
    assert main(["webcam", "--camera", "7", "--checkpoint", str(untrained_checkpoint), "--runtime", "torch"]) == 1
    err = capfd.readouterr().err.strip()
    assert err.startswith("fer: error: camera 7") and len(err.splitlines()) == 1, err


def test_a_taken_port_is_one_line(untrained_checkpoint, children):
    import socket

    pytest.importorskip("gradio")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [
            sys.executable,
            "-m",
            "fer_utils.cli",
            "serve",
            "--port",
            str(port),
            "--checkpoint",
            str(untrained_checkpoint),
        ]
        process = children(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})  # fmt: skip
        _, err = process.communicate(timeout=120)
    assert process.returncode == 1 and "Traceback" not in err
    assert (
        err.strip().splitlines()[-1]
        == f"fer: error: cannot serve on 127.0.0.1:{port} (the port is taken, or not allowed); choose another with --port"
    )


def test_a_teacher_file_of_probabilities_that_are_not_probabilities_is_refused(tmp_path):
    from fer_utils.data import synthetic_faces
    from fer_utils.train.distill import load_teacher, save_teacher

    faces = synthetic_faces(n_per_class=2, seed=2)
    path = save_teacher(tmp_path / "t.npz", faces, np.zeros((len(faces), 7), np.float32), {"data": "synthetic"})
    with pytest.raises(FERDataError, match="sum to 0"):
        load_teacher(path, faces)


def test_the_apps_messages_show_reasons_not_server_paths():
    from fer_utils.deploy.app import public_reason, upload_folder

    where = upload_folder() / "video-abc123" / "clip.mp4"
    err = FERDataError(f"{where}: not a video OpenCV can read; {os.getcwd()}/models/x.onnx: broken")
    assert public_reason(err) == "clip.mp4: not a video OpenCV can read; x.onnx: broken"


def test_the_default_model_is_an_input_but_a_model_the_command_does_not_read_may_be_rebuilt(
    tmp_path, untrained_checkpoint, monkeypatch, capsys
):
    """`make model` rebuilds a shipped model with --overwrite: only what a command reads is protected."""
    shipped = tmp_path / "shipped.safetensors"
    shipped.write_bytes(untrained_checkpoint.read_bytes())
    monkeypatch.setenv("FER_CHECKPOINT", str(shipped))  # the default checkpoint of every command
    before = shipped.read_bytes()
    assert main(["export", "--out", str(shipped), "--overwrite", "--no-check"]) == 1
    assert "is an input of this command" in one_line(capsys) and shipped.read_bytes() == before
    rebuilt = main(
        ["export", "--checkpoint", str(untrained_checkpoint), "--out", str(shipped), "--overwrite", "--no-check"]
    )
    assert rebuilt == 0 and shipped.read_bytes() != before  # another checkpoint's export may replace it


def test_an_output_that_is_a_device_or_pipe_is_refused(tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    photo = tmp_path / "face.png"
    Image.fromarray(face_photo()).save(photo)
    assert main(["predict", str(photo), "--json", str(fifo), "--overwrite"]) == 1
    assert "is not a regular file" in one_line(capsys) and fifo.is_fifo()


def test_the_apps_live_camera_frames_have_the_same_pixel_limit(untrained_checkpoint, monkeypatch):
    gr = pytest.importorskip("gradio")
    import fer_utils.data.images as images
    from fer_utils.deploy.app import live_frame
    from fer_utils.predict.predictor import Predictor

    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 100)
    predictor = Predictor.from_checkpoint(untrained_checkpoint, runtime="torch")
    with pytest.raises(gr.Error, match="over the limit"):
        live_frame(predictor, np.zeros((200, 200, 3), np.uint8), None)
