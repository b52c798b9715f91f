"""One result schema: a photo, a video and a Parquet collection name the same thing the same way,
and every file of a kind carries all of its columns (fer_utils/core/schema.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import face_photo, write_face_video
from fer_utils.cli import main
from fer_utils.core.schema import FACE_COLUMNS, PHOTO_KEYS, VIDEO_KEYS, photo_columns, video_columns
from fer_utils.predict.predictor import Predictor


@pytest.fixture(scope="module")
def predictor(untrained_checkpoint) -> Predictor:
    return Predictor.from_checkpoint(untrained_checkpoint)


def test_a_photo_and_a_video_of_the_same_face_share_every_face_column(tmp_path, predictor):
    photo = predictor.predict_image(face_photo()).to_dataframe()
    video = predictor.predict_video(
        write_face_video(tmp_path / "v.mp4", lambda i: [(100, 60)], n_frames=6)
    ).to_dataframe()
    assert list(photo.columns) == photo_columns(predictor.classes)
    assert list(video.columns) == video_columns(predictor.classes)
    shared = [*FACE_COLUMNS, *(f"p_{c}" for c in predictor.classes)]
    assert set(shared) <= set(photo.columns) & set(video.columns)
    assert set(PHOTO_KEYS) - {"file"} == {"face"} and {"frame", "time_s", "track"} == set(VIDEO_KEYS) - {"file"}
    for table in (photo, video):
        assert len(table) >= 1 and table["box_x"].dtype.kind == "i" and table["p_happy"].dtype.kind == "f"
        assert (table["detection_score"] > 0).all() and table["label"].isin(predictor.classes).all()
        assert np.allclose(table[[f"p_{c}" for c in predictor.classes]].sum(axis=1), 1, atol=1e-3)


def test_a_photo_without_a_face_gives_the_columns_and_no_rows(predictor):
    table = predictor.predict_image(np.full((200, 200), 128, np.uint8)).to_dataframe()
    assert table.empty and list(table.columns) == photo_columns(predictor.classes)


def test_a_parquet_file_of_only_unreadable_photos_keeps_the_whole_schema(tmp_path, untrained_checkpoint):
    pytest.importorskip("pyarrow")
    from PIL import Image

    good, bad = tmp_path / "in" / "good", tmp_path / "in" / "bad"
    good.mkdir(parents=True)
    bad.mkdir()
    (bad / "broken.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(face_photo()).save(good / "face.png")
    assert (
        main(
            [
                "predict",
                str(bad / "broken.jpg"),
                "--parquet",
                str(tmp_path / "a"),
                "--checkpoint",
                str(untrained_checkpoint),
            ]
        )
        == 1
    )
    assert (
        main(["predict", str(good), "--parquet", str(tmp_path / "a"), "--checkpoint", str(untrained_checkpoint)]) == 0
    )
    table = pd.read_parquet(tmp_path / "a")
    assert set(photo_columns(untrained_classes())) <= set(table.columns)  # both files: every column
    assert table["label"].notna().sum() == 1 and table["reason"].notna().sum() == 1


def untrained_classes():
    from fer_utils.core.labels import EMOTIONS

    return EMOTIONS
