"""Videos: faces tracked with stable ids, timestamps from the container, smoothing that removes
flicker, outputs that survive Ctrl-C, and one-line errors for files that are not videos."""

from __future__ import annotations

import csv
import fractions
import json
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from conftest import face_photo, write_face_video
from fer_utils.cli import main
from fer_utils.core.schema import VIDEO_KEYS
from fer_utils.faces.detection import FaceBox, YuNetDetector
from fer_utils.faces.tracking import IoUTracker, ProbabilitySmoother, iou_matrix, match_boxes
from fer_utils.predict.predictor import REPO_MODELS_DIR, SHIPPED_SINGLE_MODEL, Predictor
from fer_utils.predict.timeline import csv_columns

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def box(x: int, y: int = 0, w: int = 100, h: int = 100) -> FaceBox:
    return FaceBox(x, y, w, h, 0.9)


@pytest.fixture(scope="module")
def predictor(untrained_checkpoint):
    return Predictor.from_checkpoint(untrained_checkpoint)


def crossing(i: int):
    """Two faces moving towards each other along x at different heights, passing each other; the
    first is gone in frames 30-39 (a third of a second) and comes back where it was."""
    first = None if 30 <= i < 40 else (4 + 2 * min(i, 30), 5)
    return [first, (216 - 3 * i, 130)]


@pytest.fixture(scope="module")
def crossing_video(tmp_path_factory) -> Path:
    return write_face_video(tmp_path_factory.mktemp("video") / "crossing.mp4", crossing, n_frames=60)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --- tracking and smoothing, on boxes --------------------------------------------------------


def test_iou_of_boxes():
    overlap = iou_matrix([box(0), box(0)], [box(0), box(50), box(300)])
    np.testing.assert_allclose(overlap[0], [1.0, 50 / 150, 0.0])


def test_hungarian_assignment_keeps_ids_where_greedy_matching_would_swap_them():
    # B's overlap with a' (0.6) is the largest single pair, but the best total pairs A-a' and B-b'
    pairs = match_boxes([box(0), box(60)], [box(35), box(95)])
    assert sorted(pairs) == [(0, 0), (1, 1)]
    tracker = IoUTracker()
    assert tracker.update([box(0), box(60)], 0.0) == [0, 1]
    assert tracker.update([box(35), box(95)], 0.033) == [0, 1]


def test_a_track_keeps_its_id_over_a_short_gap_and_ends_after_a_long_one():
    tracker = IoUTracker(max_gap=1.0)
    assert tracker.update([box(0)], 0.0) == [0]
    assert tracker.update([], 0.5) == []
    assert tracker.update([box(10)], 0.9) == [0]  # back within the gap: same person
    assert tracker.update([], 1.5) == []
    assert tracker.update([], 2.0) == []
    assert tracker.update([box(10)], 2.5) == [1]  # gone longer than max_gap: a new track
    assert tracker.active == [1]
    # frames analysed seconds apart (a slow camera loop): a face in consecutive ones keeps its id
    assert tracker.update([box(12)], 10.0) == [1]


@pytest.mark.parametrize("fps", [10, 30])
def test_smoothing_lags_by_its_time_constant_whatever_the_frame_rate(fps):
    smoother = ProbabilitySmoother(seconds=0.5)
    before, after = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    smoother.update(0, before, 0.0)
    for k in range(1, fps // 2 + 1):  # the expression changes at t = 0 and holds for 0.5 s
        value = smoother.update(0, after, k / fps)
    assert value[1] == pytest.approx(1 - np.exp(-1), abs=1e-6)  # 63 % of the way after one time constant


# --- videos ----------------------------------------------------------------------------------


def test_two_faces_passing_each_other_keep_their_ids(predictor, crossing_video):
    frame = predictor.predict_video(crossing_video, smooth=0).to_dataframe()
    assert sorted(frame.track.unique()) == [0, 1]  # two people, two ids, also after the gap
    for track, rows in frame.groupby("track"):  # each track stays on one face: the nearest pasted one
        nearest = set()
        for row in rows.itertuples():
            centres = {k: (p[0] + 50, p[1] + 50) for k, p in enumerate(crossing(row.frame)) if p is not None}
            cx, cy = row.box_x + row.box_w / 2, row.box_y + row.box_h / 2
            nearest.add(min(centres, key=lambda k: np.hypot(cx - centres[k][0], cy - centres[k][1])))
        assert len(nearest) == 1, f"track {track} jumped between the faces"
    first = frame[frame.track == frame.loc[frame.frame.idxmin(), "track"]]
    assert not first.frame.between(30, 39).any() and first.frame.max() > 40  # absent, then back


def test_csv_has_the_documented_columns_and_timestamps(predictor, crossing_video, tmp_path):
    out = tmp_path / "faces.csv"
    assert (
        main(["video", str(crossing_video), "--csv", str(out), "--quiet", "--checkpoint", *map(str, predictor.sources)])
        == 0
    )
    rows = read_csv(out)
    assert list(rows[0])[: len(VIDEO_KEYS) + 4] == [*VIDEO_KEYS, "box_x", "box_y", "box_w", "box_h"]
    assert list(rows[0]) == csv_columns(CLASSES)
    for row in rows:
        assert float(row["time_s"]) == pytest.approx(int(row["frame"]) / 30, abs=1e-3)
        probabilities = [float(row[f"p_{c}"]) for c in CLASSES]
        assert sum(probabilities) == pytest.approx(1, abs=1e-3) and row["label"] == CLASSES[np.argmax(probabilities)]


def write_vfr_video(path: Path, times: list[float], shape=(240, 320)) -> Path:
    """A variable-frame-rate MP4 (PyAV): frame i is stamped ``times[i]`` seconds, with a face."""
    import av
    import cv2

    image = cv2.cvtColor(face_photo([(80, 40)], shape=shape), cv2.COLOR_GRAY2BGR)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = shape[1], shape[0], "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for t in times:
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = round(t * 1000), fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_timestamps_come_from_the_container_for_a_variable_frame_rate(predictor, tmp_path):
    times = [0.0, 0.1, 0.15, 0.5, 0.55, 1.3, 1.31, 2.0]
    video = write_vfr_video(tmp_path / "vfr.mp4", times)
    frames = list(predictor.predict_video(video))
    assert [f.frame for f in frames] == list(range(len(times)))
    np.testing.assert_allclose([f.time_s for f in frames], times, atol=1e-3)
    assert all(len(f.faces) == 1 for f in frames)
    # --fps 4 keeps a frame when a quarter second has passed since the last one kept
    kept = [f.time_s for f in predictor.predict_video(video, fps=4)]
    np.testing.assert_allclose(kept, [0.0, 0.5, 1.3, 2.0], atol=1e-3)


def test_smoothing_reduces_label_changes(tmp_path):
    # two faces the shipped model labels differently, shown in turn at one place: the raw label
    # flickers every frame; smoothed over half a second it settles (each frame searched whole: two
    # drawn faces swapped every frame are not what following a face is for)
    shipped = Predictor.from_checkpoint(REPO_MODELS_DIR / SHIPPED_SINGLE_MODEL, runtime="torch")
    video = write_face_video(tmp_path / "flicker.mp4", lambda i: [(110, 70), None][:: 1 - 2 * (i % 2)], n_frames=60)
    frame = shipped.predict_video(video, smooth=0.5, detect_interval=0).to_dataframe()
    assert frame.track.nunique() == 1 and len(frame) >= 55
    raw_changes = (frame.raw_label != frame.raw_label.shift()).sum() - 1
    smooth_changes = (frame.label != frame.label.shift()).sum() - 1
    assert raw_changes >= 10, "the two faces should often get different raw labels"
    assert smooth_changes <= 2
    summary = shipped.predict_video(video, smooth=0.5, detect_interval=0).summaries()[0]
    assert summary.frames == len(frame) and len(summary.changes) == smooth_changes
    assert sum(summary.shares.values()) == pytest.approx(1.0) and summary.dominant == max(
        summary.shares, key=summary.shares.get
    )
    assert summary.duration_s == pytest.approx(2.0, abs=0.05)


def test_json_plot_and_annotated_copy(predictor, crossing_video, tmp_path):
    import cv2

    outputs = {"--json": tmp_path / "faces.json", "--plot": tmp_path / "timeline.png", "--annotate": tmp_path / "a.mp4"}
    args = [x for flag, path in outputs.items() for x in (flag, str(path))]
    assert main(["video", str(crossing_video), *args, "--quiet", "--checkpoint", *map(str, predictor.sources)]) == 0
    payload = json.loads(outputs["--json"].read_text())
    assert payload["classes"] == list(CLASSES) and {t["track"] for t in payload["tracks"]} == {0, 1}
    assert len(payload["rows"]) == sum(t["frames"] for t in payload["tracks"])
    copy = cv2.VideoCapture(str(outputs["--annotate"]))
    assert int(copy.get(cv2.CAP_PROP_FRAME_COUNT)) == 60 and copy.get(cv2.CAP_PROP_FPS) == pytest.approx(30)
    assert cv2.imread(str(outputs["--plot"])).shape[0] > 200
    assert not list(tmp_path.glob(".*.tmp*"))  # no temporary files left behind


def test_ctrl_c_keeps_a_valid_csv_of_the_rows_so_far(predictor, tmp_path, children):
    video = write_face_video(tmp_path / "long.mp4", lambda i: [(110, 70)], n_frames=2400)
    out = tmp_path / "faces.csv"
    command = [sys.executable, "-m", "fer_utils.cli", "video", str(video), "--csv", str(out)]
    process = children(
        [*command, "--quiet", "--checkpoint", *map(str, predictor.sources)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # a shell without job control starts background jobs with SIGINT ignored, and Python keeps
        # it ignored: give the run Ctrl-C's default, as a terminal does
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline, started = time.monotonic() + 120, False
    while time.monotonic() < deadline and process.poll() is None:  # until rows are written (under a temporary name)
        partial = [p for p in tmp_path.glob(".faces.csv.*") if p.exists() and p.stat().st_size > 2000]
        if partial:
            started = True
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert started, f"the run wrote no rows before it ended or 120 s passed: {err}"
    assert process.returncode == 130, err
    assert "Traceback" not in err and "interrupted at" in err and str(out) in err
    rows = read_csv(out)
    assert 5 < len(rows) < 2400 and all(len(r) == len(csv_columns(CLASSES)) and r["p_surprise"] != "" for r in rows)
    assert not list(tmp_path.glob(".faces.csv.*"))


# --- bad input -------------------------------------------------------------------------------


def one_line_error(capsys, *args: str) -> str:
    assert main(["video", *args, "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fer: error: ") and len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_files_that_are_not_videos_give_one_line_naming_them(tmp_path, capsys, untrained_checkpoint):
    import cv2

    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    audio = tmp_path / "speech.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.zeros(8000, np.int16).tobytes())
    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 30, (320, 240)).release()
    folder = tmp_path / "nothing here"
    folder.mkdir()
    checkpoint = ["--checkpoint", str(untrained_checkpoint)]
    for path, reason in (
        (text, "not a video"),
        (audio, "not a video"),
        (empty, "not a video" if empty.stat().st_size < 1000 else "no video frames"),
        (tmp_path / "missing.mp4", "no such file"),
        (folder, "no videos"),
    ):
        err = one_line_error(capsys, str(path), *checkpoint)
        assert str(path) in err and reason in err, err


def test_a_truncated_video_gives_the_frames_before_the_cut_and_says_so(predictor, tmp_path, capsys):
    import cv2

    video = tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (320, 240))
    frame = cv2.cvtColor(face_photo([(80, 40)], shape=(240, 320)), cv2.COLOR_GRAY2BGR)
    for _ in range(40):
        writer.write(frame)
    writer.release()
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])  # the index at the end is gone, and half the frames
    out = tmp_path / "cut.csv"
    assert main(["video", str(video), "--csv", str(out), "--quiet", "--checkpoint", *map(str, predictor.sources)]) == 0
    rows = read_csv(out)
    assert 5 < len(rows) < 40
    assert "ended after" in capsys.readouterr().err


def test_a_rotated_phone_video_is_analysed_upright(predictor, tmp_path):
    import av
    import cv2

    upright = cv2.cvtColor(face_photo([(80, 40)], shape=(240, 320)), cv2.COLOR_GRAY2BGR)
    stored = cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE)  # the camera stored it sideways
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = stored.shape[1], stored.shape[0], "yuv420p"
        stream.set_display_rotation(-90)  # ... and says how to turn it for display
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(stored, format="bgr24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    frames = list(predictor.predict_video(path))
    assert (frames[0].width, frames[0].height) == (320, 240)
    assert all(len(f.faces) == 1 for f in frames)


def test_a_4k_video_gives_boxes_in_its_own_pixels(predictor, tmp_path):
    video = write_face_video(tmp_path / "4k.mp4", lambda i: [(1800, 900)], n_frames=3, shape=(2160, 3840), size=400)
    frames = list(predictor.predict_video(video))
    assert all(len(f.faces) == 1 for f in frames)
    face = frames[0].faces[0].box
    assert 1750 < face.x < 1950 and 850 < face.y < 1100 and face.w > 250


def test_the_apps_live_camera_tracks_one_face_across_frames(predictor):
    from fer_utils.deploy.app import live_frame

    frame = np.repeat(face_photo()[..., None], 3, axis=2)
    state = None
    for _ in range(3):
        drawn, state = live_frame(predictor, frame, state)  # Gradio hands the state back each frame
    assert drawn.shape == frame.shape and not np.array_equal(drawn, frame)  # the box is drawn
    assert state.tracker.active == [0]


def test_a_bad_file_or_absent_camera_is_one_line_on_the_real_stderr(tmp_path, untrained_checkpoint):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")  # FFmpeg itself would print "moov atom not found" here
    for source, named in ((str(text), str(text)), ("97", "camera 97")):
        done = subprocess.run(
            [sys.executable, "-m", "fer_utils.cli", "video", source, "--checkpoint", str(untrained_checkpoint)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 1 and done.stderr.startswith(f"fer: error: {named}: "), done.stderr
        assert done.stderr.count("\n") == 1, done.stderr


def test_a_larger_detect_size_finds_smaller_faces(predictor, tmp_path):
    import cv2

    from fer_utils.course import sample_face

    frame = np.full((720, 1280), 100, np.uint8)
    frame[300:370, 600:670] = sample_face(70)  # a face about 35 px wide in a 720p frame
    video = tmp_path / "small.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30, (1280, 720))
    for _ in range(3):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    assert predictor.predict_video(video).to_dataframe().empty  # the default searches at 640 px
    found = predictor.predict_video(video, detect_size=1280).to_dataframe()
    assert len(found) == 3 and (found.box_x.between(590, 640)).all()


def test_start_end_and_every_choose_the_frames(predictor, crossing_video):
    stretch = [f.time_s for f in predictor.predict_video(crossing_video, start=0.5, end=1.0, every=3)]
    assert stretch and min(stretch) >= 0.5 - 1e-6 and max(stretch) <= 1.0 + 1e-6
    frames = [f.frame for f in predictor.predict_video(crossing_video, start=0.5, end=1.0, every=3)]
    assert all(k % 3 == 0 for k in frames) and len(frames) == len(range(15, 31, 3))


def test_a_run_that_fails_midway_leaves_the_earlier_outputs_untouched(predictor, crossing_video, tmp_path):
    from fer_utils.predict.frames import FrameSelection
    from fer_utils.predict.video import analyze_videos

    csv_path, json_path = tmp_path / "faces.csv", tmp_path / "faces.json"
    csv_path.write_text("an earlier run's rows\n")
    json_path.write_text("{}\n")

    def fail(result):
        if result.frame == 5:
            raise RuntimeError("the model's runtime died")

    with pytest.raises(RuntimeError, match="runtime died"):
        analyze_videos(
            predictor.video_analyzer,
            [str(crossing_video)],
            FrameSelection(),
            csv_path=csv_path,
            json_path=json_path,
            on_frame=fail,
        )
    assert csv_path.read_text() == "an earlier run's rows\n" and json_path.read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces.csv", "faces.json"]  # no temporary files left


# --- following faces between searches -------------------------------------------------------


def _two_people_video(path: Path, frames: int = 90, enters: int = 40) -> Path:
    """640x360 at 30 fps: the sample portrait drifting and tilting on the left from the start, a
    mirrored, darker copy on the right from frame ``enters``."""
    import cv2

    from fer_utils.course import sample_face

    face = sample_face(120)
    other = cv2.convertScaleAbs(face[:, ::-1], alpha=0.8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 360))
    for i in range(frames):
        frame = np.full((360, 640), 100, np.uint8)
        turn = cv2.getRotationMatrix2D((60, 60), 10 * np.sin(i / 8), 1.0)
        turn[:, 2] += (60 + i, 110 + 10 * np.sin(i / 5))
        cv2.warpAffine(face, turn, (640, 360), frame, cv2.INTER_LINEAR, cv2.BORDER_TRANSPARENT)
        if i >= enters:
            frame[120:240, 440:560] = other
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def test_faces_followed_between_searches_keep_their_ids_and_labels(tmp_path):
    from fer_utils.predict.video import DETECT_INTERVAL, analyze_video

    shipped = Predictor.from_checkpoint(REPO_MODELS_DIR / SHIPPED_SINGLE_MODEL)
    video = _two_people_video(tmp_path / "two.mp4")
    runs = {}
    for interval in (0.0, DETECT_INTERVAL):
        analyzer = shipped.video_analyzer(smooth=0, detect_interval=interval)
        runs[interval] = ([f for f in analyze_video(analyzer, video)], analyzer.searches)
    every, searched = runs[0.0]
    followed, searches = runs[DETECT_INTERVAL]
    assert searched == 90 and searches <= 90 / 3, "between searches, faces are followed"
    rows = {(f.frame, face.track): face for f in followed for face in f.faces}
    assert len({track for _, track in rows}) == 2, "each person one track"
    right = [frame for frame, track in rows if rows[frame, track].box.x > 320]
    assert min(right) <= 40 + round(30 * DETECT_INTERVAL), "a face that enters is found at the next search"
    base = {(f.frame, face.track): face for f in every for face in f.faces}
    assert len(rows) >= len(base) - round(30 * DETECT_INTERVAL), "no face lost but the late start"
    shared = [key for key in base if key in rows]
    agree = np.mean([rows[k].raw_label == base[k].raw_label for k in shared])
    overlap = np.median([iou_matrix([rows[k].box], [base[k].box])[0, 0] for k in shared])
    assert agree >= 0.9 and overlap >= 0.75, (agree, overlap)


def test_a_detector_that_cannot_follow_searches_every_frame(tmp_path):
    from fer_utils.predict.video import analyze_video

    class SearchOnly:  # a detector of the caller's own, with no follow()
        name = "search-only"

        def __init__(self) -> None:
            self.yunet = YuNetDetector(max_side=640)

        def detect(self, gray):
            return self.yunet.detect(gray)

    shipped = Predictor.from_checkpoint(REPO_MODELS_DIR / SHIPPED_SINGLE_MODEL, detector=SearchOnly())
    analyzer = shipped.video_analyzer()
    frames = list(analyze_video(analyzer, _two_people_video(tmp_path / "two.mp4", frames=12)))
    assert analyzer.searches == len(frames) == 12


def test_a_bad_detect_interval_is_one_line(crossing_video, capsys, untrained_checkpoint):
    code = main(["video", str(crossing_video), "--detect-interval", "-1", "--checkpoint", str(untrained_checkpoint)])
    assert code != 0 and "--detect-interval must be a number of seconds >= 0, got -1" in capsys.readouterr().err
