from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_utils.core.errors import FERDataError
from fer_utils.core.labels import EMOTIONS
from fer_utils.data import load_dataset

HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"


def write_ferplus(path, rows):
    path.write_text(HEADER + "".join(f"{usage},fer{i:07d}.png,{votes}\n" for i, (usage, votes) in enumerate(rows)))
    return path


def test_ferplus_labels_replace_fer2013_labels(tmp_path, fer2013_csv):
    # fer2013_csv has 28 rows: 14 Training, 7 PublicTest, 7 PrivateTest (in that order)
    rows = (
        [("Training", "0,10,0,0,0,0,0,0,0,0")] * 14
        + [("PublicTest", "0,0,0,0,0,0,0,0,0,10")] * 7
        + [("PrivateTest", "2,0,0,8,0,0,0,0,0,0")] * 7
    )
    ferplus = write_ferplus(tmp_path / "fer2013new.csv", rows)
    dataset = load_dataset(fer2013_csv, ferplus=ferplus)
    assert (dataset.splits["train"].labels == EMOTIONS.index("happy")).all()
    assert "val" not in dataset.splits  # every PublicTest row was "not a face"
    assert (dataset.splits["test"].labels == EMOTIONS.index("sad")).all()
    assert any("dropped 7 of 28" in n for n in dataset.notes)

    soft = load_dataset(fer2013_csv, ferplus=ferplus, ferplus_mode="soft").splits["test"]
    assert soft.soft_labels.shape == (7, 7)
    assert np.allclose(soft.soft_labels[:, EMOTIONS.index("sad")], 0.8)


def test_ferplus_row_count_must_match(tmp_path, fer2013_csv):
    ferplus = write_ferplus(tmp_path / "fer2013new.csv", [("Training", "0,10,0,0,0,0,0,0,0,0")] * 3)
    with pytest.raises(FERDataError, match="3 vote rows but .* has 28 faces"):
        load_dataset(fer2013_csv, ferplus=ferplus, cache=False)


def _write_ferplus_folder(folder: Path, votes: list[list[int]]) -> Path:
    """FER+'s image layout: ferNNNNNNN.png faces and a header-less label.csv of ten vote counts."""
    folder.mkdir(parents=True)
    rows = []
    for i, counts in enumerate(votes):
        name = f"fer{i:07d}.png"
        Image.fromarray(np.full((48, 48), 20 * i % 256, np.uint8)).save(folder / name)
        rows.append(",".join([name, '"(0, 0, 48, 48)"', *map(str, counts)]))
    (folder / "label.csv").write_text("\n".join(rows) + "\n")
    return folder


# columns: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF
FERPLUS_VOTES = [
    [0, 10, 0, 0, 0, 0, 0, 0, 0, 0],  # happy, unanimous
    [6, 0, 4, 0, 0, 0, 0, 0, 0, 0],  # neutral by majority; soft 0.6 neutral / 0.4 surprise
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face: dropped
    [0, 0, 0, 0, 0, 0, 0, 8, 2, 0],  # contempt: dropped in 7-class mode
    [0, 0, 0, 4, 4, 0, 0, 0, 2, 0],  # sad/angry tie: no majority, kept as soft labels
]


def test_ferplus_image_layout_loads_majority_and_soft_labels(tmp_path):
    root = tmp_path / "ferplus"
    _write_ferplus_folder(root / "FER2013Train", FERPLUS_VOTES)
    _write_ferplus_folder(root / "FER2013Valid", FERPLUS_VOTES)
    majority = load_dataset(root, ferplus_mode="majority", cache=False)
    train = majority.split("train")
    assert [train.classes[i] for i in train.labels] == ["happy", "neutral"]
    assert train.soft_labels is None
    soft = load_dataset(root, ferplus_mode="probability", cache=False)  # FER+'s own name for soft
    train = soft.split("train")
    assert len(train) == 3 and train.soft_labels is not None
    neutral = train.classes.index("neutral")
    np.testing.assert_allclose(train.soft_labels[1, neutral], 0.6)
    assert train.soft_labels[1, train.classes.index("surprise")] == pytest.approx(0.4)
    val = soft.split("val")  # validation is always scored on the majority label, as FER+ reports it
    assert [val.classes[i] for i in val.labels] == ["happy", "neutral"] and val.soft_labels is None
    assert any("unanimous" in n for n in soft.notes) and any("dropped 3 of 5" in n for n in soft.notes)
    eight = load_dataset(root, ferplus_mode="majority", include_contempt=True, cache=False).split("train")
    assert "contempt" in [eight.classes[i] for i in eight.labels]


def test_a_ferplus_label_file_with_a_bad_row_names_the_row(tmp_path):
    folder = _write_ferplus_folder(tmp_path / "FER2013Train", FERPLUS_VOTES[:2])
    (folder / "label.csv").write_text((folder / "label.csv").read_text() + "fer0000009.png,box,1,2\n")
    with pytest.raises(FERDataError, match="row 3 has 4 fields"):
        load_dataset(tmp_path, cache=False)


def test_the_same_faces_are_found_across_jpeg_and_png_copies(tmp_path, small_faces):
    """FER+'s PNGs and Kaggle's JPEGs hold one image differently: match_faces pairs them anyway,
    and finds nothing for a face that is not there."""
    import io

    from fer_utils.data.duplicates import match_faces
    from fer_utils.data.faceset import FaceSet

    def jpeg(image: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=92)
        return np.asarray(Image.open(buffer))

    order = np.random.default_rng(0).permutation(len(small_faces))
    recoded = FaceSet(
        np.stack([jpeg(im) for im in small_faces.images[order]]),
        small_faces.labels[order],
        small_faces.classes,
        small_faces.sources[order],
    )
    stranger = FaceSet(255 - small_faces.images[:1], small_faces.labels[:1], small_faces.classes, ["x"])
    assert (match_faces(recoded, small_faces) == order).all()
    assert (match_faces(stranger, small_faces) == -1).all()


def test_a_ferplus_folder_is_read_whole_with_its_raw_votes(tmp_path):
    from fer_utils.data.ferplus import read_ferplus_folder

    folder = _write_ferplus_folder(tmp_path / "FER2013Valid", FERPLUS_VOTES)
    faces, votes = read_ferplus_folder(folder)
    assert len(faces) == len(FERPLUS_VOTES) and votes.tolist() == FERPLUS_VOTES  # nothing dropped
    assert [faces.classes[k] for k in faces.labels[:2]] == ["happy", "neutral"]
