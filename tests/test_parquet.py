"""Collections to Parquet (``--parquet DIR``): one file per input with the CSV's rows, written
whole; a rerun skips what is done and verifies, and does only the rest, each input once."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import face_photo, write_face_video
from fer_utils.cli import main
from fer_utils.core.errors import FEROutputError

pytest.importorskip("pyarrow")


def _video(args: list[str], checkpoint: Path) -> int:
    return main(["video", *args, "--quiet", "--checkpoint", str(checkpoint)])


def test_video_parquet_holds_the_csv_rows_one_file_per_video_and_a_rerun_does_only_what_is_missing(
    videos, untrained_checkpoint, tmp_path, capsys
):
    out = tmp_path / "run"
    assert _video([str(videos), "--parquet", str(out), "--csv", str(tmp_path / "all.csv")], untrained_checkpoint) == 0
    files = sorted(out.glob("*.parquet"))
    assert [f.name.split("-")[0] for f in files] == ["a", "b"]
    table = pd.read_parquet(out).sort_values(["file", "frame", "track"]).reset_index(drop=True)
    with open(tmp_path / "all.csv", newline="") as f:
        rows = pd.DataFrame(list(csv.DictReader(f)))
    assert len(table) == len(rows) > 10 and list(table.columns) == [*rows.columns, "input"]
    assert table["frame"].dtype == np.int64 and table["p_happy"].dtype == np.float64
    assert set(table["input"]) == {str((videos / n).resolve()) for n in ("a.mp4", "b.mp4")}
    np.testing.assert_allclose(table["p_happy"], rows["p_happy"].astype(float))

    stamps = {f.name: f.stat().st_mtime_ns for f in files}
    capsys.readouterr()
    assert _video([str(videos), "--parquet", str(out)], untrained_checkpoint) == 0  # nothing to do
    assert "2 videos already done" in capsys.readouterr().err
    assert {f.name: f.stat().st_mtime_ns for f in out.glob("*.parquet")} == stamps

    files[1].write_bytes(files[1].read_bytes()[:100])  # a damaged file is done again, the other is not
    assert _video([str(videos), "--parquet", str(out)], untrained_checkpoint) == 0
    assert "1 videos already done" in capsys.readouterr().err
    assert files[0].stat().st_mtime_ns == stamps[files[0].name] and len(pd.read_parquet(out)) == len(rows)


def test_a_stopped_photo_run_resumes_and_every_photo_is_written_once(
    tmp_path, untrained_checkpoint, monkeypatch, capsys
):
    import fer_utils.predict.parquet as parquet
    from fer_utils.predict.predictor import Predictor

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        Image.fromarray(face_photo(background=90 + 10 * i)).save(photos / f"p{i}.png")
    monkeypatch.setattr(parquet, "PHOTOS_PER_FILE", 2)
    monkeypatch.setattr("fer_utils.predict.batch.PHOTOS_PER_FILE", 2)
    real, calls = Predictor.predict_image, []

    def stopped_at_the_fourth(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict_image", stopped_at_the_fourth)
    out = tmp_path / "run"
    command = [
        "predict",
        str(photos),
        "--parquet",
        str(out),
        "--no-detect",
        "--quiet",
        "--checkpoint",
        str(untrained_checkpoint),
    ]
    assert main(command) == 130
    assert len(list(out.glob("*.parquet"))) == 1  # the first batch; the stopped one is not written
    monkeypatch.setattr(Predictor, "predict_image", real)
    capsys.readouterr()
    assert main(command) == 0
    assert "2 photos already done" in capsys.readouterr().err
    table = pd.read_parquet(out)
    assert sorted(Path(f).name for f in table["file"]) == [f"p{i}.png" for i in range(5)]  # each once
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["command"] == "predict" and len(manifest["inputs"]) == 5


def test_a_parquet_folder_of_another_command_is_refused(videos, untrained_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "_manifest.json").write_text(
        json.dumps({"format": "fer_utils.parquet-run/1", "command": "predict", "inputs": {}})
    )
    assert _video([str(videos / "a.mp4"), "--parquet", str(out)], untrained_checkpoint) == 1
    assert "holds the outputs of `fer predict`" in capsys.readouterr().err


def test_a_video_recorded_in_parts_is_done_when_every_part_is_and_its_rows_are_never_twice(tmp_path):
    from fer_utils.predict.parquet import ParquetRun, write_parquet_file

    video = tmp_path / "long.mp4"
    video.write_bytes(b"")  # only its name matters here
    run = ParquetRun(tmp_path / "out", "video", part_seconds=60.0)
    whole = write_parquet_file(run.folder, [video], [{"frame": 0}], "long")
    run.record([video], *whole)
    assert run.is_done(video)
    for k in range(2):  # the same video again, now in two parts: the whole file goes
        run.record([video], *write_parquet_file(run.folder, [video], [{"frame": k}], f"long-part{k}"), part=(k, 2))
        assert run.is_done(video, (k, 2)) and not run.is_done(video, (k, 3)) and run.is_done(video) == (k == 1)
    assert sorted(pd.read_parquet(run.folder).frame) == [0, 1] and not (run.folder / whole[0]).exists()
    run.close()
    with pytest.raises(FEROutputError, match=r"--chunk-minutes 1.0 there, none here\); .* add --redo"):
        ParquetRun(tmp_path / "out", "video")  # the local engine would write the video whole beside its parts


def test_a_late_start_seeks_and_gives_the_frames_read_from_the_top(tmp_path, untrained_checkpoint):
    from fer_utils.predict.predictor import Predictor

    predictor = Predictor.from_checkpoint(untrained_checkpoint)
    video = write_face_video(tmp_path / "long.mp4", lambda k: [(60 + k // 4, 70)], n_frames=150, seed=2)
    every = predictor.predict_video(video, smooth=0, detect_interval=0).to_dataframe()
    late = predictor.predict_video(video, start=3.0, smooth=0, detect_interval=0).to_dataframe()
    expected = every[every.time_s >= 3.0 - 1e-6].reset_index(drop=True)
    from fer_utils.predict.frames import SEEK_MARGIN, _seek, open_video

    capture, info = open_video(video)
    assert _seek(capture, info, 3.0) == round(30 * (3.0 - SEEK_MARGIN)) - 1  # it seeks, not reads from the top
    capture.release()
    assert late.frame.min() == 90 and len(late) == len(expected) > 0
    pd.testing.assert_frame_equal(late.drop(columns="track"), expected.drop(columns="track"))
