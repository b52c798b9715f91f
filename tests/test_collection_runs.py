"""A ``--parquet`` run is a job the user can trust: it knows which model, options and input
content produced each file, never mixes, duplicates or deletes what is not its own, holds its
folder alone, stays bounded, and reads back whole in every Parquet reader."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from conftest import face_photo, write_face_video
from fer_utils.cli import main
from fer_utils.core.errors import FEROutputError

pytest.importorskip("pyarrow")


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(face_photo(background=90 + 10 * i)).save(folder / f"p{i}.png")
    return folder


def _video(args: list[str], checkpoint: Path) -> int:
    return main(["video", *args, "--quiet", "--checkpoint", str(checkpoint)])


def _predict(args: list[str], checkpoint: Path) -> int:
    return main(["predict", *args, "--no-detect", "--quiet", "--checkpoint", str(checkpoint)])


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("fer: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_rerun_with_other_options_or_model_is_refused_and_redo_gives_the_new_rows_alone(
    videos, untrained_checkpoint, tmp_path, capsys
):
    out = tmp_path / "run"
    assert _video([str(videos), "--parquet", str(out)], untrained_checkpoint) == 0
    first = pd.read_parquet(out)
    capsys.readouterr()
    assert _video([str(videos), "--parquet", str(out), "--every", "3", "--start", "0.1"], untrained_checkpoint) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "--every 1 there, 3 here" in line and "--start 0.0 there, 0.1 here" in line and "--redo" in line
    other = tmp_path / "other.safetensors"
    other.write_bytes(untrained_checkpoint.read_bytes()[:-1] + b" ")  # other bytes, same name pattern
    assert _video([str(videos), "--parquet", str(out)], other) == 1
    assert "--checkpoint" in _one_error_line(capsys.readouterr().err)
    assert pd.read_parquet(out).equals(first)  # refusals change nothing

    assert _video([str(videos), "--parquet", str(out), "--every", "3", "--redo"], untrained_checkpoint) == 0
    again = pd.read_parquet(out)
    assert set(again.frame) == {0, 3, 6} and len(again) < len(first)  # only the new options' rows
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["settings"]["--every"] == 3 and manifest["settings"]["--checkpoint"].startswith("untrained")
    capsys.readouterr()
    assert _video([str(videos), "--parquet", str(out), "--every", "3"], untrained_checkpoint) == 0
    assert "2 videos already done" in capsys.readouterr().err


def test_an_input_replaced_after_the_run_is_done_again_and_said_so(untrained_checkpoint, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_face_video(folder / "v.mp4", lambda i: [(110, 70)], n_frames=6)
    write_face_video(folder / "w.mp4", lambda i: [(60, 70)], n_frames=6, seed=4)
    out = tmp_path / "run"
    assert _video([str(folder), "--parquet", str(out)], untrained_checkpoint) == 0
    write_face_video(folder / "v.mp4", lambda i: [(60 + 4 * i, 60)], n_frames=9, seed=9)  # same path, other video
    capsys.readouterr()
    assert _video([str(folder), "--parquet", str(out)], untrained_checkpoint) == 0
    err = capsys.readouterr().err
    assert "1 videos changed since the earlier run" in err and "1 videos already done" in err
    assert _video([str(folder / "v.mp4"), "--parquet", str(tmp_path / "fresh")], untrained_checkpoint) == 0
    table, fresh = pd.read_parquet(out), pd.read_parquet(tmp_path / "fresh")
    rows = table[table.file.str.endswith("v.mp4")].reset_index(drop=True)
    assert len(rows) > 0 and rows.frame.max() > 5  # the new video's rows alone: none of the old 6 frames' left
    pd.testing.assert_frame_equal(rows, fresh)
    assert len(list(out.glob("*.parquet"))) == 2


def test_only_files_the_run_wrote_and_recorded_are_ever_removed(photos, untrained_checkpoint, tmp_path):
    out = tmp_path / "run"
    assert _predict([str(photos), "--parquet", str(out)], untrained_checkpoint) == 0
    manifest = json.loads((out / "_manifest.json").read_text())
    keepsake = out / "holiday.jpg"  # the user's file, named by an edited manifest
    keepsake.write_bytes(b"not fer's")
    for entry in manifest["inputs"].values():
        entry["file"], entry["sha256"] = keepsake.name, "0" * 64
    (out / "_manifest.json").write_text(json.dumps(manifest))
    assert _predict([str(photos), "--parquet", str(out), "--tta", "--redo"], untrained_checkpoint) == 0
    assert keepsake.read_bytes() == b"not fer's"
    assert _predict([str(photos), "--parquet", str(out), "--redo"], untrained_checkpoint) == 0
    assert keepsake.exists() and len(list(out.glob("*.parquet"))) == 1


def test_an_output_folder_that_holds_inputs_or_is_another_output_is_refused(
    photos, untrained_checkpoint, tmp_path, capsys
):
    assert _predict([str(photos), "--parquet", str(photos)], untrained_checkpoint) == 1
    assert "holds an input of this command" in _one_error_line(capsys.readouterr().err)
    same = tmp_path / "out"
    assert _predict([str(photos), "--parquet", str(same), "--annotate", str(same)], untrained_checkpoint) == 1
    assert "given for both" in _one_error_line(capsys.readouterr().err)
    assert not same.exists() or not list(same.iterdir())


def test_a_photo_named_twice_gives_one_row_set(photos, untrained_checkpoint, tmp_path):
    (tmp_path / "link.png").symlink_to(photos / "p0.png")
    out = tmp_path / "run"
    assert _predict([str(photos), str(photos / "p0.png"), str(tmp_path / "link.png"), "--parquet", str(out)],
                    untrained_checkpoint) == 0  # fmt: skip
    table = pd.read_parquet(out)
    assert len(table) == 3 and table["input"].is_unique


def _hold(folder: str, ready) -> None:
    from fer_utils.predict.parquet import ParquetRun

    run = ParquetRun(folder, "predict")
    ready.set()
    time.sleep(120)
    run.close()


def test_one_run_at_a_time_holds_a_folder_and_a_dead_runs_lock_is_taken_over(tmp_path):
    from fer_utils.predict.parquet import ParquetRun

    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    other = context.Process(target=_hold, args=(str(tmp_path / "run"), ready))
    other.start()
    try:
        assert ready.wait(60)
        with pytest.raises(FEROutputError, match=rf"in use by `fer predict`, process {other.pid} on "):
            ParquetRun(tmp_path / "run", "predict")
    finally:
        os.kill(other.pid, signal.SIGKILL)  # dies holding the lock: the next run must not be stuck behind it
        other.join()
    with ParquetRun(tmp_path / "run", "predict") as run:
        assert run.inputs == {}
    with ParquetRun(tmp_path / "run", "predict"):  # released by the block above
        pass


def test_the_folder_reads_back_whole_in_every_parquet_reader(tmp_path, untrained_checkpoint, monkeypatch):
    import pyarrow.dataset

    import fer_utils.predict.parquet as parquet

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a-broken.jpg").write_bytes(b"not a photo")  # the first batch: failures only
    for i in range(2):
        Image.fromarray(face_photo(background=100 + 10 * i)).save(photos / f"b{i}.png")
    monkeypatch.setattr(parquet, "PHOTOS_PER_FILE", 1)
    monkeypatch.setattr("fer_utils.predict.batch.PHOTOS_PER_FILE", 1)
    out = tmp_path / "run"
    assert _predict([str(photos), "--parquet", str(out)], untrained_checkpoint) == 0
    assert len(list(out.glob("*.parquet"))) == 3
    table = pd.read_parquet(out)
    assert len(table) == 3 and table.label.notna().sum() == 2 and table.reason.notna().sum() == 1
    assert pyarrow.dataset.dataset(out, format="parquet").to_table().num_rows == 3
    json.loads((out / "_manifest.json").read_text(), parse_constant=pytest.fail)  # no Infinity, no NaN
    duckdb = pytest.importorskip("duckdb")
    assert duckdb.sql(f"select count(*) from read_parquet('{out}/*.parquet')").fetchall() == [(3,)]


def test_a_finished_photo_run_rerun_says_so_and_succeeds(photos, untrained_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    assert _predict([str(photos), "--parquet", str(out)], untrained_checkpoint) == 0
    capsys.readouterr()
    assert _predict([str(photos), "--parquet", str(out)], untrained_checkpoint) == 0
    err = capsys.readouterr().err
    assert "3 photos already done" in err and "error" not in err


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--engine", "ray", "--chunk-minutes", "1e308"], "--chunk-minutes must be between"),
        (["--engine", "ray", "--chunk-minutes", "1e-9"], "--chunk-minutes must be between"),
        (["--engine", "ray", "--detect-interval", "nan"], "--detect-interval must be a number"),
        (["--detect-interval", "nan"], "--detect-interval must be a number"),
        (["--smooth", "inf"], "--smooth must be a number"),
        (["--engine", "ray", "--ray-address", "garbage"], "give HOST:PORT"),
        (["--engine", "ray", "--ray-address", "127.0.0.1:9", "--ray-timeout", "2"], "no Ray cluster answered"),
    ],
)
def test_video_options_are_checked_before_any_work_in_one_line(
    flags, says, videos, untrained_checkpoint, tmp_path, capsys, monkeypatch
):
    import fer_utils.predict.ray_engine as ray_engine

    monkeypatch.setattr(ray_engine, "_ray", lambda: pytest.fail("Ray started before the options were checked"))
    started = time.monotonic()
    assert _video([str(videos), "--parquet", str(tmp_path / "run"), *flags], untrained_checkpoint) == 1
    assert says in _one_error_line(capsys.readouterr().err) and time.monotonic() - started < 20
    assert not (tmp_path / "run" / "_manifest.json").exists()


@pytest.mark.parametrize("workers", ["0", "-1", "two"])
def test_workers_must_be_a_positive_count(workers, videos, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["video", str(videos), "--parquet", str(tmp_path / "r"), "--engine", "ray", "--workers", workers])
    assert stop.value.code == 2 and "--workers" in _one_error_line(capsys.readouterr().err)


def test_a_start_past_the_end_says_so_and_records_nothing(videos, untrained_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    assert _video([str(videos / "a.mp4"), "--parquet", str(out), "--start", "100"], untrained_checkpoint) == 1
    assert "--start 100 s is past its end (0.20 s)" in _one_error_line(capsys.readouterr().err)
    manifest = out / "_manifest.json"
    assert not manifest.exists() or json.loads(manifest.read_text())["inputs"] == {}


def test_a_stop_signal_still_stops_after_a_library_replaced_the_handler():
    from fer_utils.core.interrupts import Stopped, restore_stop_handlers, stop_signals_as_interrupt

    with pytest.raises(Stopped), stop_signals_as_interrupt():
        signal.signal(signal.SIGTERM, lambda *_: os._exit(15))  # what ray.init does to a driver
        restore_stop_handlers()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)


def test_a_script_runs_the_photo_batch_job_fer_predict_runs(photos, untrained_checkpoint, tmp_path):
    """The library holds the job (predict_photos): a script with a Parquet run folder gets each
    photo's rows once, and a rerun leaves out what is done, as ``fer predict --parquet`` does."""
    from fer_utils.predict.batch import predict_photos
    from fer_utils.predict.parquet import ParquetRun, model_identity
    from fer_utils.predict.predictor import PredictorOptions

    predictor = PredictorOptions((str(untrained_checkpoint),)).build()
    files = sorted(photos.iterdir())
    settings = {"--checkpoint": model_identity([untrained_checkpoint])}
    heard = []  # what the run's plan said, and how many files the folder held then

    def on_plan(done, changed):
        heard.append((len(done), len(changed), len(list((tmp_path / "run").glob("*.parquet")))))

    with ParquetRun(tmp_path / "run", "predict", settings, on_plan=on_plan) as run:
        first = predict_photos(predictor, files, run, detect=False)
    assert [Path(r.source).name for r in first.results] == ["p0.png", "p1.png", "p2.png"]
    assert not first.resumed and not first.interrupted
    with ParquetRun(tmp_path / "run", "predict", settings, on_plan=on_plan) as run:
        again = predict_photos(predictor, files, run, detect=False)
    assert heard == [(0, 0, 0), (3, 0, 1)]  # each plan is said before its run writes anything
    assert not again.results and sorted(Path(f).name for f in again.resumed) == ["p0.png", "p1.png", "p2.png"]
    rows = pd.read_parquet(tmp_path / "run")
    assert sorted(rows["file"].map(lambda f: Path(f).name)) == ["p0.png", "p1.png", "p2.png"]
