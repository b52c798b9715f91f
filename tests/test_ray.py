"""``--engine ray`` on a local Ray (loopback only): the same rows as the local engine, a rerun
skips everything, and a worker killed mid-run loses nothing and duplicates nothing."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from conftest import face_photo, write_face_video
from fer_utils.cli import main

ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory, untrained_checkpoint):
    """One local Ray for the module (two CPUs), its workers sharing a warm ONNX cache."""
    from fer_utils.predict.predictor import Predictor

    cache = tmp_path_factory.mktemp("ray-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FER_CACHE_DIR", str(cache))
        Predictor.from_checkpoint(untrained_checkpoint).predict_arrays([face_photo()[:48, :48]])  # export once
    ray.init(
        address="local",  # our own, whatever other Ray this machine ran
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"FER_CACHE_DIR": str(cache)}},
    )
    yield cache
    ray.shutdown()


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("collection")
    for i in range(4):
        write_face_video(folder / f"v{i}.mp4", lambda k, i=i: [(60 + 5 * i + 2 * k, 70)], n_frames=6, seed=i)
    return folder


def _rows(folder: Path) -> pd.DataFrame:
    table = pd.read_parquet(folder)
    return table.sort_values(["input", "frame", "track"]).reset_index(drop=True)


def test_ray_gives_the_local_engines_rows_and_a_rerun_skips_every_input(
    local_ray, collection, untrained_checkpoint, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("FER_CACHE_DIR", str(local_ray))
    common = ["video", str(collection), "--quiet", "--checkpoint", str(untrained_checkpoint)]
    assert main([*common, "--parquet", str(tmp_path / "local")]) == 0
    assert main([*common, "--parquet", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"]) == 0
    local, on_ray = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert len(local) > 10
    pd.testing.assert_frame_equal(local, on_ray)
    stamps = {f.name: f.stat().st_mtime_ns for f in (tmp_path / "ray").glob("*.parquet")}
    capsys.readouterr()
    assert main([*common, "--parquet", str(tmp_path / "ray"), "--engine", "ray"]) == 0
    assert "4 inputs already done" in capsys.readouterr().err
    assert {f.name: f.stat().st_mtime_ns for f in (tmp_path / "ray").glob("*.parquet")} == stamps


def test_photos_on_ray_give_the_local_engines_rows(local_ray, untrained_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("FER_CACHE_DIR", str(local_ray))
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(face_photo(background=90 + 20 * i)).save(photos / f"p{i}.png")
    (photos / "broken.jpg").write_text("not a photo")
    common = ["predict", str(photos), "--quiet", "--checkpoint", str(untrained_checkpoint)]
    assert main([*common, "--parquet", str(tmp_path / "local")]) == 0
    assert main([*common, "--parquet", str(tmp_path / "ray"), "--engine", "ray"]) == 0
    local = pd.read_parquet(tmp_path / "local").sort_values(["file", "face"]).reset_index(drop=True)
    on_ray = pd.read_parquet(tmp_path / "ray").sort_values(["file", "face"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(local, on_ray)
    assert (local["reason"].dropna().str.startswith("skipped:")).sum() == 1  # the broken file, with why


def test_a_worker_killed_mid_run_loses_nothing_and_duplicates_nothing(
    local_ray, collection, untrained_checkpoint, tmp_path, monkeypatch
):
    from fer_utils.predict.parquet import ParquetRun
    from fer_utils.predict.predictor import PredictorOptions
    from fer_utils.predict.ray_engine import WorkerSpec, run_on_ray

    monkeypatch.setenv("FER_CACHE_DIR", str(local_ray))
    killed = []

    def kill_a_worker(result, actors):
        if not killed:  # after the first result: a worker mid-task (busy ones come first)
            killed.append(actors[0])
            ray.kill(actors[0])

    videos = sorted(str(p) for p in collection.glob("*.mp4"))
    run = ParquetRun(tmp_path / "out", "video")
    spec = WorkerSpec(PredictorOptions((str(untrained_checkpoint),), threads=1))
    report = run_on_ray("video", videos, spec, run, workers=2, on_result=kill_a_worker)
    assert killed and report.lost == 1 and report.done == 4 and not report.failed
    files = sorted((tmp_path / "out").glob("*.parquet"))
    assert len(files) == 4  # one file per video, whole
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert sorted(manifest["inputs"]) == sorted(str(Path(v).resolve()) for v in videos)
    table = pd.read_parquet(tmp_path / "out")
    assert not table.duplicated(["input", "frame", "track"]).any() and set(table["input"]) == set(manifest["inputs"])


class _Reference:
    def __init__(self, outcome):
        self.outcome = outcome


class _FakeWorker:
    """A worker whose process dies on ``crash.mp4`` and whose task raises on ``bug.mp4``."""

    def __init__(self, started: list) -> None:
        started.append(self)
        self.dead = False
        self.pid = self._method(lambda: 1)
        self.video = self._method(self._video)

    def _method(self, run):
        worker = self

        class Method:
            @staticmethod
            def remote(*args):
                def outcome():
                    if worker.dead:
                        raise ray.exceptions.ActorDiedError()
                    return run(*args)

                return _Reference(outcome)

        return Method

    def _video(self, source):
        if source == "crash.mp4":
            self.dead = True
            raise ray.exceptions.ActorDiedError()
        if source == "bug.mp4":
            raise ray.exceptions.RayTaskError("video", "traceback", ValueError("a frame OpenCV cannot convert"))
        return {"sources": [source], "file": f"{source}.parquet", "sha256": "0", "rows": 1}


class _FakeRay:
    exceptions = ray.exceptions

    @staticmethod
    def wait(references, num_returns=1):
        return references[:num_returns], references[num_returns:]

    @staticmethod
    def get(reference):
        return reference.outcome()


def test_an_input_that_kills_its_worker_fails_alone_after_three_workers():
    from fer_utils.predict.ray_engine import MAX_ATTEMPTS, EngineReport, _results

    started: list = []
    report = EngineReport()
    tasks = [(name,) for name in ("a.mp4", "crash.mp4", "b.mp4", "bug.mp4", "c.mp4")]
    results = [r for r, _ in _results(_FakeRay(), lambda: _FakeWorker(started), 2, "video", tasks, report)]
    done = sorted(s for r in results if "file" in r for s in r["sources"])
    failed = {s: r["error"] for r in results if "error" in r for s in r["sources"]}
    assert done == ["a.mp4", "b.mp4", "c.mp4"] and len(results) == 5  # every input once
    assert failed == {
        "crash.mp4": f"its worker died {MAX_ATTEMPTS} times on it",
        "bug.mp4": "cannot process (ValueError: a frame OpenCV cannot convert)",
    }
    assert report.lost == MAX_ATTEMPTS and len(started) == 2 + MAX_ATTEMPTS  # each lost worker replaced


def test_a_long_video_in_parts_gives_the_local_rows_with_ids_per_part(
    local_ray, untrained_checkpoint, tmp_path, monkeypatch, capsys
):
    from fer_utils.predict.ray_engine import PART_TRACK_IDS

    monkeypatch.setenv("FER_CACHE_DIR", str(local_ray))
    video = write_face_video(tmp_path / "long.mp4", lambda k: [(60 + k // 4, 70)], n_frames=150, seed=3)  # 5 s
    common = ["video", str(video), "--quiet", "--checkpoint", str(untrained_checkpoint), "--smooth", "0"]
    common += ["--detect-interval", "0"]  # each frame on its own: a part's first frames are any frames
    assert main([*common, "--parquet", str(tmp_path / "local")]) == 0
    parts = [*common, "--parquet", str(tmp_path / "parts"), "--engine", "ray", "--chunk-minutes", "0.05"]
    assert main(parts) == 0  # parts of 3 s (the shortest allowed): 0-3, 3-5
    assert len(list((tmp_path / "parts").glob("*.parquet"))) == 2
    local, in_parts = _rows(tmp_path / "local"), _rows(tmp_path / "parts")
    assert len(local) > 50
    assert ((in_parts.track // PART_TRACK_IDS) == (in_parts.time_s // 3)).all()  # ids unique per part
    pd.testing.assert_frame_equal(local.drop(columns="track"), in_parts.drop(columns="track"))
    capsys.readouterr()
    assert main(parts) == 0
    assert "1 inputs already done" in capsys.readouterr().err
    assert main([*common, "--parquet", str(tmp_path / "parts")]) != 0  # the local engine would add the whole video
    assert "--chunk-minutes 0.05 there, none here" in capsys.readouterr().err


def test_both_engines_say_the_same_of_a_start_past_the_end_and_record_nothing(
    local_ray, collection, untrained_checkpoint, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("FER_CACHE_DIR", str(local_ray))
    video = collection / "v0.mp4"
    errors = []
    for engine in ("local", "ray"):
        out = tmp_path / engine
        command = ["video", str(video), "--quiet", "--checkpoint", str(untrained_checkpoint), "--start", "100"]
        assert main([*command, "--parquet", str(out), "--engine", engine]) == 1
        errors.append(capsys.readouterr().err.strip().splitlines()[-1])
        manifest = out / "_manifest.json"
        assert not manifest.exists() or json.loads(manifest.read_text())["inputs"] == {}
    assert errors[0] == errors[1] == f"fer: error: {video}: --start 100 s is past its end (0.20 s)"


def _parent(pid: int) -> int:
    """The parent process of ``pid`` (0 once it has gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name in brackets may hold spaces


def _ray_worker_started(driver: int) -> bool:
    """True once a Ray actor process of fer's (``ray::_Worker``) runs under ``driver``: its own
    local cluster's raylet starts it. Another test process's Ray workers (pytest-xdist runs two)
    do not count, or the signal would come before the run had started."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"ray::_Worker" not in cmdline.read_bytes():
                continue
        except OSError:
            continue
        pid = int(cmdline.parent.name)
        while pid > 1:
            pid = _parent(pid)
            if pid == driver:
                return True
    return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds Ray's worker process through /proc")
def test_sigterm_ends_a_ray_run_as_every_fer_run(untrained_checkpoint, tmp_path):
    """``ray.init`` installs its own SIGTERM handler (exit 15): fer's comes back after it."""
    import subprocess
    import sys
    import time

    video = write_face_video(tmp_path / "long.mp4", lambda k: [(60 + k // 16, 70)], n_frames=1200, seed=5)
    command = [sys.executable, "-m", "fer_utils.cli", "video", str(video), "--checkpoint", str(untrained_checkpoint)]
    command += ["--parquet", str(tmp_path / "out"), "--engine", "ray", "--workers", "1", "--quiet"]
    command += ["--detect-interval", "0"]
    run = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    )
    deadline = time.monotonic() + 120
    while not _ray_worker_started(run.pid) and time.monotonic() < deadline:
        assert run.poll() is None, run.stderr.read()
        time.sleep(0.2)
    time.sleep(1)
    run.send_signal(signal.SIGTERM)
    err = run.communicate(timeout=120)[1]
    assert run.returncode == 143, err
    assert "fer: interrupted (by SIGTERM)" in err and "Traceback" not in err
    assert not list((tmp_path / "out").glob("*.parquet"))  # the stopped video is not recorded as done


def test_more_workers_than_the_cluster_has_and_an_empty_folder_are_one_line_on_ray_as_locally(
    local_ray, collection, untrained_checkpoint, tmp_path, capsys
):
    command = ["video", "--quiet", "--checkpoint", str(untrained_checkpoint), "--parquet"]
    assert main([*command, str(tmp_path / "a"), str(collection), "--engine", "ray", "--workers", "3"]) == 1
    assert "--workers 3: the Ray cluster has 2 CPUs" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    said = []
    for engine in ("local", "ray"):
        assert main([*command, str(tmp_path / engine), str(tmp_path / "empty"), "--engine", engine]) == 1
        said.append(capsys.readouterr().err.strip())
    assert said[0] == said[1] and said[0].startswith("fer: error:") and "\n" not in said[0]
