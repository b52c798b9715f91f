"""The contracts a user relies on without reading about them (issue: hostile round 2). Each is
enforced in one place in the library; each test breaks the contract the way a user would.

1. Nothing the user owns is destroyed: outputs never replace inputs or existing files unasked,
   and a run folder holds one run.
2. The app serves only what it was sent, warns when exposed, and concurrent requests never mix.
3. Caches verify what they serve.
4. Bad input is one line, never a traceback or a hang.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import face_photo, hand_edited
from fer_utils.cli import main
from fer_utils.core.errors import FERConfigError, FERDataError, FEROutputError
from fer_utils.data import load_dataset, synthetic_faces
from fer_utils.data.fer2013_csv import write_fer2013_csv
from fer_utils.faces.detection import FaceBox
from fer_utils.predict.predictor import Predictor

QUICK = ["--image-size", "32", "--no-pretrained", "--batch-size", "32", "--quiet", "--eval-batch-size", "64"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("fer: error: "), err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "p.jpg"
    Image.fromarray(face_photo()).save(path)
    return path


# 1. Nothing the user owns is destroyed ----------------------------------------------------------


def test_predict_refuses_to_write_its_json_over_the_photo(photo, untrained_checkpoint, capsys):
    before = photo.read_bytes()
    code = main(["predict", str(photo), "--checkpoint", str(untrained_checkpoint), "--json", str(photo)])
    assert code == 1 and "is an input of this command" in one_line_error(capsys)
    assert photo.read_bytes() == before


def test_an_output_reached_through_a_link_is_still_an_input(photo, untrained_checkpoint, tmp_path, capsys):
    link = tmp_path / "results.csv"
    link.symlink_to(photo)
    before = photo.read_bytes()
    assert main(["predict", str(photo), "--checkpoint", str(untrained_checkpoint), "--csv", str(link)]) == 1
    assert "is an input" in one_line_error(capsys) and photo.read_bytes() == before


def test_export_refuses_to_replace_the_checkpoint_it_reads(untrained_checkpoint, tmp_path, capsys):
    copy = tmp_path / "m.safetensors"
    copy.write_bytes(untrained_checkpoint.read_bytes())
    assert main(["export", "--checkpoint", str(copy), "--out", str(copy)]) == 1
    assert "is an input of this command" in one_line_error(capsys)
    assert copy.read_bytes() == untrained_checkpoint.read_bytes()


def test_an_existing_output_is_replaced_only_with_overwrite(photo, untrained_checkpoint, tmp_path, capsys):
    out = tmp_path / "mine.json"
    out.write_text("my notes")
    args = ["predict", str(photo), "--checkpoint", str(untrained_checkpoint), "--json", str(out)]
    assert main(args) == 1 and "already exists" in one_line_error(capsys)
    assert out.read_text() == "my notes"
    assert main([*args, "--overwrite"]) == 0
    assert json.loads(out.read_text())["images"][0]["file"] == str(photo)


def test_ensemble_refuses_one_member_and_its_own_member_as_output(untrained_checkpoint, tmp_path, capsys):
    assert main(["ensemble", str(untrained_checkpoint), "--out", str(tmp_path / "e.safetensors")]) == 1
    assert "at least two" in one_line_error(capsys)
    member = tmp_path / "a.safetensors"
    member.write_bytes(untrained_checkpoint.read_bytes())
    assert main(["ensemble", str(member), str(untrained_checkpoint), "--out", str(member)]) == 1
    assert "is an input" in one_line_error(capsys)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "a"
    assert main(["train", "--data", "synthetic:0.03", "--out", str(out), "--epochs", "1", *QUICK]) == 0
    return out


def test_resuming_another_folders_run_is_refused_and_leaves_both_intact(finished_run, tmp_path, capsys):
    other = tmp_path / "b"
    other.mkdir()
    (other / "history.csv").write_text("mine\n")
    code = main(
        ["train", "--data", "synthetic:0.03", "--out", str(other), "--resume", str(finished_run / "last.safetensors")]
    )
    assert code == 1 and "a run folder holds one run" in one_line_error(capsys)
    assert (other / "history.csv").read_text() == "mine\n" and not (other / "best.safetensors").exists()


def test_a_live_run_holds_its_folder_and_a_dead_ones_lock_is_taken_over(tmp_path):
    from fer_utils.train.runs import LOCK_FILE, claim_run_folder

    with (
        claim_run_folder(tmp_path / "r"),
        pytest.raises(FERConfigError, match="another training"),
        claim_run_folder(tmp_path / "r"),
    ):
        pass
    assert not (tmp_path / "r" / LOCK_FILE).exists()  # released
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / "r" / LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with claim_run_folder(tmp_path / "r"):  # its owner is gone: the folder is free
        pass


@pytest.mark.slow
def test_sigterm_stops_training_like_ctrl_c_and_says_how_to_resume(tmp_path, children):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fer_utils.cli", "train", "--data", "synthetic:0.05", "--out", str(out),
           "--epochs", "30", *QUICK]  # fmt: skip
    proc = children(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / "history.csv").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert (out / "history.csv").exists(), proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err  # 128 + SIGTERM, as a shell reports a stopped process
    assert "--resume" in err and "Traceback" not in err
    assert (out / "last.safetensors").is_file() and not (out / ".fer-train.lock").exists()


def test_a_killed_data_loading_worker_is_one_line_that_keeps_the_run_resumable(tmp_path, capsys, monkeypatch):
    import fer_utils.train.loop as training

    real, calls = training.train_one_epoch, []

    def dies_in_the_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # what torch raises when the OOM killer takes a worker
            raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_one_epoch", dies_in_the_second_epoch)
    out = tmp_path / "run"
    code = main(["train", "--data", "synthetic:0.03", "--out", str(out), "--epochs", "3", *QUICK])
    message = one_line_error(capsys)
    assert code == 1 and "data-loading worker died" in message and "num_workers" in message
    assert str(out / "last.safetensors") in message and (out / "last.safetensors").is_file()


# 2. The app serves only what it was sent; concurrent requests never mix -------------------------


def test_the_app_refuses_server_paths_it_was_not_sent(photo, untrained_checkpoint, tmp_path, monkeypatch):
    import gradio as gr

    from fer_utils.deploy.app import analyze

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    predictor = Predictor.from_checkpoint(untrained_checkpoint, runtime="torch")
    with pytest.raises(gr.Error, match="uploads only"):
        analyze(predictor, str(photo))  # a readable server file, but nobody uploaded it
    uploaded = tmp_path / "uploads" / "abc" / "p.jpg"
    uploaded.parent.mkdir(parents=True)
    uploaded.write_bytes(photo.read_bytes())
    with pytest.raises(gr.Error, match="uploads only"):
        analyze(predictor, str(uploaded.parent / ".." / ".." / "p.jpg"))  # no climbing out
    annotated, _, summary, _ = analyze(predictor, str(uploaded))
    assert annotated.size == (640, 480) and summary["faces"]


ABORTED_UPLOAD = """
import socket, sys, time
from pathlib import Path
from fer_utils.deploy import app
from fer_utils.predict.predictor import Predictor

folder = app.private_upload_folder()
predictor = Predictor.from_checkpoint(sys.argv[1], runtime="torch")
demo = app.build_app(predictor).queue()
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[2]), prevent_thread_lock=True)
body = b"--b\\r\\nContent-Disposition: form-data; name=\\"files\\"; filename=\\"p.jpg\\"\\r\\n\\r\\n" + b"x" * 300_000
with socket.create_connection(("127.0.0.1", int(sys.argv[2]))) as s:
    s.sendall(b"POST /gradio_api/upload HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: multipart/form-data; boundary=b\\r\\n"
              b"Content-Length: 900000\\r\\n\\r\\n" + body)
    time.sleep(1.0)  # the client walks away with two thirds of the upload unsent
time.sleep(1.0)
left = [p for p in folder.rglob("*") if p.is_file()]
print("left", len(left), all(p.is_relative_to(folder) for p in left))
print("swept", app.sweep_stale_files(folder, older_than=0), len([p for p in folder.rglob("*") if p.is_file()]))
demo.close()
"""


def test_an_aborted_upload_stays_in_the_apps_own_folder_and_is_swept(untrained_checkpoint, tmp_path):
    import socket as socket_module

    with socket_module.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # anything written outside the app's folder shows up here
    done = subprocess.run(
        [sys.executable, "-c", ABORTED_UPLOAD, str(untrained_checkpoint), str(port)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.strip().splitlines() if " " in line)
    assert lines["left"].startswith(("1 True", "2 True")), done.stdout  # the partial file, in the app's folder
    assert lines["swept"].endswith(" 0"), done.stdout
    stray = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert stray == [], stray  # nothing outside it; and the folder itself went with the process


def test_serving_beyond_this_machine_says_who_can_reach_it():
    from fer_utils.deploy.app import exposure_warning

    assert exposure_warning("127.0.0.1", share=False) is None
    assert "anyone who can reach this machine" in exposure_warning("0.0.0.0", share=False)
    assert "public" in exposure_warning("127.0.0.1", share=True)


def test_concurrent_requests_on_one_predictor_get_their_own_photos_boxes(untrained_checkpoint):
    predictor = Predictor.from_checkpoint(untrained_checkpoint, runtime="torch")
    photos = [face_photo(positions=((x, y),)) for x, y in ((40, 40), (420, 260), (240, 150), (60, 280))]
    expected = [[(b.x, b.y) for b in predictor.find_faces(p).boxes] for p in photos]
    assert all(expected) and len({e[0] for e in expected}) == len(photos)
    got: list[tuple[int, list]] = []
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for i in rng.integers(0, len(photos), 25):
                got.append((int(i), [(b.x, b.y) for b in predictor.find_faces(photos[i]).boxes]))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(got) == 100
    assert all(boxes == expected[i] for i, boxes in got)


def test_huge_photos_are_reported_in_their_own_pixels(tmp_path, untrained_checkpoint):
    class Fixed:
        name = "fixed"

        def detect(self, gray):
            self.seen = gray.shape
            return [FaceBox(10, -5, 40, 40, 0.9)]  # partly above the (reduced) photo

    detector = Fixed()
    predictor = Predictor.from_checkpoint(untrained_checkpoint, runtime="torch", detector=detector)
    path = tmp_path / "wide.png"
    Image.new("L", (3 * 8192, 300), 120).save(path)
    result = predictor.predict_image(path)
    assert detector.seen == (100, 8192)  # analysed reduced three times
    assert (result.width, result.height) == (3 * 8192, 300)
    box = result.faces[0].box
    assert (box.x, box.y, box.w, box.h) == (30, 0, 120, 105)  # scaled back, clipped to the photo


# 3. Caches verify what they serve ---------------------------------------------------------------


def test_a_damaged_or_foreign_onnx_cache_entry_is_rebuilt(untrained_checkpoint, tmp_path):
    from fer_utils.model.assembly import model_from_checkpoint
    from fer_utils.model.export import cached_onnx

    model, checkpoint = model_from_checkpoint(untrained_checkpoint)
    path = cached_onnx(model, checkpoint, tmp_path)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated
    assert cached_onnx(model, checkpoint, tmp_path) == path and path.read_bytes() == good
    path.write_bytes(good[:-16] + bytes(16))  # same size, other content (another model's file)
    assert cached_onnx(model, checkpoint, tmp_path) == path and path.read_bytes() == good


def test_an_unwritable_onnx_cache_exports_once_for_the_process(untrained_checkpoint, tmp_path, capsys, monkeypatch):
    import fer_utils.model.export as runtime
    from fer_utils.model.assembly import model_from_checkpoint

    model, checkpoint = model_from_checkpoint(untrained_checkpoint)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setattr(runtime, "_PROCESS_EXPORTS", {})
    first = runtime.cached_onnx(model, checkpoint, blocked)
    assert first.is_file() and "for this run only" in capsys.readouterr().err
    assert runtime.cached_onnx(model, checkpoint, blocked) == first  # no second export, no second note
    assert capsys.readouterr().err == ""


def test_the_dataset_cache_sees_content_changes_that_keep_size_and_mtime(tmp_path, small_faces):
    csv = write_fer2013_csv({"train": small_faces, "val": small_faces}, tmp_path / "f.csv")
    first = load_dataset(csv).split("train").images.copy()
    stat = csv.stat()
    data = bytearray(csv.read_bytes())
    first_pixel = data.index(b",", data.index(b"\n")) + 1  # row 2's pixels
    data[first_pixel] = ord("1") if data[first_pixel] != ord("1") else ord("2")  # same length, other value
    time.sleep(0.01)
    csv.write_bytes(bytes(data))
    os.utime(csv, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert csv.stat().st_size == stat.st_size and csv.stat().st_mtime_ns == stat.st_mtime_ns
    again = load_dataset(csv).split("train").images
    assert not np.array_equal(first[0], again[0])


def test_a_truncated_dataset_cache_entry_is_rebuilt(class_folder_dataset):
    from fer_utils.core.locations import default_cache_dir

    first = load_dataset(class_folder_dataset)
    entries = sorted(default_cache_dir().glob("faces-*.npz"), key=lambda p: p.stat().st_mtime)
    entry = entries[-1]
    entry.write_bytes(entry.read_bytes()[:500])
    again = load_dataset(class_folder_dataset)
    assert np.array_equal(first.split("all").images, again.split("all").images)


def test_a_teacher_made_from_other_faces_is_refused(tmp_path):
    from fer_utils.train.distill import load_teacher, save_teacher

    made_on = synthetic_faces(3, seed=1)
    other = type(made_on)(255 - made_on.images, made_on.labels, made_on.classes, made_on.sources)  # same names
    probabilities = np.full((len(made_on), len(made_on.classes)), 1 / len(made_on.classes), np.float32)
    path = save_teacher(tmp_path / "t.npz", made_on, probabilities, {"data": "synthetic"})
    assert load_teacher(path, made_on).shape == probabilities.shape
    with pytest.raises(FERDataError, match="made from other faces"):
        load_teacher(path, other)
    with pytest.raises(FEROutputError, match="already exists"):
        save_teacher(path, made_on, probabilities, {})


# 4. One line, never a traceback or a hang -------------------------------------------------------


@pytest.mark.parametrize("spec", ["synthetic:-1", "synthetic:nan", "synthetic:1e6", "synthetic:abc"])
def test_bad_synthetic_sizes_are_one_line(spec, capsys):
    assert main(["data", "info", spec]) == 1
    assert spec in one_line_error(capsys)


def test_a_fifo_on_the_command_line_is_skipped_not_waited_on(photo, tmp_path, untrained_checkpoint, capsys):
    fifo = tmp_path / "f.jpg"
    os.mkfifo(fifo)
    assert main(["predict", str(fifo), str(photo), "--checkpoint", str(untrained_checkpoint)]) == 0
    assert "not a regular file" in capsys.readouterr().err


def test_csv_faces_larger_than_the_csv_modules_field_limit_load(tmp_path):
    faces = synthetic_faces(1, seed=0)
    big = type(faces)(
        np.stack([np.array(Image.fromarray(i).resize((200, 200))) for i in faces.images]),
        faces.labels,
        faces.classes,
        faces.sources,
    )
    path = write_fer2013_csv({"train": big}, tmp_path / "big.csv")
    assert load_dataset(path, size=200, cache=False).split("train").images.shape[1:] == (200, 200)


def test_a_binary_file_named_csv_is_one_line(tmp_path, capsys):
    path = tmp_path / "zeros.csv"
    path.write_bytes(bytes(1 << 20))
    assert main(["data", "info", str(path), "--no-cache"]) == 1
    assert "NUL bytes" in one_line_error(capsys)


def test_a_bad_notebook_parameter_names_its_variable(monkeypatch):
    from fer_utils.course import param

    monkeypatch.setenv("FER_EPOCHS", "abc")
    with pytest.raises(FERConfigError, match="FER_EPOCHS='abc'"):
        param("FER_EPOCHS", 3)


def test_a_yunet_model_that_is_not_yunet_is_one_line(tmp_path, untrained_checkpoint, photo, monkeypatch, capsys):
    garbage = tmp_path / "yunet.onnx"
    garbage.write_bytes(b"not a model at all")
    monkeypatch.setenv("FER_YUNET_MODEL", str(garbage))
    assert main(["predict", str(photo), "--checkpoint", str(untrained_checkpoint)]) == 1
    assert "not a YuNet face detector" in one_line_error(capsys)
    other = tmp_path / "classifier.onnx"
    assert main(["export", "--checkpoint", str(untrained_checkpoint), "--out", str(other), "--no-check"]) == 0
    monkeypatch.setenv("FER_YUNET_MODEL", str(other))
    assert main(["predict", str(photo), "--checkpoint", str(untrained_checkpoint)]) == 1
    assert "YuNet" in one_line_error(capsys)


@pytest.mark.parametrize("arch", ["efficientnet-b7", "efficientnet-b0"])
def test_an_edited_architecture_is_refused_before_the_model_is_built(untrained_checkpoint, tmp_path, arch):
    from fer_utils.core.errors import FERCheckpointError
    from fer_utils.model.assembly import load_model

    edited = hand_edited(untrained_checkpoint, tmp_path / "edited.safetensors", {"arch": arch})
    with pytest.raises(FERCheckpointError, match="describes another model than the weights"):
        load_model(edited)  # checked on PyTorch's meta device: no B7 (66 M parameters) is ever allocated
    ensemble = tmp_path / "ensemble.safetensors"
    from fer_utils.model.assembly import save_ensemble
    from fer_utils.model.checkpoints import read_checkpoint_meta

    save_ensemble([untrained_checkpoint, untrained_checkpoint], ensemble)
    members = read_checkpoint_meta(ensemble)["members"]
    members[1]["arch"] = arch
    with pytest.raises(FERCheckpointError, match="describes another model than the weights"):
        load_model(hand_edited(ensemble, tmp_path / "edited-ensemble.safetensors", {"members": members}))
