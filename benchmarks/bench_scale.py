"""Collections and the cost per video-hour: the local engine against Ray with 1 and 2 workers,
following faces between searches against searching every frame, on videos and photos this
script writes (prints figures; asserts nothing).

    python benchmarks/bench_scale.py [--before REV] [--data FER2013_DIR] [--checkpoint FILE ...]
                                     [--videos 4] [--seconds 30] [--photos 256]

Videos: 1280x720, two people side by side, every frame analysed. Each person is a sequence of
face photos that changes every 1.5 s (expressions change) and moves as a head does on camera
(drifting, nodding, tilting up to 15 degrees, coming closer): with ``--data`` (or
``$FER_DATA_DIR``), FER2013 PublicTest faces the detector finds, one per class, so each frame's
true label is known; without it, the course's sample portrait and variants of it.

Quality (in this process, one 20 s video): following faces between searches
(``--detect-interval``, default) against searching every frame (``--detect-interval 0``): the
whole-frame searches made, faces found, how often the raw and the smoothed labels agree frame by
frame, accuracy against the true labels (with ``--data``), and track stability (the share of
each person's frames under their most frequent track id; the worse person is printed).

Speed: each case runs as ``fer video DIR --parquet OUT`` in a fresh process, the ONNX export
already cached: ``--before REV`` (that revision's ``fer``, from a git worktree), this checkout
searching every frame, this checkout (default), and ``--engine ray --workers 1`` and ``2``.
Printed per case: wall time, analysed frames per second, frames per core-second (CPU time of the
command and its workers, from /proc), core-seconds per minute of video, the peak RSS of one Ray
worker. Photos: 640x480 with one face, ``fer predict DIR --parquet OUT``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from bench_startup import checked_out, fer_at
from bench_video import FPS, write_people_video

TICKS = os.sysconf("SC_CLK_TCK")
HOLD = 1.5  # seconds each face photo of a person is shown


def descendants_cpu_and_rss(root: int) -> tuple[float, dict[int, float]]:
    """CPU seconds of ``root``'s live process tree (and of ``ray::`` workers anywhere: Ray starts
    them from its own daemon) and each Ray worker's RSS in MB."""
    cpu, worker_rss = 0.0, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid, utime, stime = int(stat[1]), int(stat[11]), int(stat[12])
        if int(entry.name) == root or ppid == root or "ray::" in cmdline:
            cpu += (utime + stime) / TICKS
        if "ray::_Worker" in cmdline:
            rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")), 0)
            worker_rss[int(entry.name)] = rss / 1024
    return cpu, worker_rss


def timed(command: list[str]) -> dict[str, float]:
    """Run ``command``; its wall time, the CPU seconds of it and its workers (sampled), the peak RSS of a worker."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cpu = [0.0]
    seen: dict[int, float] = {}

    def sample() -> None:
        while process.poll() is None:
            now, rss = descendants_cpu_and_rss(process.pid)
            cpu[0] = max(cpu[0], now)
            for pid, mb in rss.items():
                seen[pid] = max(seen.get(pid, 0.0), mb)
            time.sleep(0.25)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    _, err = process.communicate()
    watcher.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err[-2000:]}")
    return {
        "wall": time.perf_counter() - started,
        "cpu": cpu[0],
        "worker_peak_mb": max(seen.values(), default=float("nan")),
    }


def people(data: str | None, count: int = 2) -> tuple[list[list[np.ndarray]], list[list[str]] | None]:
    """Face photos for ``count`` people and their true labels: FER2013 PublicTest faces that YuNet
    finds when enlarged as in the video (one per class per person, in a shuffled order), or,
    without data, the sample portrait, mirrored and at other exposures (labels unknown)."""
    import cv2

    from fer_utils.course import sample_face
    from fer_utils.faces.detection import YuNetDetector

    rng = np.random.default_rng(0)
    if not data:
        face = sample_face(160)
        variants = [face, face[:, ::-1], cv2.convertScaleAbs(face, alpha=1.2), cv2.convertScaleAbs(face, alpha=0.8)]
        return [variants[k:] + variants[:k] for k in range(count)], None
    from fer_utils.data import load_dataset

    faces = load_dataset(data, progress=False).splits["val"]
    detector = YuNetDetector(max_side=640)
    canvas = np.full((480, 640), 100, np.uint8)
    chosen: list[list[tuple[np.ndarray, str]]] = [[] for _ in range(count)]
    for label in range(len(faces.classes)):
        found = []
        for i in rng.permutation(np.flatnonzero(faces.labels == label)):
            canvas[105:375, 185:455] = cv2.resize(faces.images[i], (270, 270), interpolation=cv2.INTER_CUBIC)
            if detector.detect(canvas):
                found.append(faces.images[i])
            if len(found) == count:
                break
        for k, face in enumerate(found):
            chosen[k].append((face, faces.classes[label]))
    for sequence in chosen:
        rng.shuffle(sequence)
    return [[f for f, _ in s] for s in chosen], [[c for _, c in s] for s in chosen]


def quality(video: Path, truth: list[list[str]] | None, checkpoint: list[str] | None) -> None:
    """Following against searching every frame on ``video``: searches, agreement, accuracy, stability."""
    from fer_utils.predict.predictor import Predictor
    from fer_utils.predict.video import DETECT_INTERVAL, analyze_video

    predictor = Predictor.from_checkpoint(checkpoint, threads=1)
    runs = {}
    for interval in (0.0, DETECT_INTERVAL):
        analyzer = predictor.video_analyzer(detect_interval=interval)
        runs[interval] = (list(analyze_video(analyzer, video)), analyzer.searches)
    width = runs[0.0][0][0].width

    def by_person(frames):  # {(frame, person): face}
        return {(f.frame, int((face.box.x + face.box.w / 2) * len(truth or [0, 0]) // width)): face
                for f in frames for face in f.faces}  # fmt: skip

    every = by_person(runs[0.0][0])
    for interval, (frames, searches) in runs.items():
        faces = by_person(frames)
        shared = [key for key in faces if key in every]
        raw = np.mean([faces[k].raw_label == every[k].raw_label for k in shared])
        smooth = np.mean([faces[k].label == every[k].label for k in shared])
        ids = [Counter(face.track for (_, p), face in faces.items() if p == person) for person in (0, 1)]
        stable = min(c.most_common(1)[0][1] / sum(c.values()) if c else 0.0 for c in ids)
        line = (
            f"detect interval {interval:g} s: {searches} whole-frame searches in {len(frames)} frames, "
            f"{len(faces)} faces; labels as searching every frame: raw {raw:.1%}, smoothed {smooth:.1%}; "
            f"track stability (worse person) {stable:.1%}"
        )
        if truth is not None:
            true = {key: truth[key[1]][int(key[0] / FPS / HOLD) % len(truth[key[1]])] for key in faces}
            line += (
                f"; accuracy raw {np.mean([faces[k].raw_label == true[k] for k in faces]):.1%}, "
                f"smoothed {np.mean([faces[k].label == true[k] for k in faces]):.1%}"
            )
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default=None, metavar="REV", help="also time this git revision's fer video")
    parser.add_argument("--data", default=os.environ.get("FER_DATA_DIR"), help="FER2013 (faces with known labels)")
    parser.add_argument("--checkpoint", nargs="+", default=None)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--photos", type=int, default=256)
    args = parser.parse_args()
    fer = [sys.executable, "-m", "fer_utils.cli"]
    model = ["--checkpoint", *args.checkpoint] if args.checkpoint else []
    faces, truth = people(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        videos = root / "videos"
        videos.mkdir()
        for i in range(args.videos):
            write_people_video(videos / f"v{i}.mp4", [f[i % len(f) :] + f[: i % len(f)] for f in faces], args.seconds)
        subprocess.run([*fer, "predict", str(root), "--quiet", *model], capture_output=True, check=False)  # warm cache
        print(
            f"{os.cpu_count()} cores; faces: {'FER2013 PublicTest, labels known' if truth else 'the sample portrait'}"
        )
        quality(write_people_video(root / "quality.mp4", faces, 20.0), truth, args.checkpoint)
        frames = round(args.seconds * FPS) * args.videos
        minutes = args.videos * args.seconds / 60
        print(f"{args.videos} videos of {args.seconds:g} s at 1280x720, two people: {frames} frames")
        cases = [("this checkout, searching every frame", fer, ["--detect-interval", "0"]), ("this checkout", fer, []),
                 ("ray, 1 worker", fer, ["--engine", "ray", "--workers", "1"]),
                 ("ray, 2 workers", fer, ["--engine", "ray", "--workers", "2"])]  # fmt: skip
        with checked_out(args.before) if args.before else tempfile.TemporaryDirectory() as before:
            if args.before:
                cases.insert(0, (f"before ({args.before[:8]})", fer_at(Path(before)), []))
            baseline = None
            for i, (name, command, extra) in enumerate(cases):
                got = timed(
                    [*command, "video", str(videos), "--quiet", "--parquet", str(root / f"out{i}"), *model, *extra]
                )
                per_core = frames / max(got["cpu"], 1e-9)
                baseline = baseline or per_core
                rss = f", worker peak RSS {got['worker_peak_mb']:.0f} MB" if "ray" in name else ""
                print(
                    f"video, {name}: {got['wall']:.1f} s wall, {frames / got['wall']:.1f} frames/s, {per_core:.1f} "
                    f"frames per core-second ({per_core / baseline:.2f}x the first), {got['cpu'] / minutes:.0f} "
                    f"core-seconds per minute of video{rss}"
                )
        photos = root / "photos"
        photos.mkdir()
        from PIL import Image

        from fer_utils.course import sample_face

        face = sample_face(160)
        for i in range(args.photos):
            canvas = np.full((480, 640), 80 + i % 100, np.uint8)
            canvas[150:310, 240:400] = face
            Image.fromarray(canvas).save(photos / f"p{i:04d}.jpg")
        for name, extra in [("local", []), ("ray, 1 worker", ["--engine", "ray", "--workers", "1"]),
                            ("ray, 2 workers", ["--engine", "ray", "--workers", "2"])]:  # fmt: skip
            out = root / f"photos-out-{name[-8:].replace(' ', '-')}"
            got = timed([*fer, "predict", str(photos), "--quiet", "--parquet", str(out), *model, *extra])
            print(f"photos {name}: {args.photos / got['wall']:.1f} photos/s ({got['wall']:.1f} s wall)")


if __name__ == "__main__":
    main()
