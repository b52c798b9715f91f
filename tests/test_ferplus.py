import numpy as np
import pytest

from fer_utils.data import load_dataset
from fer_utils.errors import FERDataError
from fer_utils.labels import EMOTIONS

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
