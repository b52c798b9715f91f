import numpy as np
import pytest
from PIL import Image

from conftest import save_class_folders
from fer_utils.core.errors import FERDataError
from fer_utils.core.labels import EMOTIONS
from fer_utils.data import load_dataset, load_image_folders, read_face


def test_class_folders_load_with_labels_from_folder_names(class_folder_dataset, small_faces):
    dataset = load_image_folders(class_folder_dataset)
    assert dataset.format == "class-folders"
    faces = dataset.splits["all"]
    assert faces.class_counts().tolist() == [2] * 7
    order = np.argsort([int(s.rsplit("/", 1)[1][:-4]) for s in faces.sources])
    assert (faces.labels[order] == small_faces.labels).all()
    assert (faces.images[order] == small_faces.images).all()


def test_synonym_folder_names(tmp_path, small_faces):
    root = save_class_folders(
        tmp_path / "d",
        small_faces,
        {"angry": "Anger", "happy": "happiness", "sad": "sadness", "surprise": "surprised", "fear": "fearful"},
    )
    faces = load_image_folders(root).splits["all"]
    assert faces.class_counts().tolist() == [2] * 7


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "I;16", "CMYK", "LA", "1"])
def test_any_image_mode_becomes_a_48px_gray_face(tmp_path, mode):
    gradient = np.tile(np.linspace(0, 255, 120).astype(np.uint8), (90, 1))
    image = Image.fromarray(gradient).convert("RGB")
    if mode == "I;16":
        image = Image.fromarray(gradient.astype(np.uint16) * 257)
        assert image.mode == "I;16"
    else:
        image = image.convert(mode)
    path = tmp_path / f"face.{'tiff' if mode in ('CMYK', 'I;16') else 'png'}"
    image.save(path)
    face = read_face(path)
    assert face.shape == (48, 48) and face.dtype == np.uint8
    assert face[:, 0].mean() < 80 and face[:, -1].mean() > 170  # the gradient survives (16-bit scaled, not clipped)


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((40, 80), np.uint8)
    array[:, :40] = 255  # white left half
    image = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    image.save(tmp_path / "rot.jpg", exif=exif)
    face = read_face(tmp_path / "rot.jpg")
    assert face[:10].mean() > 200 and face[-10:].mean() < 50  # white half is now on top


def test_bad_files_are_skipped_and_reported(tmp_path, small_faces):
    root = save_class_folders(tmp_path / "d", small_faces)
    (root / "happy" / "notes.txt").write_text("not an image")
    (root / "happy" / "fake.jpg").write_text("not really a jpeg")
    good = (root / "sad").iterdir().__next__()
    (root / "sad" / "truncated.png").write_bytes(good.read_bytes()[:60])
    (root / "sad" / "empty.png").write_bytes(b"")
    dataset = load_image_folders(root)
    assert len(dataset.splits["all"]) == 14
    reasons = {s.source.rsplit("/", 1)[1]: s.reason for s in dataset.skipped}
    assert set(reasons) == {"notes.txt", "fake.jpg", "truncated.png", "empty.png"}
    assert "not an image" in reasons["fake.jpg"]
    assert "truncated" in reasons["truncated.png"] or "corrupt" in reasons["truncated.png"]


def test_decompression_bomb_guard_holds(tmp_path, monkeypatch):
    Image.new("L", (200, 200)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(FERDataError, match="too large"):
        read_face(tmp_path / "big.png")


def test_unknown_class_folder_is_named(tmp_path, small_faces):
    root = save_class_folders(tmp_path / "d", small_faces, {"happy": "confused"})
    with pytest.raises(FERDataError, match="unknown class folder.*confused"):
        load_image_folders(root)


def test_folder_without_class_folders(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(FERDataError, match="no class folders"):
        load_image_folders(tmp_path)


def test_empty_class_folder_is_noted_and_all_empty_is_an_error(tmp_path, small_faces):
    root = save_class_folders(tmp_path / "d", small_faces)
    for p in (root / "disgust").iterdir():
        p.unlink()
    dataset = load_image_folders(root)
    assert any("disgust" in n and "no images" in n for n in dataset.notes)
    assert dataset.splits["all"].class_counts()["disgust"] == 0
    empty = tmp_path / "e"
    for name in EMOTIONS:
        (empty / name).mkdir(parents=True)
    with pytest.raises(FERDataError, match="no images"):
        load_image_folders(empty)


def test_contempt_is_dropped_with_a_count_or_kept_in_8_class_mode(tmp_path, small_faces):
    root = save_class_folders(tmp_path / "d", small_faces)
    (root / "contempt").mkdir()
    for i in range(3):
        Image.fromarray(small_faces.images[i]).save(root / "contempt" / f"c{i}.png")
    seven = load_image_folders(root)
    assert len(seven.splits["all"]) == 14
    assert any("dropped 3 images" in n and "contempt" in n for n in seven.notes)
    eight = load_image_folders(root, include_contempt=True)
    assert eight.classes[-1] == "contempt" and eight.splits["all"].class_counts()["contempt"] == 3


def test_kaggle_layout_splits_test_folder_by_file_prefix(tmp_path, small_faces):
    save_class_folders(tmp_path / "k" / "train", small_faces, prefix="Training_")
    save_class_folders(tmp_path / "k" / "test", small_faces.subset(np.arange(7)), prefix="PublicTest_")
    save_class_folders(tmp_path / "k" / "test", small_faces.subset(np.arange(7, 14)), prefix="PrivateTest_")
    dataset = load_image_folders(tmp_path / "k")
    assert dataset.format == "kaggle-folders"
    assert {k: len(v) for k, v in dataset.splits.items()} == {"train": 14, "val": 7, "test": 7}
    assert all("PrivateTest_" in s for s in dataset.splits["test"].sources)


def test_kaggle_layout_without_prefixes_keeps_test_split(tmp_path, small_faces):
    save_class_folders(tmp_path / "k" / "train", small_faces)
    save_class_folders(tmp_path / "k" / "test", small_faces)
    assert set(load_image_folders(tmp_path / "k").splits) == {"train", "test"}


def test_missing_path_is_named():
    with pytest.raises(FERDataError, match="nowhere/at/all: no such file"):
        load_dataset("nowhere/at/all")
