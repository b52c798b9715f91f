"""A newcomer's first mistakes with the ``fer`` command: each gives one ``fer: error:`` line that
names the input and the fix, and exit status 1 (docs/cli.md's promise), never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import face_photo
from fer_utils.cli import main


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fer: error: "), err
    return err[0]


def test_an_empty_folder_of_photos_says_it_holds_no_photos(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty")]) == 1
    assert f"{tmp_path / 'empty'}: a folder with no photos" in one_error_line(capsys)


def test_a_missing_photo_is_one_line_not_three(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "me.jpg")]) == 1
    assert f"{tmp_path / 'me.jpg'}: no such file or folder" in one_error_line(capsys)


def test_a_photo_given_to_fer_video_says_to_use_fer_predict(tmp_path, untrained_checkpoint, capsys):
    photo = tmp_path / "me.jpg"
    Image.fromarray(face_photo()).save(photo)
    assert main(["video", str(photo)]) == 1
    line = one_error_line(capsys)
    assert str(photo) in line and "a photo, not a video" in line and "fer predict" in line
    # the Python API says the same, instead of analysing the photo as a video of one frame
    from fer_utils import FERError, Predictor
    from fer_utils.predict.frames import open_video

    with pytest.raises(FERError, match="me.jpg: a photo, not a video.*predict_image"):
        open_video(photo)
    with pytest.raises(FERError, match="a photo, not a video"):
        Predictor.from_checkpoint(untrained_checkpoint, runtime="torch").predict_video(photo)


def test_a_file_that_is_no_checkpoint_names_what_to_pass_without_the_librarys_text(tmp_path, capsys):
    photo, fake = tmp_path / "me.jpg", tmp_path / "model.safetensors"
    Image.fromarray(face_photo()).save(photo)
    fake.write_text("not weights")
    assert main(["predict", str(photo), "--checkpoint", str(fake)]) == 1
    line = one_error_line(capsys)
    assert str(fake) in line and "fer train" in line and "deserializ" not in line.lower()


def test_fer_serve_without_gradio_names_the_install():
    """In a process where gradio cannot be found, as in an install without the app extra."""
    code = (
        "import importlib.util as u, sys; real = u.find_spec; "
        "u.find_spec = lambda name, *a: None if name == 'gradio' else real(name, *a); "
        "from fer_utils.cli import main; sys.exit(main(['serve', '--port', '0']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("fer: error: ") and "gradio" in lines[0] and "pip install -e '.[app]'" in lines[0]


@pytest.mark.parametrize("extra", ["scale", "export", "app", "course"])
def test_every_install_hint_reads_as_the_docs_write_it(extra):
    from fer_utils.core.errors import install_hint

    hint = install_hint(extra)
    assert f"pip install -e '.[{extra}]'" in hint
    docs = Path(__file__).resolve().parents[1] / "docs" / "install.md"
    assert "pip install -e '.[" in docs.read_text()


def test_a_file_that_is_no_photo_is_one_line(tmp_path, untrained_checkpoint, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    assert main(["predict", str(notes), "--checkpoint", str(untrained_checkpoint)]) == 1
    assert f"{notes}: not an image file" in one_error_line(capsys)
