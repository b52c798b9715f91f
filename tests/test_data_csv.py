import numpy as np
import pytest

from fer_utils.core.errors import FERDataError
from fer_utils.core.labels import EMOTIONS
from fer_utils.data import load_dataset, load_fer2013_csv

PIXELS = " ".join(["7"] * 2304)


def write(tmp_path, text):
    path = tmp_path / "fer.csv"
    path.write_text(text)
    return path


def test_rows_coded_4_and_6_load_as_sad_and_neutral(tmp_path):
    path = write(tmp_path, f"emotion,pixels,Usage\n4,{PIXELS},Training\n6,{PIXELS},Training\n")
    faces = load_fer2013_csv(path).splits["train"]
    assert [EMOTIONS[i] for i in faces.labels] == ["sad", "neutral"]
    assert faces.images.shape == (2, 48, 48)
    assert faces.images.dtype == np.uint8 and (faces.images == 7).all()


def test_usage_column_gives_protocol_splits(fer2013_csv, small_faces):
    dataset = load_fer2013_csv(fer2013_csv)
    assert {k: len(v) for k, v in dataset.splits.items()} == {"train": 14, "val": 7, "test": 7}
    assert (dataset.splits["train"].images == small_faces.images).all()
    assert (dataset.splits["train"].labels == small_faces.labels).all()
    assert dataset.split("PrivateTest") is dataset.splits["test"]
    assert dataset.default_eval_split() == "test"


def test_missing_columns_are_named(tmp_path):
    path = write(tmp_path, f"label,pixels\n1,{PIXELS}\n")
    with pytest.raises(FERDataError, match=r"missing column\(s\) emotion.*found label, pixels"):
        load_fer2013_csv(path)


def test_bad_rows_are_skipped_and_reported_by_row_number(tmp_path):
    short = " ".join(["1"] * 100)
    big = " ".join(["300"] * 2304)
    path = write(
        tmp_path,
        f"emotion,pixels,Usage\n3,{PIXELS},Training\n2,{short},Training\n9,{PIXELS},Training\n1,{big},Training\n",
    )
    dataset = load_fer2013_csv(path)
    assert len(dataset.splits["train"]) == 1
    report = {s.reason: s.source for s in dataset.skipped}
    assert report["pixel count is not 2304"].endswith("rows 3")
    assert report["emotion code not in 0..6"].endswith("rows 4")
    assert report["pixel values outside 0..255"].endswith("rows 5")


def test_csv_without_usage_is_one_split_and_no_rows_is_an_error(tmp_path):
    assert list(load_fer2013_csv(write(tmp_path, f"emotion,pixels\n0,{PIXELS}\n")).splits) == ["all"]
    with pytest.raises(FERDataError, match="no data rows"):
        load_fer2013_csv(write(tmp_path, "emotion,pixels,Usage\n"))
    with pytest.raises(FERDataError, match="3 values, not a square image"):
        load_fer2013_csv(write(tmp_path, "emotion,pixels,Usage\n0,1 2 3,Training\n"))
    with pytest.raises(FERDataError, match="no usable rows.*emotion code not in 0..6"):
        load_fer2013_csv(write(tmp_path, f"emotion,pixels,Usage\n9,{PIXELS},Training\n"))


def test_load_dataset_dispatches_csv_and_caches(fer2013_csv):
    first = load_dataset(fer2013_csv)
    second = load_dataset(fer2013_csv)
    assert first.format == "fer2013-csv"
    assert any("loaded from cache" in n for n in second.notes)
    assert (second.splits["val"].images == first.splits["val"].images).all()


def test_csv_stored_at_another_size_is_resized_to_48(tmp_path):
    big = " ".join(["200"] * 64 * 64)
    dataset = load_dataset(write(tmp_path, f"emotion,pixels,Usage\n3,{big},Training\n"), cache=False)
    faces = dataset.splits["train"]
    assert faces.images.shape == (1, 48, 48) and (faces.images == 200).all()
