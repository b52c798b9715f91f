"""Hostile but fair input: every case gives a result or one clear error, loses nothing and
overwrites nothing. Each test names the failure it guards against."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import hand_edited, save_class_folders
from fer_utils.cli import main
from fer_utils.core.errors import FERCheckpointError, FERConfigError, FERDataError
from fer_utils.data import load_dataset
from fer_utils.data.fer2013_csv import load_fer2013_csv
from fer_utils.data.images import MAX_WORKING_SIDE, open_image, to_grayscale_array
from fer_utils.model.assembly import model_from_checkpoint
from fer_utils.model.checkpoints import (
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
    update_checkpoint_metadata,
)
from fer_utils.predict.predictor import Predictor, expand_image_paths
from fer_utils.train.loop import TrainConfig
from fer_utils.train.runs import resume_config

QUICK = ["--image-size", "32", "--no-pretrained", "--batch-size", "32", "--quiet", "--eval-batch-size", "64"]


def bad_exif_jpeg(path: Path) -> Path:
    """A JPEG whose EXIF Make tag is stored with the wrong type (Pillow raises inside exif_transpose)."""
    exif = Image.Exif()
    exif[0x112] = 6
    exif[0x10F] = "cam"
    raw = exif.tobytes().replace(b"\x01\x0f\x00\x02", b"\x01\x06\x00\x02")
    Image.new("RGB", (64, 64), (120, 90, 60)).save(path, exif=raw)
    return path


@pytest.fixture
def predictor(untrained_checkpoint) -> Predictor:
    return Predictor.from_checkpoint(untrained_checkpoint)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("fer: error: "), err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


# 1. One photo sinks a batch ---------------------------------------------------------------------


def test_a_mistyped_exif_tag_does_not_sink_the_batch(untrained_checkpoint, tmp_path, small_faces):
    photos = tmp_path / "d"
    photos.mkdir()
    bad_exif_jpeg(photos / "bad.jpg")
    Image.fromarray(small_faces.images[0]).save(photos / "good.png")
    assert open_image(photos / "bad.jpg").size == (64, 64)  # pixels are fine; the broken EXIF is ignored
    out = tmp_path / "out.json"
    assert main(["predict", str(photos), "--checkpoint", str(untrained_checkpoint), "--json", str(out)]) == 0
    assert sorted(Path(i["file"]).name for i in json.loads(out.read_text())["images"]) == ["bad.jpg", "good.png"]
    dataset = save_class_folders(tmp_path / "faces", small_faces)
    bad_exif_jpeg(dataset / "happy" / "odd.jpg")
    assert len(load_dataset(dataset, cache=False).split("all")) == len(small_faces) + 1


def test_unexpected_decoder_errors_become_skips(predictor, tmp_path, monkeypatch):
    import fer_utils.data.images as images

    good = tmp_path / "good.png"
    Image.new("L", (40, 40), 128).save(good)
    real_open = Image.open

    def exploding_open(fp, *args, **kwargs):
        if getattr(fp, "name", "").endswith("boom.png"):
            raise TypeError("unsupported operand type(s)")  # what a fuzzed header made Pillow raise
        return real_open(fp, *args, **kwargs)

    (tmp_path / "boom.png").write_bytes(good.read_bytes())
    monkeypatch.setattr(images.Image, "open", exploding_open)
    with pytest.raises(FERDataError, match="boom.png: corrupt or truncated image"):
        open_image(tmp_path / "boom.png")
    results, skipped = predictor.predict_images([good, tmp_path / "boom.png"])
    assert len(results) == 1 and [Path(s.source).name for s in skipped] == ["boom.png"]


# 2. --annotate destroys files -------------------------------------------------------------------


def test_annotate_never_overwrites_inputs_or_other_annotations(untrained_checkpoint, tmp_path):
    photos = tmp_path / "d"
    (photos / "a").mkdir(parents=True)
    (photos / "b").mkdir()
    Image.new("L", (60, 60), 100).save(photos / "me.jpg")
    Image.new("L", (60, 60), 140).save(photos / "a" / "x.jpg")
    Image.new("L", (60, 60), 180).save(photos / "b" / "x.png")
    before = {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    json_out = tmp_path / "r.json"
    args = ["predict", str(photos), "--checkpoint", str(untrained_checkpoint), "--annotate", str(photos)]
    assert main([*args, "--json", str(json_out)]) == 0
    assert all(p.read_bytes() == data for p, data in before.items())  # inputs untouched
    written = {Path(i["annotated"]) for i in json.loads(json_out.read_text())["images"]}
    assert len(written) == 3 and all(p.is_file() and p not in before for p in written)
    first_run = {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    assert main(args) == 0  # a second run (its inputs now include the first run's copies) adds new ones
    assert all(p.read_bytes() == data for p, data in first_run.items())
    assert len([p for p in photos.rglob("*") if p.is_file()]) == len(first_run) + 6


# 3. Resume silently changes the run -------------------------------------------------------------


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume")
    assert main(["train", "--data", "synthetic:0.03", "--out", str(out), "--epochs", "1", "--lr", "0.002", *QUICK]) == 0
    return out


def test_resume_keeps_the_saved_settings(interrupted_run, capsys):
    last = interrupted_run / "last.safetensors"
    assert main(["train", "--data", "synthetic:0.03", "--out", str(interrupted_run), "--resume", str(last),
                 "--epochs", "2", "--quiet"]) == 0  # fmt: skip
    config = read_checkpoint_meta(last)["config"]
    assert (config["image_size"], config["lr"], config["epochs"], config["batch_size"]) == (32, 0.002, 2, 32)
    assert "resuming with epochs 2 (the run was started with 1)" in capsys.readouterr().err


def test_resume_refuses_a_changed_setting_in_one_line(interrupted_run, capsys):
    last = interrupted_run / "last.safetensors"
    code = main(["train", "--data", "synthetic:0.03", "--out", str(interrupted_run), "--resume", str(last),
                 "--image-size", "48", "--quiet"])  # fmt: skip
    assert code == 1
    line = one_line_error(capsys)
    assert "cannot change image_size (saved 32, asked 48)" in line
    with pytest.raises(FERConfigError, match="lr"):
        resume_config(last, lr=0.1)
    assert resume_config(last, epochs=5).epochs == 5


def test_library_resume_with_another_config_is_refused(interrupted_run):
    from fer_utils.data import synthetic_faces
    from fer_utils.train.loop import train

    faces = synthetic_faces(2, seed=1)
    config = TrainConfig.from_dict({**read_checkpoint_meta(interrupted_run / "last.safetensors")["config"]})
    config.label_smoothing = 0.3
    with pytest.raises(FERConfigError, match=r"label_smoothing \(saved 0.1, asked 0.3\)"):
        train(config, faces, faces, interrupted_run, resume=interrupted_run / "last.safetensors")


# 4. NaN models are saved as trained -------------------------------------------------------------


def test_nan_momentum_is_refused_before_training(tmp_path, capsys):
    assert main(["train", "--data", "synthetic:0.03", "--out", str(tmp_path), "--optimizer", "sgd",
                 "--momentum", "nan", *QUICK]) == 1  # fmt: skip
    assert "momentum" in one_line_error(capsys)
    assert not list(tmp_path.iterdir())


def test_a_diverging_run_saves_nothing_and_exits_1(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "synthetic:0.03", "--out", str(out), "--epochs", "1", "--lr", "1e30", *QUICK]) == 1
    line = one_line_error(capsys)
    assert "diverged" in line or "loss became" in line
    assert not (out / "best.safetensors").exists() and not (out / "last.safetensors").exists()


def test_checkpoints_with_non_finite_weights_are_refused(untrained_checkpoint, tmp_path):
    checkpoint = load_checkpoint(untrained_checkpoint)
    model, _ = model_from_checkpoint(untrained_checkpoint)
    next(model.parameters()).data.fill_(float("nan"))
    from fer_utils.runtime.description import ModelDescription

    meta = checkpoint.meta
    card = ModelDescription(meta["arch"], tuple(meta["classes"]), meta["image_size"], meta["mean"], meta["std"])
    broken = save_checkpoint(tmp_path / "nan.safetensors", model, card)
    with pytest.raises(FERCheckpointError, match="NaN or infinite"):
        Predictor.from_checkpoint(broken)


# 5. fer serve rejects its own documented flags --------------------------------------------------


def test_fer_serve_takes_its_documented_flags(untrained_checkpoint, children, tmp_path):
    pytest.importorskip("gradio")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "TMPDIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "fer_utils.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = children(
        [*cmd, "--checkpoint", str(untrained_checkpoint)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stdout.read().decode()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as page:
                    assert page.status == 200 and b"gradio" in page.read().lower()
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("fer serve did not answer within 90 s")
        assert list(tmp_path.glob("fer-app-*")), "the app keeps uploads in a folder of its own"
    finally:
        server.terminate()  # SIGTERM, what systemd and docker stop send
        server.wait(timeout=20)
    assert server.returncode == 143 and not list(tmp_path.glob("fer-app-*"))  # its upload folder is gone


# 6. Bad CSV pixels crash ------------------------------------------------------------------------


def test_csv_rows_with_non_integer_pixels_are_skipped_by_row_number(tmp_path, capsys):
    good = " ".join(["128"] * 2304)
    rows = [good, good.replace("128", "x", 1), good.replace("128", "12.5", 1), good]
    csv = tmp_path / "f.csv"
    csv.write_text("emotion,pixels,Usage\n" + "".join(f"3,{r},Training\n" for r in rows))
    dataset = load_fer2013_csv(csv)
    assert len(dataset.split("train")) == 2
    assert [(s.source.split(" rows ")[1], s.reason) for s in dataset.skipped] == [
        ("3, 4", "pixel values are not whole numbers")
    ]
    assert main(["data", "info", str(csv), "--no-cache"]) == 0
    assert "pixel values are not whole numbers" in capsys.readouterr().out


# 7. Symlinks crash dataset loading --------------------------------------------------------------


def test_broken_and_looping_symlinks_are_reported_not_fatal(tmp_path, small_faces, untrained_checkpoint, capsys):
    root = save_class_folders(tmp_path / "faces", small_faces)
    (root / "happy" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (root / "sad" / "loop1.png").symlink_to(root / "sad" / "loop2.png")
    (root / "sad" / "loop2.png").symlink_to(root / "sad" / "loop1.png")
    for cache in (True, True, False):  # cache miss, cache hit, no cache
        dataset = load_dataset(root, cache=cache)
        assert len(dataset.split("all")) == len(small_faces)
        assert sorted(Path(s.source).name for s in dataset.skipped) == ["gone.png", "loop1.png", "loop2.png"]
    files, skipped = expand_image_paths([root])
    assert len(files) == len(small_faces) and len(skipped) == 3
    assert main(["predict", str(root / "sad"), "--checkpoint", str(untrained_checkpoint)]) == 0
    assert "loop1.png: broken symbolic link" in capsys.readouterr().err


# 8. Output paths become tracebacks --------------------------------------------------------------


def test_unwritable_outputs_fail_before_the_work(untrained_checkpoint, tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("mine")
    photo = tmp_path / "p.png"
    Image.new("L", (48, 48), 90).save(photo)
    ckpt = ["--checkpoint", str(untrained_checkpoint)]
    cases = [
        (["train", "--data", "synthetic:0.03", "--out", "/proc/fer-run", *QUICK], "/proc/fer-run"),
        (["train", "--data", "synthetic:0.03", "--out", str(a_file / "run"), *QUICK], "file.txt/run"),
        (["export", *ckpt, "--out", str(tmp_path)], "is a folder"),
        (["export", *ckpt, "--out", "/proc/m.onnx"], "/proc"),
        (["predict", str(photo), *ckpt, "--json", "/proc/r.json"], "cannot write the JSON results"),
        (["predict", str(photo), *ckpt, "--annotate", str(a_file)], "is a file, not a folder"),
        (["evaluate", "--data", "synthetic:0.03", *ckpt, "--json", str(tmp_path)], "is a folder"),
    ]
    for argv, expected in cases:
        assert main(argv) == 1, argv
        assert expected in one_line_error(capsys), argv
    assert a_file.read_text() == "mine"


def test_results_survive_a_failed_write(untrained_checkpoint, tmp_path, monkeypatch, capsys):
    import fer_utils.core.atomic as atomic

    photo = tmp_path / "p.png"
    Image.new("L", (48, 48), 90).save(photo)

    def full_disk(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic, "write_text_atomic", full_disk)
    code = main(["predict", str(photo), "--checkpoint", str(untrained_checkpoint), "--json", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert code == 1 and "p.png: " in captured.out  # the result is still on screen
    assert "results are printed above" in captured.err and "No space left" in captured.err


# 9. Values not validated ------------------------------------------------------------------------


def test_eval_batch_size_zero_is_refused_before_training(tmp_path, capsys):
    assert main(["train", "--data", "synthetic:0.03", "--out", str(tmp_path), *QUICK, "--eval-batch-size", "0"]) == 1
    assert "eval_batch_size must be at least 1" in one_line_error(capsys)


@pytest.mark.parametrize("value", ["abc", 0, 100000, -48, True, None])
def test_checkpoint_metadata_is_validated_before_use(untrained_checkpoint, tmp_path, value):
    with pytest.raises(FERCheckpointError, match="image_size"):
        update_checkpoint_metadata(untrained_checkpoint, {"image_size": value}, out=tmp_path / "never.safetensors")
    assert not (tmp_path / "never.safetensors").exists()
    bad = hand_edited(untrained_checkpoint, tmp_path / "bad.safetensors", {"image_size": value})
    with pytest.raises(FERCheckpointError, match="image_size"):
        read_checkpoint_meta(bad)
    with pytest.raises(FERCheckpointError, match="image_size"):
        Predictor.from_checkpoint(bad)


def test_checkpoint_metadata_classes_mean_and_std_are_validated(untrained_checkpoint, tmp_path):
    for update, field in [({"classes": "happy"}, "classes"), ({"std": [0, 1, 1]}, "std"), ({"mean": ["a"]}, "mean")]:
        bad = hand_edited(untrained_checkpoint, tmp_path / f"{field}.safetensors", update)
        with pytest.raises(FERCheckpointError, match=field):
            read_checkpoint_meta(bad)


# 10. Memory and CPU amplification ---------------------------------------------------------------


def test_huge_16_bit_images_are_reduced_before_float_work():
    width = MAX_WORKING_SIDE * 2 + 6
    ramp = np.tile(np.linspace(0, 65535, width).astype(np.uint16), (8, 1))
    gray = to_grayscale_array(Image.fromarray(ramp))
    assert gray.shape == (2, width // 3) and gray.dtype == np.uint8
    assert gray[0, 0] < 5 and gray[0, -1] > 250  # scaled by the 16-bit range, not clipped
    small = to_grayscale_array(Image.fromarray(np.full((10, 10), 32768, np.uint16)))
    assert small.shape == (10, 10) and small[0, 0] == 128


def test_huge_8_bit_and_alpha_images_are_reduced():
    wide = Image.new("LA", (MAX_WORKING_SIDE + 10, 4), (30, 255))
    gray = to_grayscale_array(wide)
    assert gray.shape[1] <= MAX_WORKING_SIDE and int(gray[0, 0]) == 30


def test_app_runs_requests_side_by_side():
    from fer_utils.deploy import app

    assert app.CONCURRENCY > 1 and app.QUEUE_SIZE >= 8


# 11. Permission errors say so -------------------------------------------------------------------


def test_unreadable_file_says_permission(tmp_path, monkeypatch):
    import builtins

    import fer_utils.data.images as images

    locked = tmp_path / "locked.png"
    Image.new("L", (8, 8)).save(locked)
    if os.geteuid() == 0:  # root reads anything: make open() answer as it does for a normal user
        real_open = builtins.open

        def no_permission(file, *args, **kwargs):
            if str(file) == str(locked):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(images, "open", no_permission, raising=False)
    else:
        locked.chmod(0)
    with pytest.raises(FERDataError, match=r"locked.png: cannot read \(permission denied\)"):
        open_image(locked)


# Fuzzing: mutated files of every supported format -----------------------------------------------

FORMATS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "TIFF": ".tif", "BMP": ".bmp", "WEBP": ".webp", "PPM": ".ppm"}


def _mutations(data: bytes, rng: np.random.Generator, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        buf = bytearray(data)
        kind = rng.integers(3)
        if kind == 0:  # flip a few bytes
            for i in rng.integers(0, len(buf), rng.integers(1, 6)):
                buf[i] = int(rng.integers(256))
        elif kind == 1:  # truncate
            buf = buf[: rng.integers(1, len(buf))]
        else:  # splice in a run of 0xFF or 0x00 (lengths and markers go wild)
            at = int(rng.integers(0, len(buf)))
            buf[at:at] = bytes([int(rng.choice([0, 255]))]) * int(rng.integers(1, 9))
        out.append(bytes(buf))
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fuzzed_images_give_an_image_or_a_clear_error(predictor, tmp_path):
    rng = np.random.default_rng(2026)
    base = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x112] = 3
    batch = []
    for fmt, suffix in FORMATS.items():
        buffer = io.BytesIO()
        base.save(buffer, fmt, **({"exif": exif} if fmt in ("JPEG", "PNG", "WEBP", "TIFF") else {}))
        for i, data in enumerate(_mutations(buffer.getvalue(), rng, 120)):
            try:
                image = open_image(data)
                assert image.size[0] > 0 and to_grayscale_array(image).dtype == np.uint8
            except FERDataError:
                pass
            if i < 15:
                path = tmp_path / f"{fmt}{i}{suffix}"
                path.write_bytes(data)
                batch.append(path)
    results, skipped = predictor.predict_images(batch)
    assert len(results) + len(skipped) == len(batch) and results
