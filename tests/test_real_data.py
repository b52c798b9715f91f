"""Real FER2013 (Kaggle folder layout) from $FER_DATA_DIR: the loader must see exactly what is there."""

import numpy as np
import pytest

from fer_utils.core.labels import EMOTIONS
from fer_utils.data import load_dataset

pytestmark = pytest.mark.real_data

# shared/data/README.md: train/ (Training_*) and test/ (PublicTest_* only)
TRAIN_COUNTS = {
    "angry": 3995,
    "disgust": 436,
    "fear": 4097,
    "happy": 7215,
    "neutral": 4965,
    "sad": 4830,
    "surprise": 3171,
}
PUBLIC_TEST_COUNTS = {
    "angry": 467,
    "disgust": 56,
    "fear": 496,
    "happy": 895,
    "neutral": 607,
    "sad": 653,
    "surprise": 415,
}


def test_fer2013_folder_counts_and_splits(real_data_dir):
    dataset = load_dataset(real_data_dir, progress=False)
    assert dataset.format == "kaggle-folders"
    assert dataset.skipped == []
    train, val = dataset.splits["train"], dataset.splits["val"]
    assert train.class_counts().to_dict() == TRAIN_COUNTS
    assert val.class_counts().to_dict() == PUBLIC_TEST_COUNTS
    assert "test" not in dataset.splits  # PrivateTest is held back in this copy
    assert all("PublicTest_" in s for s in val.sources[:50])
    assert train.images.shape[1:] == (48, 48) and train.images.dtype == np.uint8
    for name in EMOTIONS:  # labels come from the folder each file sits in
        index = np.flatnonzero(val.labels == EMOTIONS.index(name))[:5]
        assert all(f"/{name}/" in s for s in val.sources[index])


def test_fer2013_second_load_comes_from_cache(real_data_dir):
    load_dataset(real_data_dir, progress=False)
    again = load_dataset(real_data_dir, progress=False)
    assert any("loaded from cache" in n for n in again.notes)
    assert len(again.splits["train"]) == 28709
