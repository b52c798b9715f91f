"""Video analysis speed and memory against the targets of ``fer video`` (prints figures; asserts nothing).

    python benchmarks/bench_video.py [--checkpoint FILE ...] [--seconds 20] [--long-minutes 10]

Every frame is analysed (detection, alignment, classification, tracking, smoothing) as ``fer
video`` does it (classifier on ``CLASSIFIER_THREADS`` threads), in a fresh process per case, on
videos this script writes: a real face (the course's sample portrait) pasted, drifting, into
H.264 frames (PyAV, if installed; else OpenCV's MPEG-4):

- 640x360 at 30 fps with one face (target >= 30 analysed frames per second);
- 1280x720 with two faces (target >= 25) and with four faces (target >= 10);
- the same two-face 720p video through the photo path, frame by frame (``predict_image``);
- memory: RSS after 1 minute and after ``--long-minutes`` of a 640x360 video, one face (target:
  under 600 MB and flat). ``--long-fps F`` analyses F frames per second of that long video
  (every frame is still decoded) to keep the run short; 0 analyses every frame.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fer_utils.predict.video import CLASSIFIER_THREADS

FPS = 30


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def face_patch(side: int) -> np.ndarray:
    """The sample portrait's face at ``side`` px, in BGR."""
    import cv2

    from fer_utils.course import sample_face

    return cv2.cvtColor(sample_face(side), cv2.COLOR_GRAY2BGR)


def write_video(path: Path, size: tuple[int, int], faces: int, seconds: float) -> Path:
    """``faces`` copies of the portrait's face drifting slowly in a ``size`` frame for ``seconds``."""
    width, height = size
    cols = 1 if faces == 1 else 2
    rows = -(-faces // cols)
    side = int(min(width / cols, height / rows) * 0.55)
    patch = face_patch(side)
    frames = round(seconds * FPS)
    try:
        import av
    except ImportError:
        av = None
    if av is not None:
        container = av.open(str(path), "w")
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    else:
        import cv2

        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, size)
    background = np.full((height, width, 3), 90, np.uint8)
    for i in range(frames):
        frame = background.copy()
        for k in range(faces):
            cell_x, cell_y = (k % cols) * width // cols, (k // cols) * height // rows
            drift = int(0.15 * side * np.sin(2 * np.pi * (i / (4 * FPS) + k / 4)))
            x = cell_x + (width // cols - side) // 2 + drift
            y = cell_y + (height // rows - side) // 2
            frame[y : y + side, x : x + side] = patch if k % 2 == 0 else patch[:, ::-1]
        if av is not None:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        else:
            writer.write(frame)
    if av is not None:
        for packet in stream.encode():
            container.mux(packet)
        container.close()
    else:
        writer.release()
    return path


def _video_writer(path: Path, size: tuple[int, int]) -> Callable[[np.ndarray | None], None]:
    """A function that appends one BGR frame to an H.264 (PyAV) or MPEG-4 (OpenCV) file, and
    finishes the file when called with None."""
    try:
        import av
    except ImportError:
        import cv2

        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, size)
        return lambda frame: writer.release() if frame is None else writer.write(frame)
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"

    def write(frame: np.ndarray | None) -> None:
        for packet in stream.encode(None if frame is None else av.VideoFrame.from_ndarray(frame, format="bgr24")):
            container.mux(packet)
        if frame is None:
            container.close()

    return write


def write_people_video(path: Path, faces: list[list[np.ndarray]], seconds: float, hold: float = 1.5) -> Path:
    """A 1280x720 video of ``len(faces)`` people side by side, each shown as a sequence of face
    photos (grayscale, any size; the next one every ``hold`` seconds: expressions change) that
    moves as a head does on camera: drifting, nodding, tilting up to 15 degrees, coming closer.
    Harder than :func:`write_video`'s one rigid face: what following faces between searches must
    keep up with."""
    import cv2

    width, height = 1280, 720
    cols = len(faces)
    side = int(min(width / cols, height) * 0.42)
    ramp = np.linspace(60, 140, width, dtype=np.float32)[None, :].repeat(height, 0)
    background = cv2.cvtColor(ramp.astype(np.uint8), cv2.COLOR_GRAY2BGR)
    write = _video_writer(path, (width, height))
    for i in range(round(seconds * FPS)):
        t, frame = i / FPS, background.copy()
        for k, sequence in enumerate(faces):
            face = sequence[int(t / hold) % len(sequence)]
            patch = cv2.cvtColor(cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2BGR)
            centre = (
                (k + 0.5) * width / cols + 0.2 * side * np.sin(2 * np.pi * t / 4 + k),
                height / 2 + 0.08 * side * np.sin(2 * np.pi * t / 1.3 + k),
            )
            matrix = cv2.getRotationMatrix2D(
                (side / 2, side / 2), 15 * np.sin(2 * np.pi * t / 3 + 2 * k), 1 + 0.15 * np.sin(2 * np.pi * t / 7)
            )
            matrix[:, 2] += (centre[0] - side / 2, centre[1] - side / 2)
            cv2.warpAffine(patch, matrix, (width, height), frame, cv2.INTER_LINEAR, cv2.BORDER_TRANSPARENT)
        write(frame)
    write(None)
    return path


def worker(case: dict) -> dict:
    """Run one case in this (fresh) process; returns its figures."""
    import cv2

    from fer_utils.predict.frames import FrameSelection
    from fer_utils.predict.predictor import Predictor
    from fer_utils.predict.video import analyze_video

    predictor = Predictor.from_checkpoint(case["checkpoint"] or None, threads=case["threads"])
    analyzer = predictor.video_analyzer().warm_up()
    marks: dict[str, float] = {}
    faces = frames = 0
    started = time.perf_counter()
    if case["path_kind"] == "photo":
        capture = cv2.VideoCapture(case["video"])
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            faces += len(predictor.predict_image(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), detect=True).faces)
            frames += 1
    else:
        selection = FrameSelection(fps=case["fps"]) if case["fps"] else FrameSelection()
        for result in analyze_video(analyzer, case["video"], selection):
            frames += 1
            faces += len(result.faces)
            for minute in case["marks"]:
                if result.time_s >= 60 * minute and f"{minute:g} min" not in marks:
                    marks[f"{minute:g} min"] = rss_mb()
    seconds = time.perf_counter() - started
    for minute in case["marks"]:  # the last frame of an N-minute video is stamped just under N minutes
        marks.setdefault(f"{minute:g} min", rss_mb())
    peak = int(next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM")).split()[1])
    return {"frames": frames, "faces": faces, "fps": frames / seconds, "rss_marks": marks, "peak_mb": peak / 1024}


def run_case(case: dict) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(case)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"case {case['name']} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the model shipped for photos")
    parser.add_argument("--seconds", type=float, default=20, help="length of the speed videos")
    parser.add_argument("--long-minutes", type=float, default=10)
    parser.add_argument("--long-fps", type=float, default=5, help="frames analysed per second of the long video")
    parser.add_argument(
        "--threads",
        type=int,
        default=CLASSIFIER_THREADS,
        help="classifier threads (default: as fer video; 0: all cores)",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    base = {"checkpoint": args.checkpoint, "threads": args.threads, "fps": None, "marks": [], "path_kind": "video"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        videos = {
            "640x360, 1 face": write_video(folder / "a.mp4", (640, 360), 1, args.seconds),
            "1280x720, 2 faces": write_video(folder / "b.mp4", (1280, 720), 2, args.seconds),
            "1280x720, 4 faces": write_video(folder / "c.mp4", (1280, 720), 4, args.seconds),
        }
        targets = {"640x360, 1 face": 30, "1280x720, 2 faces": 25, "1280x720, 4 faces": 10}
        print(f"{args.seconds:.0f} s videos at {FPS} fps; every frame analysed; one process per case")
        print(f"{'case':<44} {'frames/s':>9} {'target':>7} {'faces/frame':>12} {'peak RSS':>9}")
        for name, video in videos.items():
            figures = run_case({**base, "name": name, "video": str(video)})
            per = figures["faces"] / max(figures["frames"], 1)
            print(f"{name:<44} {figures['fps']:>9.1f} {targets[name]:>7} {per:>12.2f} {figures['peak_mb']:>7.0f} MB")
        photo = run_case({**base, "name": "photo", "video": str(videos["1280x720, 2 faces"]), "path_kind": "photo"})
        per = photo["faces"] / max(photo["frames"], 1)
        print(
            f"{'1280x720, 2 faces, photo path frame by frame':<44} {photo['fps']:>9.1f} {'':>7} {per:>12.2f} "
            f"{photo['peak_mb']:>7.0f} MB"
        )
        if args.long_minutes > 0:
            long_video = write_video(folder / "long.mp4", (640, 360), 1, 60 * args.long_minutes)
            marks = sorted({1.0, float(args.long_minutes)})
            figures = run_case(
                {**base, "name": "long", "video": str(long_video), "fps": args.long_fps or None, "marks": marks}
            )
            every = f"{args.long_fps:g} analysed frames per second" if args.long_fps else "every frame"
            rss = ", ".join(f"after {k}: {v:.0f} MB" for k, v in figures["rss_marks"].items())
            print(
                f"memory, {args.long_minutes:g} min of 640x360 video ({every}): RSS {rss}; peak {figures['peak_mb']:.0f} MB"
            )


if __name__ == "__main__":
    main()
